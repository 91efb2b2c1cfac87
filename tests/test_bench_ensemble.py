"""`sharp bench --ensemble` (issue 13, item 3; SPEC §10): each model's learners as one
ensemble job give the table of separate learners, say which mode ran, and resume after a
kill as learner jobs do."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import sigkill_when

from sharp.cli import main
from sharp.runs.bench import resolve_ensemble
from sharp.runs.benchmark import _gpus, segment_jobs
from sharp.runs.jobs import group_jobs
from sharp.runs.registry import LearnerSpec

ROOT = Path(__file__).resolve().parents[1]
#: A tiny bench of every model, two learners each: SHARP sleeps at steps 300 and 600.
BENCH = ["bench", "--no-notebook", "--quiet", "--corpus", "wiki", "--segment", "700",
         "--slice", "100", "--learners", "2", "--sleep-every", "300", "--set",
         "sleep_steps=40", "--set", "hidden=32", "--workers", "1"]
#: Bits may differ by float rounding only: a SHARP ensemble computes its members with the
#: torch engine, the separate learners run the fused one (same steps, another summation
#: order; measured within 4e-6 bits here, within ~2e-4 over hundreds of steps elsewhere),
#: and batched baselines reduce in another order (~2e-7).
TOLERANCE = 1e-4
#: Wall-clock columns, and the bits compared within TOLERANCE; every other column is equal.
TIMING = ["train_seconds", "tokens_per_s", "eval_seconds"]
BITS = ["bits", "bits_clipped", "bits_per_char", "bits_per_char_clipped"]


@pytest.fixture(scope="module")
def separate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("separate")
    assert main([*BENCH, "--ensemble", "off", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def grouped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("grouped")
    assert main([*BENCH, "--ensemble", "on", "--out", str(out)]) == 0
    return out


def same_tables(a: Path, b: Path, tolerance: float) -> None:
    """results.csv and curves.csv agree: bits within ``tolerance``, the rest exactly."""
    for name, bits in (("results.csv", BITS), ("curves.csv", ["bits"])):
        left = pd.read_csv(a / name).drop(columns=TIMING, errors="ignore")
        right = pd.read_csv(b / name).drop(columns=TIMING, errors="ignore")
        pd.testing.assert_frame_equal(left.drop(columns=bits), right.drop(columns=bits),
                                      check_exact=True)
        pd.testing.assert_frame_equal(left[bits], right[bits], check_exact=False,
                                      atol=tolerance, rtol=0)


def test_the_bench_table_with_ensembles_equals_the_separate_one(separate: Path,
                                                                 grouped: Path) -> None:
    # same labels, seeds, gate decisions (memory update rates), sleeps and accuracies
    same_tables(separate, grouped, TOLERANCE)
    results = pd.read_csv(grouped / "results.csv")
    assert set(results["sleeps"][results["learner"] == "SHARP"]) == {2}
    assert results.groupby("learner")["seed"].unique().map(list).eq([[0, 1]] * 6).all()


def test_the_report_says_which_mode_ran(separate: Path, grouped: Path) -> None:
    for out, ran in ((separate, "off"), (grouped, "on")):
        run = json.loads((out / "run.json").read_text())
        assert (run["ensemble"], run["ensemble_option"]) == (ran, ran)
    assert "learners ran as one ensemble job per model" in (grouped / "summary.md").read_text()
    assert "learners ran as separate jobs" in (separate / "summary.md").read_text()
    # the grouped run's checkpoints are its own: one job folder per model, not per learner
    assert len(list((grouped / "jobs").iterdir())) == 6
    assert all("-ensemble-0-1-" in path.name for path in (grouped / "jobs").iterdir())
    assert len(list((separate / "jobs").iterdir())) == 12


def test_auto_groups_on_an_accelerator_only() -> None:
    for device, grouped in (("cpu", False), ("cuda", True), ("mps", True)):
        specs = [LearnerSpec("sharp", {"device": device})]  # no machine check: a recipe
        assert resolve_ensemble("auto", specs, "segment", 4) is grouped
        assert resolve_ensemble("auto", specs, "books", 4) is False
        assert resolve_ensemble("auto", specs, "segment", 1) is False
        assert resolve_ensemble("on", specs, "segment", 4) is True
        with pytest.raises(ValueError, match="with --learners 1 there is nothing to group"):
            resolve_ensemble("on", specs, "segment", 1)  # it would run (and report) alone
        assert resolve_ensemble("off", specs, "segment", 4) is False
    with pytest.raises(ValueError, match="ensemble must be one of"):
        resolve_ensemble("yes", specs, "segment", 4)


def _manifest(out: Path) -> dict:
    manifests = list((out / "jobs").glob("SHARP-*/manifest.json"))
    return json.loads(manifests[0].read_text()) if manifests else {}


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_an_ensemble_job_killed_mid_stream_resumes_to_the_same_results(
    tmp_path: Path,
) -> None:
    bench = [*BENCH, "--baselines", "--ensemble", "on", "--checkpoint-tokens", "100"]
    reference = tmp_path / "reference"
    assert main([*bench, "--out", str(reference)]) == 0
    out = tmp_path / "run"
    command = [sys.executable, "-m", "sharp", *bench, "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
    sigkill_when(process, lambda: any(c["step"] >= 200
                                      for c in _manifest(out).get("checkpoints", [])))
    killed_at = max(c["step"] for c in _manifest(out)["checkpoints"])
    assert 0 < killed_at < 600 and not (out / "summary.md").exists()
    assert main([*bench, "--out", str(out)]) == 0  # the same command again
    same_tables(reference, out, 0.0)
    assert [a["resumed_from"] for a in _manifest(out)["attempts"]] == [0, killed_at]


def test_an_ensemble_on_cuda_asks_ray_for_a_share_of_the_gpu() -> None:
    # Ray hides the GPUs from a task that requests none; ensembles on CUDA share one
    for device, wanted in (("cpu", 0.0), ("cuda", 0.5)):
        spec = LearnerSpec("rnn", {"device": device, "window": 3})
        jobs = segment_jobs([spec], np.zeros(2_000, dtype=np.int64), segment=500,
                            slice_len=100, learners=2)
        assert [_gpus(job, 0.5) for job in group_jobs(jobs)] == [wanted]
