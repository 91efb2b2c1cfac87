"""`sharp bench` and notebook 05: one checked plan before any work, what ran is what the
report says, no report replaced silently, and a stopped run leaves no process behind."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from conftest import DURATION

from sharp.cli import main, print_estimate
from sharp.explore.notebooks import notebook_path
from sharp.runs.bench import (
    BenchOptions,
    Speed,
    default_run_name,
    estimate_seconds,
    plan_bench,
)
from sharp.runs.jobs import JobFolder
from sharp.runs.report import check_report_folder

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if any learner starts or a notebook kernel is started."""
    def started(*args: object, **kwargs: object) -> None:
        raise AssertionError("work started before the run was checked")

    monkeypatch.setattr("sharp.runs.benchmark.run_job", started)
    monkeypatch.setattr("sharp.runs.executor.init_ray", started)
    monkeypatch.setattr("sharp.explore.notebooks.execute_notebook", started)


@pytest.mark.parametrize("notebook", ["--no-notebook", "--notebook"])
@pytest.mark.parametrize(
    ("options", "message"),
    [
        # issue 12, case 4: this trained every learner, then failed at evaluation
        (["--segment", "3000", "--slice", "4"],
         r"slice \(4 tokens\) must be longer than the window W=4"),
        (["--segment", "3", "--slice", "3"], r"segment \(3 tokens\) must be longer than the"),
        (["--set", "window=8", "--segment", "3000", "--slice", "8"],
         r"slice \(8 tokens\) must be longer than the window W=8"),
        (["--segment", "1000000", "--learners", "3", "--slice", "500"],
         "need 3000500 tokens but the corpus has"),
        (["--protocol", "books"], "the book protocol needs a book corpus"),
        (["--workers", "-1"], "workers must be >= 1"),
        (["--set", "window=100", "--baselines", "transformer"],
         r"context \(C\) must be >= window W=100"),
        (["--set", "hidden=64.0"], "SharpConfig.hidden must be a list of int or an int, got 64.0"),
        # new-user findings: 0 workers ran as 1; a run name escaped reports/
        (["--workers", "0"], "learners and workers must be >= 1, got 1 and 0"),
        # new-user finding: a token preset on wiki (which refuses a tokenizer) was told to
        # give a tokenizer
        (["--preset", "tokens-small"],
         r"^sharp bench: error: top_k must be None or in 1..vocab_size=27, got 50: set "
         r"top_k=None \(--set top_k=null\) or at most 27, or use a vocabulary of at least 50 "
         r"tokens \(a token preset reads a book corpus through a tokenizer\)$"),
        (["--name", "../elsewhere"], "run name '../elsewhere' must be a plain folder name"),
        # learner 0 ran before learner 1's seed 2**63 failed in its job
        (["--seed", "9223372036854775807", "--learners", "2"],
         r"--seed 9223372036854775807 with --learners 2: learner m runs with seed \+ m, "
         r"which must be in 0..2\*\*63-1; give --seed in 0..9223372036854775806"),
        # issue 13, item 3: books differ in length, an ensemble streams in lockstep
        (["--corpus", "books", "--segment", "5000000", "--ensemble", "on"],
         "the book protocol cannot run learners as ensembles"),
        # issue 14: the checkpoint options are named as typed, not as policy fields
        (["--checkpoint-tokens", "0"],
         r"^sharp bench: error: --checkpoint-tokens \(notebook: checkpoint_tokens\) must be "
         r"an integer >= 1, got 0$"),
        (["--checkpoint-minutes", "nan"],
         r"--checkpoint-minutes \(notebook: checkpoint_minutes\) must be a number > 0, "
         r"got nan$"),
        (["--keep-checkpoints", "-1", "--checkpoint-minutes", "0"],
         r"--checkpoint-minutes .* > 0, got 0.0; --keep-checkpoints \(notebook: "
         r"keep_checkpoints\) must be an integer >= 1, got -1$"),
    ],
)
def test_every_checkable_option_fails_before_any_learner_starts(
    no_training: None, tmp_path: Path, capsys: pytest.CaptureFixture[str], notebook: str,
    options: list[str], message: str,
) -> None:
    out = tmp_path / "run"
    argv = ["bench", notebook, "--corpus", "wiki", "--learners", "1", "--baselines",
            "--quiet", "--out", str(out), *options]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith("sharp bench: error: ") and error.count("\n") == 1
    assert re.search(message, error), error
    assert not out.exists()


