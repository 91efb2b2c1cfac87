"""The experiments of SPEC §8 (2–10) at tiny size: columns, figures, estimators, CLI."""

from __future__ import annotations

import argparse
import inspect
import json
import time

import numpy as np
import pandas as pd
import pytest
import torch

import sharp.experiments.common as common
from sharp.config import SharpConfig, preset
from sharp.data.community import CommunityTask
from sharp.experiments import REGISTRY, mmd2_unbiased, probe_error, rep_seeds
from sharp.experiments.cli import add_experiment_parser, run_experiment_command
from sharp.experiments.common import (
    CommunityStream,
    Condition,
    Job,
    Size,
    community_runs,
    late_error,
    memory_states,
    periodic_argument,
    planned_jobs,
    sharp_spec,
    train_memory,
    window_error,
)
from sharp.experiments.credit_assignment import COLUMNS as CREDIT_COLUMNS
from sharp.experiments.estimate import job_seconds, makespan, shape_key
from sharp.experiments.memory_capacity import make_sequence
from sharp.experiments.report import plural, run_experiment, write_index
from sharp.experiments.sleep_ablation import WakeAllMemories
from sharp.model.memory import Memory

EXPECTED = {
    "credit_assignment": CREDIT_COLUMNS,
    "head_capacity": ("head_layers", "error", "optimal_error"),
    "acceleration": ("accel", "sleep", "init", "context", "error"),
    "memory_capacity": ("train", "eval", "window", "lag", "error"),
    "drift": ("tau", "drift", "memory_update_rate"),
    "replay_quality": ("mmd2", "sigma", "error"),
    "sleep_ablation": ("slice", "bits", "accuracy"),
    "threshold_sweep": ("tau", "slice", "bits", "memory_update_rate"),
    "nonstationarity": ("corpus", "lag", "hellinger", "shuffled"),
}


@pytest.fixture(scope="module")
def tiny_frames():
    return {name: REGISTRY[name]("tiny", progress=False) for name in EXPECTED}


def test_registry_has_experiments_2_to_10():
    assert sorted(e.number for e in REGISTRY.values()) == list(range(2, 11))
    for experiment in REGISTRY.values():
        assert {"tiny", "quick", "paper"} <= set(experiment.presets)


@pytest.mark.parametrize("name", ["tiny", "quick", "paper"])
def test_presets_name_real_parameters(name):
    # The presets that are too slow for a test still have to fit their function, and give
    # the learners one whole configuration, not copies of its fields.
    for experiment in REGISTRY.values():
        parameters = experiment.parameters(name)
        inspect.signature(experiment.run).bind(**parameters)
        assert not set(parameters) & {"hidden", "embedding", "lr", "tau", "window"}
        assert isinstance(parameters.get("config", SharpConfig()), SharpConfig)


def test_config_overrides_change_the_presets_configuration():
    experiment = REGISTRY["drift"]
    tiny = experiment.parameters("tiny")["config"]
    changed = experiment.parameters("tiny", config={"lr": 0.5})["config"]
    assert changed == tiny.replace(lr=0.5) and changed.hidden == (8,)
    quick = REGISTRY["credit_assignment"].parameters("quick", config={"window": 5})["config"]
    assert quick.window == 5 and quick.tag_buffer == 10  # the function's default, changed
    whole = preset("simulation")
    assert experiment.parameters("tiny", config=whole)["config"] is whole
    with pytest.raises(TypeError, match="no SHARP configuration"):
        REGISTRY["nonstationarity"].parameters("tiny", config={"lr": 0.5})


@pytest.mark.parametrize("name", list(EXPECTED))
def test_tiny_run_columns_and_figure(tiny_frames, name):
    frame = tiny_frames[name]
    assert len(frame) > 0
    for column in (*EXPECTED[name], "seed", "rep"):
        assert column in frame.columns, column
    assert frame["seed"].notna().all()
    fig = REGISTRY[name].figure(frame)
    assert len(fig.data) > 0
    assert REGISTRY[name].summarise(frame)


def test_conditions_share_seeds(tiny_frames):
    frame = tiny_frames["credit_assignment"]
    seeds = frame.groupby("condition")["seed"].apply(lambda s: tuple(sorted(set(s))))
    assert seeds.nunique() == 1
    assert frame["seed"].nunique() == 2  # two repetitions, two independent seeds
    assert len(set(rep_seeds(0, 5))) == 5


