"""The experiments' repetitions as ensembles (issue 13, item 3; SPEC §10): with
``--ensemble on`` each condition's repetitions in the text (8, 9) and community-task (2-4)
experiments run as one ensemble job and give the frame of separate jobs; ``auto`` groups
only where ``sharp bench --ensemble auto`` does (not on the CPU); the wake-only condition
always runs separately; the record says which mode ran."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from test_bench_ensemble import TOLERANCE

from sharp.cli import main
from sharp.experiments.common import REGISTRY, group_repetitions, planned_jobs
from sharp.experiments.report import run_experiment
from sharp.experiments.sleep_ablation import SLEEP, WAKE_ALL
from sharp.experiments.text_stream import TINY
from sharp.runs.bench import auto_groups

#: The sleep ablation's tiny preset with two repetitions: the sleeping condition (grouped
#: under ``on``) and the wake-only one (never grouped), 296 steps sleeping at step 150.
ABLATION = {"reps": 2, "progress": False}


def _jobs(name: str, **overrides: object) -> list[tuple[str, int]]:
    """(function name, members) of each job experiment ``name``'s tiny preset plans."""
    experiment = REGISTRY[name]
    return [(job.function.__name__, job.members) for job in
            planned_jobs(experiment.run, experiment.parameters("tiny", **overrides))]


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    """The sleep ablation's tiny frame with the repetitions grouped and separate."""
    return {mode: REGISTRY["sleep_ablation"]("tiny", **ABLATION, ensemble=mode)
            for mode in ("on", "off")}


def test_grouped_repetitions_give_the_frame_of_separate_jobs(
    frames: dict[str, pd.DataFrame]
) -> None:
    grouped, separate = frames["on"], frames["off"]
    # same rows in the same order: labels, seeds, checkpoints, gate decisions, sleeps
    pd.testing.assert_frame_equal(grouped.drop(columns="bits"), separate.drop(columns="bits"),
                                  check_exact=True)
    pd.testing.assert_frame_equal(grouped[["bits"]], separate[["bits"]], check_exact=False,
                                  atol=TOLERANCE, rtol=0)
    assert list(grouped["rep"].drop_duplicates()) == [0, 1]
    assert set(grouped["sleeps"][grouped["condition"] == SLEEP]) == {0, 1}


@pytest.mark.parametrize(("name", "overrides"), [
    ("credit_assignment", {}),  # memory-only SHARP (1 layer) and the RNN in paper mode
    ("acceleration", {"reps": 2}),  # sleeping, non-sleeping, reservoir SHARP; the RNN
])
def test_grouped_community_repetitions_give_the_frame_of_separate_jobs(
    name: str, overrides: dict[str, object]
) -> None:
    experiment = REGISTRY[name]
    grouped, separate = (experiment("tiny", **overrides, progress=False, ensemble=mode)
                         for mode in ("on", "off"))
    pd.testing.assert_frame_equal(grouped.drop(columns="bits"), separate.drop(columns="bits"),
                                  check_exact=True)
    pd.testing.assert_frame_equal(grouped[["bits"]], separate[["bits"]], check_exact=False,
                                  atol=TOLERANCE, rtol=0)
    assert {function for function, _ in _jobs(name, **overrides, ensemble="on")} == {
        "stream_ensemble_job"}


def test_on_groups_plain_sharp_and_leaves_the_wake_only_learner_separate() -> None:
    assert _jobs("sleep_ablation", reps=2, ensemble="on") == [
        ("text_ensemble_job", 2), ("text_curve_job", 1), ("text_curve_job", 1)]
    assert _jobs("sleep_ablation", reps=2, conditions=(WAKE_ALL,), ensemble="on") == [
        ("text_curve_job", 1)] * 2
    assert _jobs("threshold_sweep", reps=3, ensemble="on") == [("text_ensemble_job", 3)] * 2


def test_auto_groups_where_the_bench_does_and_never_on_the_cpu() -> None:
    for device, grouped in (("cpu", False), ("cuda", True), ("mps", True)):
        assert group_repetitions("auto", device, 4) is grouped  # the bench's rule
        assert group_repetitions("auto", device, 1) is False
        assert group_repetitions("off", device, 4) is False
        assert group_repetitions("on", device, 4) is True
    cpu = TINY.replace(device="cpu")
    # device "auto": grouped exactly where sharp bench --ensemble auto groups (CUDA or MPS)
    grouped = auto_groups(TINY.device)  # False on a machine without CUDA or MPS
    assert _jobs("threshold_sweep", reps=2) == (
        [("text_ensemble_job", 2)] * 2 if grouped else [("text_curve_job", 1)] * 4)
    assert _jobs("threshold_sweep", reps=2, config=cpu) == [("text_curve_job", 1)] * 4
    with pytest.raises(ValueError, match="ensemble must be one of"):
        group_repetitions("yes", "cpu", 2)


def test_on_with_one_repetition_is_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    argv = ["experiment", "threshold_sweep", "--preset", "tiny", "--out", str(out)]
    assert main([*argv, "--ensemble", "on"]) == 2  # the tiny preset has one repetition
    assert "with reps=1 there is nothing to group" in capsys.readouterr().err
    assert not out.exists()
    assert main(["experiment", "drift", "--preset", "tiny", "--ensemble", "on",
                 "--out", str(out)]) == 2
    assert ("drift does not group its repetitions into ensembles (only experiments 2, 3, 4, "
            "8, 9 do)") in capsys.readouterr().err
    with pytest.raises(ValueError, match="nothing to group"):  # the API refuses it too
        REGISTRY["sleep_ablation"]("tiny", ensemble="on")


def test_the_record_says_which_mode_ran(tmp_path: Path) -> None:
    for mode, expected in (("on", {"ensemble": "on", "ensemble_jobs": 1, "separate_jobs": 2}),
                           ("off", {"ensemble": "off", "ensemble_jobs": 0,
                                    "separate_jobs": 4})):
        out = tmp_path / mode
        run = run_experiment("sleep_ablation", "tiny", out, workers=1, ensemble=mode,
                             **ABLATION)
        record = json.loads((out / "sleep_ablation.json").read_text())
        assert {key: record[key] for key in expected} == expected == {
            key: run.ensemble[key] for key in expected}
        assert record["ensemble_option"] == mode
        summary = (out / "sleep_ablation.md").read_text()
        assert ("- repetitions: 1 ensemble job (each runs all the repetitions of one "
                "condition) and 2 separate jobs (--ensemble on)" in summary
                if mode == "on" else
                "- repetitions: 4 separate jobs, one per repetition and condition "
                "(--ensemble off)" in summary)
    # the mode is how a run ran, not what it computed: either resumes the other's folder
    on = json.loads((tmp_path / "on" / "sleep_ablation.json").read_text())
    off = json.loads((tmp_path / "off" / "sleep_ablation.json").read_text())
    assert on["identity"] == off["identity"]