def test_a_tilde_out_is_the_folder_the_run_locks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # --out '~/x' was locked as $HOME/x (run_folder_lock expands it) but written as ./~/x
    monkeypatch.setenv("HOME", str(tmp_path))
    plan = plan_bench(BenchOptions(segment=600, slice_len=100, learners=1, baselines=[],
                                   progress=False, out_dir="~/x"))
    assert plan.out == tmp_path / "x"


def test_a_bad_run_name_fails_before_the_corpus_is_read(
    no_training: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    # it was refused only after the corpus was loaded (text8: downloaded, a tokenizer: trained)
    def loaded(*args: object, **kwargs: object) -> None:
        raise AssertionError("the corpus was loaded before the run name was checked")

    monkeypatch.setattr("sharp.runs.bench.load_corpus", loaded)
    assert main(["bench", "--no-notebook", "--quiet", "--name", "../elsewhere"]) == 2
    assert ("sharp bench: error: run name '../elsewhere' must be a plain folder name"
            in capsys.readouterr().err)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        # issue 12, case 6: the learners ran with seeds 0 and 1, summary.md said seed 5
        (["--set", "seed=5"], "seed cannot be overridden with --set .* set by --seed"),
        (["--set", "threads=4"], "threads cannot be overridden .* set by --threads"),
        (["--set", "vocab_size=50"], "vocab_size cannot be overridden .* the corpus"),
        (["--set", "name=mine"], "name cannot be overridden .* set by --preset"),
        (["--sleep-every", "100", "--set", "sleep_every=200"], "sleep_every is given twice"),
        (["--set", "tau=0.1", "--set", "tau=0.2"], "--set tau is given twice"),
        (["--baseline-preset", "paper", "--baselines"], "baseline preset 'paper' given but no"),
        (["--sleep-every", "0"], "sleep_every must be >= 1, got 0"),
    ],
)
def test_settings_that_would_be_ignored_are_refused(
    no_training: None, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    options: list[str], message: str,
) -> None:
    argv = ["bench", "--no-notebook", "--quiet", "--learners", "2", "--out",
            str(tmp_path / "run"), *options]
    assert main(argv) == 2
    assert re.search(message, capsys.readouterr().err)


def test_shared_fields_reach_every_learner(tmp_path: Path) -> None:
    plan = plan_bench(BenchOptions(overrides={"window": 3, "device": "cpu", "hidden": 32},
                                   baselines=["rnn", "transformer"], out_dir=str(tmp_path)))
    for spec in plan.specs:
        assert (spec.config["window"], spec.config["device"]) == (3, "cpu"), spec.name
    assert plan.specs[0].config["hidden"] == [32] * 5  # SHARP's own field stays SHARP's
    assert plan.specs[1].config["hidden"] == 128
    assert all("seed" not in config for config in plan.meta["configs"].values())


