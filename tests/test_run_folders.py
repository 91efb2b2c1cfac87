"""One run per output folder (an OS lock held for the run's life, released by any death),
every invocation of a resumed run recorded and summed, and estimates that never refuse on
the folder's contents: ``sharp bench``, ``sharp experiment``, ``sharp throughput`` and
``sharp reference``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sharp.cli import main
from sharp.runs.invocations import HANDED_OVER, Invocation, wall_time_words
from sharp.runs.lock import LOCK_FILE, LOCKS_VARIABLE, FolderBusy, run_folder_lock

ROOT = Path(__file__).resolve().parents[1]
#: A tiny bench (as tests/test_jobs.py's): one SHARP learner, ~2 s.
BENCH = ["bench", "--no-notebook", "--quiet", "--corpus", "wiki", "--segment", "2500",
         "--slice", "200", "--learners", "1", "--baselines", "--sleep-every", "1000",
         "--set", "sleep_steps=1025", "--set", "hidden=64", "--workers", "1",
         "--checkpoint-tokens", "250"]
#: Holds the lock of the folder argv[1] as ``sharp bench`` until killed.
HOLDER = ("import sys, time\n"
          "from sharp.runs.lock import run_folder_lock\n"
          "with run_folder_lock(sys.argv[1], 'sharp bench'):\n"
          "    print('held', flush=True)\n"
          "    time.sleep(120)\n")


def _python(code: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT),
                                                         **(env or {})})


@pytest.fixture
def held(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen]]:
    """A folder whose lock another process holds (killed with SIGKILL at the end)."""
    out = tmp_path / "run"
    holder = _python(HOLDER, str(out))
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        yield out, holder
    finally:
        holder.kill()
        holder.wait()


def test_a_second_process_is_refused_and_a_killed_holder_never_blocks(
    held: tuple[Path, subprocess.Popen],
) -> None:
    out, holder = held
    refusal = (rf"^{re.escape(str(out))}: another sharp bench \(pid {holder.pid}, started "
               r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\) is running on this folder; wait for it "
               r"or use another --out$")
    with pytest.raises(FolderBusy, match=refusal), run_folder_lock(out, "sharp bench"):
        pass
    holder.kill()  # SIGKILL: nothing of the holder runs again, the kernel drops its lock
    holder.wait()
    assert (out / LOCK_FILE).exists()  # the file stays; the lock it carried is gone
    with run_folder_lock(out, "sharp bench"):
        assert LOCKS_VARIABLE in os.environ
    assert LOCKS_VARIABLE not in os.environ


def test_a_child_of_the_holder_passes_as_the_notebook_kernel_does(tmp_path: Path) -> None:
    """``sharp bench`` holds the lock and starts papermill's kernel, whose ``run_bench``
    takes the same folder's lock: it inherits it (and a stranger does not)."""
    out = tmp_path / "run"
    child = ("import sys\nfrom sharp.runs.lock import run_folder_lock\n"
             "with run_folder_lock(sys.argv[1], 'sharp bench'):\n    print('ran')\n")
    with run_folder_lock(out, "sharp bench"):
        kernel = _python(child, str(out))
        assert kernel.communicate(timeout=60)[0] == "ran\n" and kernel.returncode == 0
        stranger = _python(child, str(out), env={LOCKS_VARIABLE: "{}"})
        assert stranger.communicate(timeout=60)[0] == "" and stranger.returncode == 1


