"""Resumable experiments (issue 14, item 3): with ``--out`` every finished job's frame is
stored as it finishes, and the same command run again (after a crash, a SIGKILL, a damaged
file) runs only the jobs not stored and writes the CSV an uninterrupted run writes; the
text (8, 9) and community-task (2-4) jobs also checkpoint inside their loop and resume
from their last good checkpoint to the uninterrupted frame."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from conftest import DURATION, sigkill_when

import sharp.experiments.common as common
from sharp.cli import main
from sharp.config import preset
from sharp.experiments.common import (
    Job,
    JobCheckpoints,
    job_id,
    stream_ensemble_job,
    stream_job,
)
from sharp.experiments.report import jobs_folder, run_experiment
from sharp.experiments.sleep_ablation import WakeAllMemories
from sharp.experiments.text_stream import TINY, text_curve_job, text_ensemble_job
from sharp.model.learner import Sharp
from sharp.runs.jobs import CheckpointPolicy, JobFolder
from sharp.runs.progress import COMMAND_VARIABLE, one_line_warnings, worker_warnings
from sharp.runs.registry import LearnerSpec

ROOT = Path(__file__).resolve().parents[1]
NAME = "credit_assignment"  # tiny preset: 2 repetitions × 2 conditions = 4 jobs, ~1 s
#: Separate jobs on every machine (``auto`` groups the repetitions on CUDA or MPS).
ARGV = ["experiment", NAME, "--preset", "tiny", "--workers", "1", "--ensemble", "off"]
#: The subprocess that is killed: the CLI, each job started 1 s late, so that the kill
#: lands after the first job file is written and before the last.
SLOW_RUN = """
import sys, time
import sharp.experiments.common as common
from sharp.cli import main
run_job = common._run_job
def slow(job, report):
    time.sleep(1.0)
    return run_job(job, report)
common._run_job = slow
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def uninterrupted() -> str:
    """The CSV text of an uninterrupted run (no output folder, so no stored jobs)."""
    return run_experiment(NAME, "tiny", progress=False, workers=1,
                          ensemble="off").frame.to_csv(index=False)


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[Job]:
    """The jobs run (not resumed) from now on, in this process."""
    ran: list[Job] = []
    run_job = common._run_job

    def counting(job: Job, report):  # type: ignore[no-untyped-def]
        ran.append(job)
        return run_job(job, report)

    monkeypatch.setattr(common, "_run_job", counting)
    return ran


def _stored(out: Path) -> list[Path]:
    return sorted(jobs_folder(out, NAME).glob("*.parquet"))


def test_job_ids_are_digests_of_the_jobs_content() -> None:
    spec = LearnerSpec("sharp", preset("quick").to_dict(), "SHARP")
    kwargs = {"spec": spec, "task": {"depth": 2, "rule": "hash"}, "samples": 600,
              "data_seed": 7, "every": 200, "sleep": False}
    job = Job(stream_job, kwargs, {"rep": 0, "seed": 7})
    assert job_id(job) == job_id(Job(stream_job, dict(kwargs), {"rep": 0, "seed": 7}))
    assert len(job_id(job)) == 64 and int(job_id(job), 16) >= 0  # a sha256 digest, in hex
    others = [Job(stream_job, {**kwargs, "data_seed": 8}, job.labels),
              Job(stream_job, kwargs, {"rep": 1, "seed": 7}),
              Job(stream_job, {**kwargs, "spec": spec.with_seed(1)}, job.labels),
              Job(text_curve_job, kwargs, job.labels)]
    assert len({job_id(job), *map(job_id, others)}) == 5
    with pytest.raises(TypeError, match="got object"):
        job_id(Job(stream_job, {"spec": object()}))