def test_default_run_names_follow_the_whole_file_stem(tmp_path: Path) -> None:
    # issue 12, case 11: both wrote reports/bench-exp-quick/
    alpha, beta = tmp_path / "exp.alpha.txt", tmp_path / "exp.beta.txt"
    for path in (alpha, beta):
        path.write_text("the cat sat on the mat " * 200)
    assert default_run_name(str(alpha), "quick") == "bench-exp.alpha-quick"
    assert default_run_name(str(beta), "quick") == "bench-exp.beta-quick"
    assert default_run_name("wiki", "text8-small") == "bench-wiki-text8-small"
    odd = tmp_path / "my corpus (v2)!.txt"
    odd.write_text("x")
    assert default_run_name(str(odd), "quick") == "bench-my_corpus_v2-quick"
    books = tmp_path / "pg"
    books.mkdir()
    assert default_run_name(str(books) + "/", "quick") == "bench-pg-quick"
    names = {plan_bench(BenchOptions(corpus=str(p), segment=500, slice_len=100, learners=1,
                                     baselines=[])).out for p in (alpha, beta)}
    assert names == {Path("reports/bench-exp.alpha-quick"), Path("reports/bench-exp.beta-quick")}


def test_a_report_of_another_run_is_never_replaced_silently(tmp_path: Path) -> None:
    meta = {"run": "a", "corpus": "wiki", "corpus_sha256": "abc", "corpus_tokens": 10,
            "protocol": "segment", "segment": 5, "slice": 2, "learners": 1, "seed": 0,
            "clip": None, "wall_seconds": 1.0, "workers": 1,
            "configs": {"SHARP": {"hidden": [8], "threads": 1}}}
    check_report_folder(tmp_path / "new", meta)  # no folder yet
    (tmp_path / "notes.txt").write_text("not a report")
    check_report_folder(tmp_path, meta)  # a folder without report files
    (tmp_path / "run.json").write_text(json.dumps({**meta, "wall_seconds": 9.0, "workers": 2}))
    check_report_folder(tmp_path, meta)  # the same run: replacing it is fine
    other = {**meta, "corpus_sha256": "def", "configs": {"SHARP": {"hidden": [16]}}}
    with pytest.raises(FileExistsError,
                       match=r"holds the report of another run \(different corpus_sha256, "
                       r"configs\); choose another folder with --name or --out"):
        check_report_folder(tmp_path, other)
    check_report_folder(tmp_path, other, overwrite=True)
    (tmp_path / "run.json").unlink()
    (tmp_path / "results.csv").write_text("learner\n")
    with pytest.raises(FileExistsError, match=r"the report of an unknown run \(results.csv\)"):
        check_report_folder(tmp_path, meta)


def test_bench_refuses_to_replace_another_runs_report_before_training(
    no_training: None, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "summary.md").write_text("# an earlier report")
    argv = ["bench", "--quiet", "--baselines", "--out", str(out)]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert "holds the report of an unknown run" in error and "--overwrite" in error
    assert (out / "summary.md").read_text() == "# an earlier report"


def test_notebook_05_and_the_cli_share_one_plan_and_run() -> None:
    # issue 11, item 6: the notebook built its specs and metadata itself
    notebook = nbformat.read(notebook_path("05_evaluation"), as_version=4)
    parameters = {line.split(":")[0] for line in notebook.cells[1].source.splitlines()}
    assert {f.name for f in dataclasses.fields(BenchOptions)} <= parameters
    code = "\n".join(c.source for c in notebook.cells if c.cell_type == "code")
    assert "plan_bench(options)" in code and "run_bench(plan)" in code
    for rebuilt in ("sharp_spec", "baseline_spec", "write_benchmark_report", "run_benchmark("):
        assert rebuilt not in code, rebuilt


def _descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (Ray's workers are the raylet's children)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


#: Ray's idle helper processes: after a SIGKILL of the driver they see the raylet gone at
#: once but take ~60 s to exit (a report to the dead GCS times out); they compute nothing.
RAY_AGENTS = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL,
                                  pytest.param(signal.SIGINT, marks=pytest.mark.slow)],
                         ids=["TERM", "KILL", "INT"])