def test_community_runs_give_every_condition_the_same_seed_and_data():
    config = preset("simulation", layers=1, hidden=4, embedding=2)

    def conditions(task, rep_seed):
        return [Condition(sharp_spec(config, task, rep_seed, "a")),
                Condition(sharp_spec(config, task, rep_seed, "b"), columns={"x": 1})]

    stream = CommunityStream(samples=120, every=40, seed=3)
    frame = community_runs(conditions, stream, depths=(2, 4), reps=2, workers=1,
                           progress=False)
    assert list(frame.columns[:6]) == ["condition", "depth", "context", "rep", "seed",
                                       "samples"]
    assert set(frame["context"]) == {7, 13} and np.allclose(frame["optimal_error"], 5 / 24)
    assert frame["x"].isna().sum() == len(frame) / 2
    assert frame.groupby("rep")["seed"].nunique().eq(1).all() and frame["seed"].nunique() == 2
    a, b = (frame[frame["condition"] == name] for name in "ab")
    np.testing.assert_array_equal(a["error"].to_numpy(), b["error"].to_numpy())
    assert CommunityStream(10, 5, seed=3, reuse_sequence=True).data_seed(99) == 3
    assert stream.data_seed(99) == 99


def test_late_error_averages_each_repetition_over_the_last_quarter():
    import pandas as pd

    frame = pd.DataFrame({"condition": ["a"] * 8, "rep": [0] * 4 + [1] * 4,
                          "samples": [100, 200, 300, 400] * 2,
                          "error": [0.9, 0.8, 0.5, 0.3, 0.9, 0.8, 0.4, 0.2]})
    assert late_error(frame, ["condition"]).to_dict() == {("a", 0): 0.3, ("a", 1): 0.2}
    assert late_error(frame, ["condition"], 0.5).round(6).to_dict() == {("a", 0): 0.4,
                                                                       ("a", 1): 0.3}


def test_window_error_is_the_best_error_from_the_last_w_tokens():
    depth2 = CommunityTask(depth=2, rule="hash")
    assert window_error(depth2, 7) == pytest.approx(5 / 24)  # the window holds both choices
    assert window_error(depth2, 4) == pytest.approx((5 / 6 + 1 / 4) / 4)  # likelier direction
    assert window_error(CommunityTask(depth=4, rule="sum"), 4) == pytest.approx(1 / 3)
    assert window_error(CommunityTask(depth=4, rule="hash"), 15) == pytest.approx(5 / 24)
    assert window_error(CommunityTask(depth=4, rule="hash"), 14) > 0.25


def test_acceleration_labels_both_no_sleep_conditions(tiny_frames):
    frame = tiny_frames["acceleration"]
    conditions = set(frame["condition"])
    assert {"a=1", "a=4", "a=4, no sleep", "a=4, no sleep, reservoir init (authors')"} <= conditions
    no_sleep = frame[~frame["sleep"] & (frame["accel"] == 4)]
    assert set(no_sleep["init"]) == {"default", "reservoir"}


def test_figures_have_optimal_line_and_panels(tiny_frames):
    fig = REGISTRY["credit_assignment"].figure(tiny_frames["credit_assignment"])
    optimal = [t for t in fig.data if t.name == "optimal"]
    assert optimal and np.allclose(optimal[0].y, 5 / 24)
    frame = tiny_frames["acceleration"].copy()
    extra = frame.assign(context=13)
    fig = REGISTRY["acceleration"].figure(__import__("pandas").concat([frame, extra]))
    titles = [a.text for a in fig.layout.annotations]
    assert titles == ["required context 7", "required context 13"]
    levels = [t for t in fig.data if t.name == "best from the last 4 tokens"]
    assert len(levels) == 2 and np.allclose(levels[0].y, (5 / 6 + 1 / 4) / 4)
    fig = REGISTRY["sleep_ablation"].figure(tiny_frames["sleep_ablation"])
    assert [a.text for a in fig.layout.annotations] == ["forward", "current", "backward"]
    fig = REGISTRY["threshold_sweep"].figure(tiny_frames["threshold_sweep"])
    assert [a.text for a in fig.layout.annotations] == [
        "memory update rate", "forward BPC", "current BPC", "backward BPC"]
    assert fig.layout.yaxis.type == "log"
    fig = REGISTRY["replay_quality"].figure(tiny_frames["replay_quality"])
    assert {"replay vs wake", "wake split-half", "noise vs wake", "optimal"} <= {
        t.name for t in fig.data}