def test_a_rerun_computes_only_the_missing_and_damaged_jobs(
    tmp_path: Path, uninterrupted: str, counted: list[Job],
    capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [*ARGV, "--out", str(tmp_path)]
    assert main([*argv, "--quiet"]) == 0
    assert len(counted) == 4 and len(_stored(tmp_path)) == 4
    assert (tmp_path / f"{NAME}.csv").read_text() == uninterrupted
    missing, damaged, *_ = _stored(tmp_path)
    missing.unlink()
    damaged.write_bytes(damaged.read_bytes()[:100])  # truncated
    (tmp_path / f"{NAME}.csv").unlink()
    capsys.readouterr()
    assert main(argv) == 0  # the same command again, with progress bars
    assert len(counted) == 6  # only those two ran again
    err = capsys.readouterr().err
    warned = [line for line in err.splitlines() if "damaged" in line]  # once, one line
    assert len(warned) == 1 and warned[0].startswith(
        f"sharp experiment: warning: {damaged} is truncated or damaged (")
    assert warned[0].endswith("); its job runs again")
    assert "credit assignment (2 resumed)" in err and "4/4" in err
    assert (tmp_path / f"{NAME}.csv").read_text() == uninterrupted
    assert _stored(tmp_path) == sorted([missing, damaged, *_])
    assert main([*argv, "--quiet", "--no-resume"]) == 0  # every job afresh
    assert len(counted) == 10
    assert (tmp_path / f"{NAME}.csv").read_text() == uninterrupted


def test_a_worker_of_a_command_prints_its_warnings_as_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Ray worker inherits the command's name and prints a warning as the command does
    (it printed Python's raw form with the source line); in the command's own process the
    command's handler stays in charge (once per command), and the Python API is left as is."""
    def damaged() -> None:
        for _ in range(2):
            warnings.warn("state-1.pt is damaged; using the previous checkpoint",
                          RuntimeWarning, stacklevel=1)

    with pytest.warns(RuntimeWarning, match="state-1.pt is damaged"), worker_warnings():
        damaged()  # no command: Python's warnings
    monkeypatch.setenv(COMMAND_VARIABLE, "experiment")  # as a Ray worker inherits it
    capsys.readouterr()
    with worker_warnings():
        damaged()
    line = "sharp experiment: warning: state-1.pt is damaged; using the previous checkpoint\n"
    assert capsys.readouterr().err == line
    with one_line_warnings("bench"):
        for _ in range(2):
            with worker_warnings():  # in the command's process: its handler, once in all
                damaged()
    assert capsys.readouterr().err == line.replace("experiment", "bench")


def test_the_stored_jobs_of_another_run_are_refused_or_replaced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [*ARGV, "--out", str(tmp_path), "--quiet"]
    assert main([*argv, "--seed", "3"]) == 0
    for suffix in ("csv", "html", "md", "json"):  # as if killed before writing them
        (tmp_path / f"{NAME}.{suffix}").unlink()
    first = _stored(tmp_path)
    assert main([*argv, "--seed", "4"]) == 2
    err = capsys.readouterr().err
    assert f"holds {NAME}'s stored jobs of another run (different seed)" in err
    assert main([*argv, "--seed", "4", "--overwrite"]) == 0
    assert len(_stored(tmp_path)) == 4 and not set(first) & set(_stored(tmp_path))


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_a_run_killed_mid_way_resumes_to_the_uninterrupted_csv(
    tmp_path: Path, uninterrupted: str, counted: list[Job]
) -> None:
    argv = [*ARGV, "--out", str(tmp_path), "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-c", SLOW_RUN, *argv], cwd=ROOT, env=env,
                               stderr=subprocess.DEVNULL)
    sigkill_when(process, lambda: bool(_stored(tmp_path)))
    stored = len(_stored(tmp_path))
    assert 1 <= stored < 4 and not (tmp_path / f"{NAME}.csv").exists()
    part = jobs_folder(tmp_path, NAME) / ".job.parquet.x1y2.part"
    part.write_bytes(b"PAR1")  # what a write killed half-way leaves
    assert main(argv) == 0  # the same command again
    assert not part.exists()
    assert len(counted) == 4 - stored
    assert (tmp_path / f"{NAME}.csv").read_text() == uninterrupted
    killed, resumed = json.loads((tmp_path / f"{NAME}.json").read_text())["invocations"]
    assert not killed["ended"] and resumed["ended"]  # SIGKILL: its end was never recorded
    assert (killed["jobs_stored_before"], resumed["jobs_stored_before"]) == (0, stored)
    assert (f"wall time at least {killed['wall_seconds'] + resumed['wall_seconds']:.1f} s over "
            "2 invocations") in (tmp_path / f"{NAME}.md").read_text()


def test_the_store_reports_each_saved_job(tmp_path: Path) -> None:
    """What records a running invocation's wall time as each job is stored."""
    saved: list[int] = []
    store = common.JobStore(tmp_path, on_save=lambda: saved.append(len(saved)))
    store.save(Job(stream_job, {"samples": 1}), pd.DataFrame({"x": [1]}))
    assert saved == [0] and len(list(tmp_path.glob("*.parquet"))) == 1


def test_the_estimate_is_printed_and_no_job_runs(
    tmp_path: Path, counted: list[Job], capsys: pytest.CaptureFixture[str]
) -> None:
    """``--estimate`` times a warm-up of the jobs, prints the duration and exits: no job
    runs through the executor and nothing is written, not even the output folder."""
    out = tmp_path / "out"
    assert main([*ARGV, "--out", str(out), "--estimate"]) == 0
    printed = capsys.readouterr().out
    assert re.fullmatch(rf"{NAME}: estimated duration {DURATION} for 4 jobs left "
                        r"of 4 on 1 worker, from a [\d.]+ s warm-up of 2 job shapes on this "
                        r"machine \(runs of up to 600 of 600 samples(, periodic work \(sleeps, "
                        r"evaluations\) timed per event)?\)\n", printed), printed
    assert counted == [] and not out.exists()


def test_the_estimate_counts_only_the_jobs_a_resumed_run_would_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [*ARGV, "--out", str(tmp_path), "--quiet"]
    assert main(argv) == 0
    stored = _stored(tmp_path)
    capsys.readouterr()
    assert main([*argv, "--estimate"]) == 0
    assert capsys.readouterr().out == f"{NAME}: every job is stored already; nothing left to run\n"
    stored[0].unlink()
    assert main([*argv, "--estimate"]) == 0
    assert "for 1 job left of 4 on 1 worker" in capsys.readouterr().out
    assert main([*argv, "--estimate", "--no-resume"]) == 0  # a run that starts afresh
    assert "for 4 jobs left of 4" in capsys.readouterr().out
    assert _stored(tmp_path) == stored[1:]  # the estimates wrote nothing


def test_a_paper_run_prints_its_estimate_before_any_job(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every ``--preset paper`` run prints the estimate first (here of ``all``, with the
    total), then runs; the warm-up and the runs are stand-ins that record the order."""
    import sharp.experiments.cli as cli

    events: list[str] = []

    def estimate(name: str, preset: str, out: str | None, **overrides: object) -> object:
        events.append(f"estimate {name} {preset} {out}")
        return SimpleNamespace(seconds=3600.0, line=lambda: f"{name}: estimated 1 h")

    def run(name: str, preset: str, out: str, **kwargs: object) -> object:
        events.append(f"run {name}")
        return SimpleNamespace(frame=pd.DataFrame(), seconds=0.0,
                               invocations=[{"wall_seconds": 0.0, "ended": True}])

    monkeypatch.setattr(cli, "estimate_experiment", estimate)
    monkeypatch.setattr(cli, "run_experiment", run)
    monkeypatch.setattr(cli, "write_index", lambda out: {"md": "index.md", "html": "index.html"})
    assert main(["experiment", "all", "--preset", "paper", "--out", str(tmp_path)]) == 0
    names = sorted(common.REGISTRY, key=lambda n: common.REGISTRY[n].number)
    assert events == ([f"estimate {n} paper {tmp_path}" for n in names]
                      + [f"run {n}" for n in names])
    printed = capsys.readouterr().out.splitlines()
    assert printed[: len(names)] == [f"{n}: estimated 1 h" for n in names]
    assert printed[len(names)] == (f"all {len(names)} experiments, one after another: "
                                   "estimated duration 9.0 h (32,400 s)")
    events.clear()
    assert main(["experiment", NAME, "--preset", "quick", "--out", str(tmp_path)]) == 0
    assert events == [f"run {NAME}"]  # no estimate below paper unless asked


# -- checkpoints inside a job: the text experiments (8, 9) ----------------------------
TEXT = "sleep_ablation"  # tiny preset: 2 jobs (sleep; wake-only, all memories online)
TEXT_ARGV = ["experiment", TEXT, "--preset", "tiny", "--workers", "1", "--quiet",
             "--checkpoint-tokens", "50"]
#: The subprocess that is killed: the CLI, each checkpoint followed by a 1 s pause, so
#: that the kill lands after a job's first checkpoint and long before the job ends.
SLOW_CHECKPOINTS = """
import sys, time
from sharp.cli import main
from sharp.runs.jobs import JobFolder
save = JobFolder.save
def slow(self, *args, **kwargs):
    save(self, *args, **kwargs)
    time.sleep(1.0)
JobFolder.save = slow
sys.exit(main(sys.argv[1:]))
"""
#: A tiny text job: 296 training steps, evaluated at 150 and 296, sleeping at step 150.
TEXT_JOB = {"config": TINY, "corpus": "wiki", "train_tokens": 300, "eval_tokens": 100,
            "every": 150}


def _checkpointed(out: Path, name: str = TEXT) -> list[dict]:
    """The manifests of experiment ``name``'s jobs checkpointing under ``out`` (unfinished
    jobs)."""
    manifests = []
    for path in jobs_folder(out, name).glob("*/manifest.json"):
        try:
            manifests.append(json.loads(path.read_text()))
        except ValueError:  # being replaced
            continue
    return manifests


@pytest.fixture
def resumed_from(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The step each job attempt started from, in this process, from now on."""
    steps: list[int] = []
    start_attempt = JobFolder.start_attempt

    def record(self: JobFolder, step: int) -> None:
        steps.append(step)
        start_attempt(self, step)

    monkeypatch.setattr(JobFolder, "start_attempt", record)
    return steps


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_a_text_experiment_killed_mid_job_resumes_from_its_checkpoint(
    tmp_path: Path, resumed_from: list[int]
) -> None:
    """Killed (SIGKILL) once its first job's first checkpoint exists, the same command
    again resumes that job from the checkpoint and writes the CSV of an uninterrupted run;
    the finished jobs' checkpoint folders are removed."""
    expected = run_experiment(TEXT, "tiny", progress=False, workers=1).frame.to_csv(index=False)
    argv = [*TEXT_ARGV, "--out", str(tmp_path)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-c", SLOW_CHECKPOINTS, *argv], cwd=ROOT,
                               env=env, stderr=subprocess.DEVNULL)
    sigkill_when(process, lambda: any(m.get("checkpoints") for m in _checkpointed(tmp_path)))
    (manifest,) = _checkpointed(tmp_path)
    killed_at = manifest["checkpoints"][-1]["step"]
    assert 0 < killed_at < 296 and not (tmp_path / f"{TEXT}.csv").exists()
    assert main(argv) == 0  # the same command again
    assert resumed_from == [killed_at, 0]  # the killed job resumed, the other started
    assert (tmp_path / f"{TEXT}.csv").read_text() == expected
    assert [p.name for p in jobs_folder(tmp_path, TEXT).iterdir() if p.is_dir()] == []


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_an_experiment_with_ensemble_jobs_killed_mid_job_resumes_from_its_checkpoint(
    tmp_path: Path, resumed_from: list[int]
) -> None:
    """``--ensemble on``: each credit-assignment condition's two repetitions run as one
    ensemble job; killed (SIGKILL) once the first one's first checkpoint exists, the same
    command again resumes it from there and writes the CSV of an uninterrupted run."""
    expected = run_experiment(NAME, "tiny", progress=False, workers=1,
                              ensemble="on").frame.to_csv(index=False)
    argv = ["experiment", NAME, "--preset", "tiny", "--workers", "1", "--quiet",
            "--ensemble", "on", "--checkpoint-tokens", "50", "--out", str(tmp_path)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-c", SLOW_CHECKPOINTS, *argv], cwd=ROOT,
                               env=env, stderr=subprocess.DEVNULL)
    sigkill_when(process, lambda: any(m.get("checkpoints")
                                      for m in _checkpointed(tmp_path, NAME)))
    (manifest,) = _checkpointed(tmp_path, NAME)
    killed_at = manifest["checkpoints"][-1]["step"]
    assert 0 < killed_at < 594 and not (tmp_path / f"{NAME}.csv").exists()
    assert main(argv) == 0  # the same command again
    assert resumed_from == [killed_at, 0]  # the killed ensemble job resumed, the other started
    assert (tmp_path / f"{NAME}.csv").read_text() == expected
    assert json.loads((tmp_path / f"{NAME}.json").read_text())["ensemble_jobs"] == 2


class Crash(Exception):
    """What the stand-in of a kill raises."""


def _crash_after(monkeypatch: pytest.MonkeyPatch, saves: int) -> None:
    """Make the ``saves``-th checkpoint of this process end the job (after it is written)."""
    save, count = JobFolder.save, [0]

    def crashing(self: JobFolder, *args: object, **kwargs: object) -> None:
        save(self, *args, **kwargs)  # type: ignore[arg-type]
        count[0] += 1
        if count[0] == saves:
            raise Crash

    monkeypatch.setattr(JobFolder, "save", crashing)


def _crashed(monkeypatch: pytest.MonkeyPatch, run: Callable[..., object],
             kwargs: dict[str, object], folder: Path | str, saves: int,
             **policy: int) -> JobCheckpoints:
    """Run ``run(**kwargs)`` checkpointing every 50 tokens into ``folder`` until its
    ``saves``-th checkpoint ends it (the stand-in of a kill); the checkpoints to resume."""
    checkpoints = JobCheckpoints(str(folder), CheckpointPolicy(every_tokens=50, **policy))
    with monkeypatch.context() as patch:
        _crash_after(patch, saves)
        with pytest.raises(Crash):
            run(**kwargs, checkpoints=checkpoints)
    return checkpoints


@pytest.mark.parametrize(("learner", "sleep"), [(Sharp, True), (WakeAllMemories, False)])
def test_a_text_job_resumes_exactly_from_its_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, resumed_from: list[int],
    learner: type[Sharp], sleep: bool
) -> None:
    """Resumed after its second checkpoint (step 100: before the sleep and the first
    evaluation at 150), a job returns the uninterrupted frame exactly; the wake-only
    learner's upper optimisers, windows, carries and gates are part of its state."""
    job = {**TEXT_JOB, "sleep": sleep, "learner": learner}
    expected = text_curve_job(**job)
    checkpoints = _crashed(monkeypatch, text_curve_job, job, tmp_path / "job", 2)
    frame = text_curve_job(**job, checkpoints=checkpoints)
    assert resumed_from == [0, 100]
    pd.testing.assert_frame_equal(frame, expected, check_exact=True)