def test_stopping_the_main_process_stops_every_worker(tmp_path: Path,
                                                      stop: signal.Signals) -> None:
    # issue 12, case 8: after SIGTERM the workers kept computing with parent 1; the
    # workers are Ray's now (issue 14), under the embedded cluster the main process started.
    # SIGINT (Ctrl-C sent to the main process alone) runs the same path as SIGTERM: slow.
    out = tmp_path / "run"
    command = [sys.executable, "-m", "sharp", "bench", "--no-notebook", "--corpus", "wiki",
               "--segment", "100000", "--learners", "3", "--workers", "2", "--baselines",
               "--quiet", "--out", str(out)]
    # a shell starts background jobs with SIGINT ignored, which a child inherits: give the
    # main process SIGINT as in a terminal (a Python handler here becomes the default there)
    handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        main_process = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True,
                                        env={**os.environ, "PYTHONPATH": str(ROOT)})
    finally:
        signal.signal(signal.SIGINT, handler)
    children: set[int] = set()
    try:
        deadline = time.monotonic() + 180
        workers: set[int] = set()
        while len(workers) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
            workers = {pid for pid in _descendants(main_process.pid)
                       if _command(pid).startswith("ray::_call")}
        assert len(workers) == 2, "the workers never started their jobs"
        time.sleep(2)  # let them train
        children = _descendants(main_process.pid)
        main_process.send_signal(stop)
        code = main_process.wait(timeout=60)
        deadline = time.monotonic() + 20
        left = children
        while left and time.monotonic() < deadline:
            time.sleep(0.2)
            left = {pid for pid in left if _alive(pid)}
            if stop == signal.SIGKILL:
                left = {pid for pid in left if not _command(pid).startswith(RAY_AGENTS)}
        assert not left, f"orphaned processes: {[_command(pid) for pid in left]}"
    finally:
        main_process.kill()
        main_process.wait()
        for pid in children:  # Ray's idle agents: not to linger after the test
            if _alive(pid) and _command(pid).startswith(RAY_AGENTS):
                os.kill(pid, signal.SIGKILL)
    assert code == (128 + stop if stop != signal.SIGKILL else -stop)
    if stop != signal.SIGKILL:
        assert f"stopped by {stop.name}" in main_process.stderr.read()
    assert not (out / "summary.md").exists() and not (out / "results.csv").exists()


@pytest.mark.slow  # ~30 s: Ray's start, and its stop after it
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_a_stop_signal_while_ray_starts_stops_the_run_and_every_ray_process(
    tmp_path: Path,
) -> None:
    # a new user's fault: SIGTERM in the first seconds of a --workers 2 run (ray.init had
    # replaced the CLI's handler with an exit) ended it with status 15, no message, and
    # Ray's agents left running with parent 1
    out = tmp_path / "run"
    command = [sys.executable, "-m", "sharp", "bench", "--no-notebook", "--segment", "600",
               "--slice", "100", "--learners", "2", "--workers", "2", "--baselines",
               "--quiet", "--out", str(out)]
    main_process = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True,
                                    env={**os.environ, "PYTHONPATH": str(ROOT)})
    seen: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while not any("gcs_server" in _command(pid) for pid in seen):  # Ray is starting
            assert time.monotonic() < deadline and main_process.poll() is None
            time.sleep(0.02)
            seen = _descendants(main_process.pid)
        main_process.send_signal(signal.SIGTERM)
        while main_process.poll() is None:  # what Ray still starts before it stops
            seen |= _descendants(main_process.pid)
            time.sleep(0.05)
        deadline = time.monotonic() + 10
        while {pid for pid in seen if _alive(pid)} and time.monotonic() < deadline:
            time.sleep(0.2)
        left = [_command(pid) for pid in seen if _alive(pid)]
    finally:
        main_process.kill()
        main_process.wait()
        for pid in seen:  # all this run's: not to linger after a failed test
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert not left, f"orphaned processes: {left}"
    assert main_process.returncode == 128 + signal.SIGTERM
    assert "sharp bench: stopped by SIGTERM" in main_process.stderr.read()