def test_mmd2_unbiased_estimator():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5))
    y = rng.normal(size=(300, 5))
    same, _ = mmd2_unbiased(x, y)
    assert abs(same) < 0.01
    identical, _ = mmd2_unbiased(x, x.copy())
    assert abs(identical) < 0.02
    shifted, _ = mmd2_unbiased(x, y + 1.0)
    assert shifted > 0.1
    # unbiased: the mean over many small same-distribution pairs is ~0 (the biased one is > 0)
    values = [mmd2_unbiased(rng.normal(size=(10, 2)), rng.normal(size=(10, 2)), sigma=1.0)[0]
              for _ in range(300)]
    assert abs(np.mean(values)) < 0.01


def test_memory_capacity_probe_recalls_recent_tokens():
    torch.manual_seed(0)
    trained = Memory(7, 32, 16, 4, tokens=True)
    torch.manual_seed(0)
    untrained = Memory(7, 32, 16, 4, tokens=True)
    train_memory(trained, make_sequence("random", 1500, 1),
                 preset("simulation", layers=1, hidden=32, embedding=16, lr=3e-3, tau=0.0))
    probe = make_sequence("random", 1500, 2)
    states = memory_states(trained, probe)
    errors = {lag: probe_error(states, probe, lag) for lag in (1, 2, 6)}
    assert errors[1] < 0.1 and errors[2] < 0.1
    assert errors[6] > errors[2] + 0.2
    blank = memory_states(untrained, probe)
    assert probe_error(blank, probe, 3) > probe_error(states, probe, 3)


def test_train_memory_gates_with_the_config_ema_and_tau():
    # lr ~0: every window's recall loss stays near ln 7 = 1.95 nats; the EMA starts at 0
    config = preset("simulation", layers=1, hidden=8, embedding=4, lr=1e-9, tau=0.5)
    tokens = make_sequence("random", config.window + 2, 0)  # three windows

    def updates(**change: float) -> int:
        torch.manual_seed(0)
        return train_memory(Memory(7, 8, 4, config.window, tokens=True), tokens,
                            config.replace(**change))

    assert updates(ema=0.0) == 3  # the EMA is the loss itself: above tau at once
    assert updates() <= 1  # ema 0.9: 0.2, 0.37, 0.53 nats
    assert updates(tau=0.0) == 3 and updates(tau=10.0) == 0


def test_wake_all_memories_trains_upper_memories_online():
    learner = WakeAllMemories(preset("simulation", vocab_size=7, layers=2, hidden=8,
                                     embedding=4, tau=0.0))
    before = [p.clone() for p in learner.memories[1].parameters()]
    tokens = make_sequence("community", 60, 0)
    for i in range(50):
        learner.learn(tokens[i : i + 4], int(tokens[i + 4]))
    assert learner.upper_updates == 50 // 4
    assert any(not torch.equal(a, b) for a, b in zip(before, learner.memories[1].parameters(),
                                                      strict=True))


def test_wake_all_memories_takes_live_lr_and_tau():
    learner = WakeAllMemories(preset("simulation", vocab_size=7, layers=2, hidden=8,
                                     embedding=4, tau=0.0))
    learner.config = learner.config.replace(lr=0.5, tau=100.0)
    assert all(opt.lrs == [0.5] for opt in learner.upper_opts.values())
    tokens = make_sequence("community", 60, 0)
    for i in range(50):
        learner.learn(tokens[i : i + 4], int(tokens[i + 4]))
    assert learner.upper_updates == 0  # the upper gates follow the new tau


def test_cli_writes_csv_html_md(tmp_path):
    parser = argparse.ArgumentParser()
    add_experiment_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["experiment", "drift", "--preset", "tiny", "--out",
                              str(tmp_path), "--quiet", "--workers", "2"])
    assert run_experiment_command(args) == 0
    csv = (tmp_path / "drift.csv").read_text()
    assert csv.startswith("condition,tau,rep,seed")
    assert len(list((tmp_path / "jobs" / "drift").glob("*.parquet"))) == 2  # stored by Ray
    html = (tmp_path / "drift.html").read_text()
    assert "plotly" in html and "<script src=" not in html
    md = (tmp_path / "drift.md").read_text()
    assert "Seeds" in md and "rep 0:" in md and '"samples": 400' in md