@pytest.mark.parametrize("argv", [
    BENCH,
    [*BENCH[:1], "--notebook", *BENCH[2:]],
    ["experiment", "drift", "--preset", "tiny", "--quiet"],
    ["experiment", "all", "--preset", "tiny", "--quiet"],
    ["throughput", "--presets", "text8-small", "--threads", "1", "--steps", "10"],
    ["reference", "--quiet"],
], ids=["bench", "bench-notebook", "experiment", "experiment-all", "throughput", "reference"])
def test_every_command_refuses_a_busy_folder_before_any_work(
    held: tuple[Path, subprocess.Popen], argv: list[str], capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out, holder = held

    def work(*args: object, **kwargs: object) -> None:
        raise AssertionError("work started on a busy folder")

    for name in ("sharp.cli.run_bench", "sharp.explore.notebooks.execute_notebook",
                 "sharp.cli.reference_curve", "sharp.cli.throughput_table",
                 "sharp.experiments.cli.run_experiment"):
        monkeypatch.setattr(name, work)
    assert main([*argv, "--out", str(out)]) == 2
    command = argv[0]
    assert capsys.readouterr().err == (
        f"sharp {command}: error: {out}: another sharp bench (pid {holder.pid}, started "
        f"{json.loads((out / LOCK_FILE).read_text())['started']}) is running on this folder; "
        "wait for it or use another --out\n")
    assert sorted(path.name for path in out.iterdir()) == [LOCK_FILE]


def test_a_rerun_with_other_threads_records_both_invocations_truthfully(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "run"
    assert main([*BENCH, "--out", str(out)]) == 0
    assert main([*BENCH, "--threads", "2", "--out", str(out)]) == 0
    first, second = json.loads((out / "run.json").read_text())["invocations"]
    assert (first["threads"], second["threads"]) == (1, 2)
    assert (first["jobs_finished_before"], second["jobs_finished_before"]) == (0, 1)
    assert first["ended"] and second["ended"] and "--threads 2" in second["command"]
    total = first["wall_seconds"] + second["wall_seconds"]
    assert first["wall_seconds"] > second["wall_seconds"]  # the first one trained
    summary = (out / "summary.md").read_text()
    assert (f"- wall time {total:.1f} s over 2 invocations: {first['wall_seconds']:.1f} s + "
            f"{second['wall_seconds']:.1f} s; each job ran with the settings of the invocation "
            "that finished it:\n  1. started ") in summary
    assert ("1 worker process(es) of 1 torch thread(s); 0 of 1 jobs already finished" in summary
            and "1 worker process(es) of 2 torch thread(s); 1 of 1 jobs already finished"
            in summary)
    assert f"the run's wall time {total:.1f} s over 2 invocations" in capsys.readouterr().out


def test_an_invocation_killed_before_its_end_makes_the_total_a_lower_bound() -> None:
    invocations = [{"wall_seconds": 100.0, "ended": False}, {"wall_seconds": 50.0,
                                                             "ended": True},
                   {"wall_seconds": 0.25, "ended": True}]
    assert wall_time_words(invocations) == (
        "wall time at least 150.2 s over 3 invocations: 100.0 s + 50.0 s + 0.2 s (1 stopped "
        "before recording its end, counted to its last record)")
    assert wall_time_words(invocations[1:2]) == "wall time 50.0 s"


def test_an_experiment_rerun_sums_its_invocations(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["experiment", "drift", "--preset", "tiny", "--quiet", "--workers", "1", "--out",
            str(tmp_path)]
    assert main(argv) == 0
    assert main(argv) == 0  # again: every job is stored
    record = json.loads((tmp_path / "drift.json").read_text())
    first, second = record["invocations"]
    assert (first["jobs_stored_before"], second["jobs_stored_before"]) == (0, first["jobs"])
    assert record["seconds"] == pytest.approx(first["wall_seconds"] + second["wall_seconds"])
    words = wall_time_words(record["invocations"])
    assert words.startswith(f"wall time {record['seconds']:.1f} s over 2 invocations")
    assert f"- preset: **tiny**; {words}\n" in (tmp_path / "drift.md").read_text()
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"drift: 8 rows, {words} (this invocation {second['wall_seconds']:.1f} s) -> "
        f"{tmp_path / 'drift.md'}")
    marker = json.loads((tmp_path / "jobs" / "drift" / "run.json").read_text())
    assert marker["invocations"] == record["invocations"]


@pytest.mark.parametrize("command", ["experiment", "bench"])
def test_an_estimate_never_refuses_on_the_folders_contents(
    tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another seed's results in --out: the estimate still estimates, says that the run
    itself would be refused, and writes nothing."""
    if command == "experiment":
        argv = ["experiment", "drift", "--preset", "tiny", "--quiet", "--workers", "1"]
        monkeypatch.setattr("sharp.experiments.cli.print_estimates",
                            lambda *args: print("estimated duration 1 s"))
    else:
        argv = BENCH
        monkeypatch.setattr("sharp.cli.print_estimate",
                            lambda plan: print("estimated duration 1 s"))
    (tmp_path / ("drift.json" if command == "experiment" else "run.json")).write_text(
        json.dumps({"identity": {"seed": 5}}))
    before = sorted(tmp_path.iterdir())
    assert main([*argv, "--seed", "3", "--out", str(tmp_path), "--estimate"]) == 0
    printed = capsys.readouterr().out
    assert re.search(rf"note: the run itself \(without --estimate\) would be refused: "
                     rf"{re.escape(str(tmp_path))} holds .* of (another|an unknown) run", printed)
    assert printed.endswith("estimated duration 1 s\n") and sorted(tmp_path.iterdir()) == before


def test_the_notebook_kernels_invocation_is_the_commands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``sharp bench --notebook`` printed "wall time 15.7 s" while run.json and summary.md,
    written by the kernel, said 5.5 s and named the kernel's pid: the command hands its pid
    and start to the kernel, whose run_bench records them."""
    handed: dict[str, str] = {}

    def kernel(*args: object, **kwargs: object) -> None:
        handed[HANDED_OVER] = os.environ[HANDED_OVER]
        raise KeyboardInterrupt  # stop here: what the kernel would be given is known

    monkeypatch.setattr("sharp.explore.notebooks.execute_notebook", kernel)
    assert main(["bench", "--notebook", "--quiet", "--learners", "1", "--baselines",
                 "--segment", "600", "--slice", "100", "--out", str(tmp_path / "nb")]) == 130
    assert HANDED_OVER not in os.environ
    pid, started = handed[HANDED_OVER].split()
    assert int(pid) == os.getpid() and abs(float(started) - time.time()) < 60
    monkeypatch.setenv(HANDED_OVER, f"4242 {time.time() - 12.5!r}")
    record = Invocation("sharp bench").record()
    assert record["pid"] == 4242 and record["wall_seconds"] >= 12.5