def test_a_diverged_learner_is_marked_and_never_averaged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 12, case 3: lr=1e9 blows SHARP up (the RNN, whose gradients are clipped, only
    saturates); the run still finishes, marks SHARP's runs in results.csv and summary.md
    (also under --clip), reports the RNN as usual, and exits 1."""
    out = tmp_path / "run"
    code = main(["bench", "--no-notebook", "--quiet", "--corpus", "wiki", "--segment", "600",
                 "--slice", "100", "--learners", "2", "--baselines", "rnn", "--set",
                 "lr=1e9", "--clip", "--workers", "1", "--out", str(out)])
    assert code == 1
    results = pd.read_csv(out / "results.csv")
    sharp = results[results["learner"] == "SHARP"]
    assert sharp["diverged"].str.contains("diverged at stream step").all()
    assert sharp["bits_clipped"].isna().all()
    assert results.loc[results["learner"] != "SHARP", "diverged"].isna().all()
    summary = (out / "summary.md").read_text()
    assert "Diverged runs" in summary
    assert "| SHARP | diverged | diverged | diverged |" in summary
    assert "diverged at stream step" in capsys.readouterr().err


def test_an_output_path_that_cannot_be_a_folder_fails_before_any_work(
    no_training: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """New-user finding: --out naming a file failed with [Errno 17] after all training."""
    taken = tmp_path / "notes.txt"
    taken.write_text("mine")
    for out in (taken, taken / "run"):
        assert main(["bench", "--no-notebook", "--quiet", "--learners", "1", "--baselines",
                     "--out", str(out)]) == 2
        assert f"{taken} is a file" in capsys.readouterr().err
    assert taken.read_text() == "mine"
    # "" wrote to reports/bench-wiki-quick/; /proc/nope failed with a raw [Errno 2] after the
    # corpus line: one line each, before anything is read
    for out, message in [("", "--out is empty; give an output folder's path"),
                         ("/proc/nope", "--out /proc/nope: cannot make a folder in /proc (No "
                                        "such file or directory); give a folder you can write")]:
        assert main(["bench", "--no-notebook", "--quiet", "--out", out]) == 2
        output = capsys.readouterr()
        assert output.out == "" and output.err.startswith(f"sharp bench: error: {message}")


def test_a_local_file_is_reported_as_the_file_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """New-user finding: a text file called ``wiki`` was reported as the bundled wiki; and
    learners without a memory gate showed a memory update rate of 0."""
    monkeypatch.setenv("SHARP_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "wiki").write_text("the cat sat on the mat and the dog ate the bone " * 300)
    assert main(["bench", "--no-notebook", "--quiet", "--corpus", "./wiki", "--learners", "1",
                 "--workers", "1", "--segment", "3000", "--slice", "300", "--baselines", "rnn",
                 "--out", "report"]) == 0
    source = str((tmp_path / "wiki").resolve())
    assert f"corpus wiki ({source}):" in capsys.readouterr().out
    assert json.loads((tmp_path / "report" / "run.json").read_text())["corpus_source"] == source
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert f"- corpus: **wiki** ({source})," in summary
    assert re.search(r"\| RNN \(tbptt\) \| [\d,]+ \| 2,996 \| [\d.,]+ \| [\d.,]+ \| — \| 0 \|",
                     summary), summary



@pytest.mark.parametrize("ensemble", ["off", "on"])
def test_the_estimate_measures_the_jobs_that_will_run(
    no_training: None, tmp_path: Path, capsys: pytest.CaptureFixture[str], ensemble: str,
) -> None:
    """issue 14, item 3: the estimate is printed before any work, writes nothing, and with
    --ensemble on measures each model as the ensemble it runs as (not as M learners)."""
    out = tmp_path / "run"
    plan = plan_bench(BenchOptions(segment=700, slice_len=100, learners=2, sleep_every=300,
                                   overrides={"sleep_steps": 40, "hidden": 32},
                                   baselines=["rnn"], ensemble=ensemble, workers=2,
                                   out_dir=str(out)))
    print_estimate(plan, steps=20)
    printed = capsys.readouterr().out
    assert re.search(rf"estimated duration: {DURATION} on 2 worker\(s\), from a "
                     r"20-step warm-up of each model", printed), printed
    grouped = ensemble == "on"
    assert ("(as the ensemble its learners run as)" in printed) == grouped
    for name in ("SHARP", "RNN (tbptt)"):
        label = f"{name} (ensemble of 2): " if grouped else f"{name}: "
        assert f"  {label}" in printed, printed
    assert ("for all 2 members in lockstep" in printed) == grouped
    assert not out.exists()


@pytest.mark.parametrize(("seconds", "printed"), [
    (7200.0, "2.0 h (7,200 s)"), (750.0, "12.5 min (750 s)"),
    (38.2, "38 s"),  # was "0.0 h (38 s)"
])
def test_bench_estimate_prints_and_exits_before_any_work(
    no_training: None, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch, seconds: float, printed: str,
) -> None:
    speeds = {"SHARP": Speed(1e-3, 1e-4, 0.0)}
    monkeypatch.setattr("sharp.cli.estimate_seconds", lambda plan, steps: (seconds, speeds))
    out = tmp_path / "run"
    assert main(["bench", "--no-notebook", "--quiet", "--learners", "1", "--baselines",
                 "--estimate", "--out", str(out)]) == 0
    assert f"estimated duration: {printed} on 1 worker(s)" in capsys.readouterr().out
    assert not out.exists()


def test_the_estimate_times_only_work_that_is_left(
    no_training: None, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A model is timed sleeping only when its run sleeps (a warm-up sleep at V = 73k once
    took minutes to estimate a run that never sleeps), and a finished run measures nothing."""
    import sharp.runs.bench as bench_module

    measured: list[tuple[str, bool]] = []
    real = bench_module.measure_speed

    def spy(job: object, tokens: object, steps: int = 200, *, sleep: bool = True) -> object:
        measured.append((job.spec.name, sleep))  # type: ignore[attr-defined]
        return real(job, tokens, steps, sleep=sleep)  # type: ignore[arg-type]

    monkeypatch.setattr(bench_module, "measure_speed", spy)
    options = {"segment": 700, "slice_len": 100, "learners": 1, "baselines": ["rnn"],
               "overrides": {"sleep_steps": 40, "hidden": 32}, "out_dir": str(tmp_path / "r")}
    for sleep_every, sleeps in ((300, True), (5_000, False)):
        measured.clear()
        estimate_seconds(plan_bench(BenchOptions(sleep_every=sleep_every, **options)), 20)
        assert measured == [("SHARP", sleeps), ("RNN (tbptt)", False)]

    monkeypatch.setattr(JobFolder, "done_tokens", lambda self, job: job.total_tokens)
    measured.clear()
    plan = plan_bench(BenchOptions(sleep_every=300, **options))
    assert estimate_seconds(plan, 20) == (0.0, {}) and not measured
    print_estimate(plan, steps=20)
    assert "estimated duration: 0 s: every job of this run is finished" in (
        capsys.readouterr().out)


@pytest.mark.parametrize(("option", "message"), [
    # as sharp experiment and sharp reference refuse it (it ran seeds -1 and 0)
    (["--seed", "-1"], "argument --seed: must be an integer >= 0, got -1"),
    # was accepted, then every learner failed with a ConfigError inside a Ray worker
    (["--seed", str(2**63)], "argument --seed: must be an integer in 0..2**63-1 (torch seeds "
                             f"a 64-bit generator), got {2**63}"),
    # "threads must be None or >= 1" named no option
    (["--threads", "0"], "argument --threads: must be a positive integer (1 or more), got 0"),
])
def test_a_negative_seed_or_no_threads_is_refused_by_argparse(
    capsys: pytest.CaptureFixture[str], option: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["bench", "--no-notebook", *option])
    assert stopped.value.code == 2
    assert message in capsys.readouterr().err