def test_index_combines_runs(tmp_path):
    runs = [run_experiment(name, "tiny", tmp_path, progress=False, workers=1)
            for name in ("drift", "nonstationarity")]
    paths = write_index(tmp_path)
    md = paths["md"].read_text()
    assert md.index("## 6. ") < md.index("## 10. ")
    assert "[figure](drift.html)" in md and "[data](nonstationarity.csv)" in md
    assert "2 experiments in this folder" in md and "preset **tiny**" in md
    assert all(line in md for run in runs for line in run.experiment.summarise(run.frame))
    html = paths["html"].read_text()
    assert html.count("Plotly.newPlot") == 2
    assert html.count("plotly.js v") == 1  # plotly.js inlined once


def _experiment(argv, capsys=None):
    from sharp.cli import main

    code = main(["experiment", *argv])
    return code if capsys is None else (code, capsys.readouterr().err)


def test_experiment_out_is_checked_before_any_work(tmp_path, capsys, monkeypatch):
    import sharp.experiments.cli as experiment_cli

    monkeypatch.setattr(experiment_cli, "run_experiment", None)  # calling it would fail
    file = tmp_path / "file.txt"
    file.write_text("keep")
    for name in ("drift", "all"):
        code, err = _experiment([name, "--preset", "tiny", "--out", str(file)], capsys)
        assert code == 2 and "is a file, but --out needs a folder" in err
    assert file.read_text() == "keep"