def test_a_text_job_resumes_from_a_checkpoint_saved_before_ensembles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, resumed_from: list[int]
) -> None:
    """A checkpoint whose rows and counts are one learner's (the format before the text
    jobs could run ensembles) still resumes to the uninterrupted frame."""
    job = {**TEXT_JOB, "sleep": True}
    expected = text_curve_job(**job)
    folder = tmp_path / "job"
    # step 200, after the evaluation at 150
    checkpoints = _crashed(monkeypatch, text_curve_job, job, folder, 4)
    manifest = json.loads((folder / "manifest.json").read_text())
    for entry in manifest["checkpoints"]:
        entry["extra"] = {key: value[0] for key, value in entry["extra"].items()}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    frame = text_curve_job(**job, checkpoints=checkpoints)
    assert resumed_from == [0, 200]
    pd.testing.assert_frame_equal(frame, expected, check_exact=True)


def test_a_text_ensemble_job_resumes_exactly_from_its_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, resumed_from: list[int]
) -> None:
    """The repetitions of a condition as one ensemble, resumed after its fourth checkpoint
    (step 200: after the sleep and the evaluation at 150, whose rows it restores), return
    the uninterrupted frame exactly; the checkpoint holds the ensemble's state."""
    job = {**TEXT_JOB, "sleep": True, "seeds": [3, 5]}
    expected = text_ensemble_job(**job)
    folder = tmp_path / "job"
    checkpoints = _crashed(monkeypatch, text_ensemble_job, job, folder, 4)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert len(manifest["checkpoints"][-1]["extra"]["rows"][1]) == 3  # member 1 at 150
    frame = text_ensemble_job(**job, checkpoints=checkpoints)
    assert resumed_from == [0, 200]
    pd.testing.assert_frame_equal(frame, expected, check_exact=True)
    assert list(frame["seed"].unique()) == [3, 5] and list(frame["rep"].unique()) == [0, 1]