@pytest.mark.parametrize(("argv", "message"), [
    (["--seed", "-1"], "argument --seed: must be an integer >= 0, got -1"),
    (["--seed", str(2**63)], f"argument --seed: must be an integer in 0..2**63-1 (torch "
                             f"seeds a 64-bit generator), got {2**63}"),
    (["--workers", "0"], "argument --workers: must be a positive integer (1 or more), got 0"),
    (["--workers", "-2"], "argument --workers: must be a positive integer"),
])
def test_experiment_options_name_the_option_and_what_is_valid(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        _experiment(["drift", "--preset", "tiny", *argv])
    assert stop.value.code == 2 and message in capsys.readouterr().err
    with pytest.raises(ValueError, match="seed must be an integer >= 0, got -1"):
        rep_seeds(-1, 2)
    with pytest.raises(ValueError, match="workers must be >= 1, got 0"):
        REGISTRY["drift"]("tiny", workers=0, progress=False)


def test_a_run_never_replaces_another_runs_results_silently(tmp_path, capsys):
    out = ["--out", str(tmp_path), "--quiet", "--workers", "1"]
    argv = ["credit_assignment", "--preset", "tiny", *out]
    assert _experiment([*argv, "--seed", "3"]) == 0
    record = json.loads((tmp_path / "credit_assignment.json").read_text())
    assert record["identity"]["seed"] == 3 and record["preset"] == "tiny"
    assert "workers" not in record["identity"]  # how it ran, not what it computed
    first = (tmp_path / "credit_assignment.csv").read_text()
    code, err = _experiment([*argv, "--seed", "4"], capsys)
    assert code == 2
    assert "holds credit_assignment's results of another run (different seed)" in err
    assert "--overwrite" in err
    assert (tmp_path / "credit_assignment.csv").read_text() == first
    code, err = _experiment(["credit_assignment", "--preset", "quick", *out], capsys)
    assert code == 2 and "(different preset, " in err
    assert _experiment([*argv, "--seed", "3", "--workers", "2"]) == 0  # the same run may
    assert _experiment([*argv, "--seed", "4", "--overwrite"]) == 0
    assert json.loads((tmp_path / "credit_assignment.json").read_text())["identity"][
        "seed"] == 4
    (tmp_path / "drift.csv").write_text("left by an older version")  # no record
    code, err = _experiment(["drift", "--preset", "tiny", *out], capsys)
    assert code == 2 and "drift's results of an unknown run (drift.csv)" in err
    code, err = _experiment(["all", "--preset", "tiny", *out], capsys)  # checked up front
    assert code == 2 and "credit_assignment's results of another run" in err
    assert not (tmp_path / "acceleration.csv").exists()  # experiment 2 never started


def test_index_is_rebuilt_whenever_an_experiment_is_rewritten(tmp_path, capsys):
    run_experiment("drift", "tiny", tmp_path, progress=False, workers=1)
    run_experiment("credit_assignment", "tiny", tmp_path, progress=False, workers=1)
    assert not (tmp_path / "index.md").exists()  # written by 'all' only, as --help says
    with pytest.raises(SystemExit):
        _experiment(["--help"])
    assert ("'all' also writes the combined index.md / index.html, which every later "
            "experiment written there then rebuilds from the folder's files") in " ".join(
                capsys.readouterr().out.split())
    write_index(tmp_path)
    again = run_experiment("drift", "tiny", tmp_path, progress=False, workers=1, seed=5,
                           overwrite=True)
    md = (tmp_path / "index.md").read_text()
    assert all(line in md for line in again.experiment.summarise(again.frame))
    on_disk = REGISTRY["drift"].summarise(pd.read_csv(tmp_path / "drift.csv"))
    assert all(line in md for line in on_disk)
    assert "1 row;" not in (tmp_path / "drift.md").read_text()
    assert plural(1, "row") == "1 row" and plural(2_000, "run") == "2,000 runs"


# -- the duration estimate (issue 14, item 3) -------------------------------------------
@pytest.mark.parametrize("preset_name", ["tiny", "paper"])
def test_every_experiment_plans_its_jobs_with_their_sizes_without_running_them(
    preset_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a job ran while its experiment was only planned")

    monkeypatch.setattr(common, "_run_job", refuse)
    for name, experiment in REGISTRY.items():
        parameters = experiment.parameters(preset_name, progress=False)
        jobs = planned_jobs(experiment.run, parameters)
        assert jobs and all(isinstance(job.size, Size) for job in jobs), name
        for job in jobs:
            assert job.kwargs[job.size.name] in (job.size.value, None), name
            assert all(p.every > 0 for p in job.size.periodic), name


def _sleeping(n: int, every: int, fixed: float) -> pd.DataFrame:
    """A stand-in job: ``fixed`` s, 10 µs per unit of ``n`` and 10 ms per event every
    ``every`` units."""
    time.sleep(fixed + n * 1e-5 + n // every * 1e-2)
    return pd.DataFrame()


def test_a_jobs_duration_is_extrapolated_from_its_warm_up_with_its_periodic_work() -> None:
    full = 1_000_000
    job = Job(_sleeping, {"n": full, "every": 100_000, "fixed": 0.02},
              size=Size("n", full, start=1_000, periodic=(periodic_argument("every",
                                                                              100_000),)))
    started = time.perf_counter()
    seconds, longest = job_seconds(job, target=0.05)
    assert time.perf_counter() - started < 2.0  # a short warm-up of a 10 s job
    assert longest < full
    assert seconds == pytest.approx(0.02 + 10.0 + 10 * 0.01, rel=0.1)


def test_shapes_ignore_seeds_and_the_size_only() -> None:
    spec = common.sharp_spec(preset("quick"), CommunityTask(), seed=1)
    kwargs = {"spec": spec, "task": {"depth": 2}, "samples": 600, "data_seed": 1,
              "every": 200, "sleep": True}
    def stream(**changes: object) -> Job:
        return Job(common.stream_job, {**kwargs, **changes}, size=Size("samples", 600))

    job = stream()
    same = [stream(spec=spec.with_seed(2), data_seed=2), stream(samples=1_200)]
    other = [stream(every=100), stream(sleep=False)]
    assert {shape_key(j) for j in same} == {shape_key(job)}
    assert shape_key(job) not in {shape_key(j) for j in other}


def test_jobs_are_handed_to_the_first_free_worker_in_order() -> None:
    assert makespan([2, 3, 2, 3, 2], 2) == 6  # 2+2+2 | 3+3
    assert makespan([3, 3, 2, 2, 2], 2) == 7  # 3+2+2 | 3+2
    assert makespan([5.0], 4) == 5.0 and makespan([], 3) == 0.0
    assert makespan([1, 1, 1, 1], 1) == 4