def test_a_truncated_mid_job_checkpoint_falls_back_to_the_previous_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, resumed_from: list[int]
) -> None:
    job = {**TEXT_JOB, "sleep": True}
    expected = text_curve_job(**job)
    folder = tmp_path / "job"
    # steps 50, 100, 150 (after its evaluation)
    checkpoints = _crashed(monkeypatch, text_curve_job, job, folder, 3, keep=2)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert [c["step"] for c in manifest["checkpoints"]] == [100, 150]  # 50 pruned
    newest = folder / manifest["checkpoints"][-1]["file"]
    newest.write_bytes(newest.read_bytes()[:1000])
    with pytest.warns(RuntimeWarning, match=f"{newest.name} is missing, truncated or damaged"):
        frame = text_curve_job(**job, checkpoints=checkpoints)
    assert resumed_from == [0, 100]  # before the evaluation at 150: its rows are not kept
    pd.testing.assert_frame_equal(frame, expected, check_exact=True)


def test_only_jobs_taking_checkpoints_get_them_and_their_ids_stay(tmp_path: Path) -> None:
    store = common.JobStore(tmp_path, CheckpointPolicy(every_tokens=7))
    text = Job(text_curve_job, {**TEXT_JOB, "sleep": True})
    given = store.checkpointed(text)
    assert given.checkpoints == JobCheckpoints(str((tmp_path / job_id(text)).resolve()),
                                               CheckpointPolicy(every_tokens=7))
    assert job_id(given) == job_id(text)
    drift = common.planned_jobs(common.REGISTRY["drift"].run,
                                common.REGISTRY["drift"].parameters("tiny"))[0]
    assert store.checkpointed(drift) is drift  # its function takes no checkpoints


@pytest.mark.parametrize(("options", "message"), [
    (["--checkpoint-tokens", "0"],
     "sharp experiment: error: --checkpoint-tokens must be an integer >= 1, got 0\n"),
    (["--checkpoint-minutes", "nan", "--keep-checkpoints", "-1"],
     "sharp experiment: error: --checkpoint-minutes must be a number > 0, got nan; "
     "--keep-checkpoints must be an integer >= 1, got -1\n"),
])
def test_the_checkpoint_options_are_checked_before_any_work(
    tmp_path: Path, options: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main([*TEXT_ARGV, "--out", str(out), *options]) == 2
    assert capsys.readouterr().err == message
    assert not out.exists()


def test_checkpoint_options_an_experiment_would_not_use_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A setting is used or refused (issue 12, case 6): memory_capacity's jobs do not
    checkpoint inside their loop, so --checkpoint-tokens would change nothing."""
    out = tmp_path / "out"
    argv = ["experiment", "memory_capacity", "--preset", "tiny", "--quiet", "--out", str(out)]
    assert main([*argv, "--checkpoint-tokens", "100", "--keep-checkpoints", "3"]) == 2
    assert capsys.readouterr().err == (
        "sharp experiment: error: --checkpoint-tokens and --keep-checkpoints: memory_capacity's "
        "jobs do not checkpoint inside their loop (those of experiments 2-4, 8 and 9 do); its "
        "finished jobs are stored and a re-run skips them. Drop the option.\n")
    assert not out.exists()


# -- checkpoints inside a job: the community-task experiments (2-4) -------------------
def _community_job(name: str, kind: str) -> Job:
    """The first job of experiment ``name``'s tiny preset whose learner is a ``kind``, a
    sleeping one where there is one."""
    experiment = common.REGISTRY[name]
    jobs = [job for job in common.planned_jobs(experiment.run, experiment.parameters(
        "tiny", ensemble="off")) if job.kwargs["spec"].kind == kind]
    return max(jobs, key=lambda job: job.kwargs["sleep"])


@pytest.mark.parametrize("kind", ["sharp", "rnn"])
def test_a_community_ensemble_job_resumes_exactly_from_its_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, resumed_from: list[int], kind: str
) -> None:
    """The two repetitions of a credit-assignment condition as one ensemble (594 steps),
    resumed after its third checkpoint (step 150), return the uninterrupted curves exactly;
    the checkpoint holds the ensemble's state and every member's records."""
    experiment = common.REGISTRY["credit_assignment"]
    (job,) = [job for job in common.planned_jobs(experiment.run, experiment.parameters(
        "tiny", ensemble="on")) if job.kwargs["spec"].kind == kind]
    assert job.function is stream_ensemble_job and job.members == 2
    expected = stream_ensemble_job(**job.kwargs)
    checkpoints = _crashed(monkeypatch, stream_ensemble_job, job.kwargs, tmp_path / "job", 3)
    frame = stream_ensemble_job(**job.kwargs, checkpoints=checkpoints)
    assert resumed_from == [0, 150]
    pd.testing.assert_frame_equal(frame, expected, check_exact=True)
    assert list(frame["rep"].unique()) == [0, 1]


@pytest.mark.parametrize(("name", "kind", "saves"), [
    ("acceleration", "sharp", 1),  # 196 steps, sleeping at step 100, resumed from 50
    ("credit_assignment", "rnn", 5),  # the vanilla RNN, 594 steps, resumed from 250
])
def test_a_community_job_resumes_exactly_from_its_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, resumed_from: list[int], name: str,
    kind: str, saves: int
) -> None:
    job = _community_job(name, kind)
    expected = stream_job(**job.kwargs)
    checkpoints = _crashed(monkeypatch, stream_job, job.kwargs, tmp_path / "job", saves)
    frame = stream_job(**job.kwargs, checkpoints=checkpoints)
    assert resumed_from == [0, 50 * saves]
    pd.testing.assert_frame_equal(frame, expected, check_exact=True)
