"""The device check (tools/device_check.py) runs on the CPU with tiny sizes, so that it
cannot rot before someone runs it on a GPU, and imports nothing a GPU machine set up for
training may lack."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import torch

import sharp.perf.device as device_check
from sharp.perf.device import Figure, Plan, main, run_logged
from sharp.runs.registry import BASELINE_KINDS

ROOT = Path(__file__).resolve().parents[1]
TINY = Plan(sharp=("text8-small",), members=(1, 2),
            overrides={"layers": 3, "hidden": 16, "embedding": 8, "tag_buffer": 3,
                       "sleep_steps": 17},
            baselines=("rnn", "transformer"), baseline_preset="quick", steps=4, warmup=2,
            eval_tokens=3_000, baseline_eval_tokens=500)


def test_the_device_check_measures_every_figure_on_the_cpu(capsys) -> None:
    assert main(["--device", "cpu", "--no-tests"], plan=TINY) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("machine: cpu") and "torch" in lines[0]
    text = "\n".join(lines)
    for expected in ("SHARP text8-small wake, 1 stream, cpu fused engine",
                     "SharpEnsemble text8-small M=2 wake", "tokens/s", "steps/s",
                     "sleep of M=2 (3 tags each, 17 replay steps)",
                     "evaluation (3,000 tokens)", "target ≥ 1,000,000:",
                     "rnn (quick size) wake, 1 stream", "transformer (quick size) evaluation"):
        assert expected in text, expected


def test_the_groups_with_the_issues_targets_come_first() -> None:
    order = [group.what for group in device_check.groups(device_check.FULL, torch.device("cpu"))]
    assert order[:4] == ["SharpEnsemble text8 M=9 wake", "SharpEnsemble text8 M=9 sleep",
                         "SharpEnsemble text8-small M=64 wake", "SHARP text8 evaluation"]
    kinds = len(BASELINE_KINDS)
    assert [what.split()[0] for what in order[4 : 4 + kinds]] == list(BASELINE_KINDS)
    assert all(what.endswith("ensemble M=9 wake") for what in order[4 : 4 + kinds])
    assert order[4 + kinds] == "SHARP text8 wake, 1 stream"
    assert len(order) == len(set(order)) == 2 * (1 + 3 * 2) + 1 + 2 * kinds


def test_a_failing_figure_group_is_reported_and_the_next_groups_still_run(
        capsys, monkeypatch, tmp_path) -> None:
    def broken(*args: object) -> Figure:
        raise RuntimeError("CUDA out of memory. Tried to allocate 2 GiB\nsecond line")

    monkeypatch.setattr(device_check, "ensemble_sleep", broken)
    out = tmp_path / "check.txt"
    assert main(["--device", "cpu", "--no-tests", "--out", str(out)], plan=TINY) == 1
    lines = capsys.readouterr().out.splitlines()
    failed = [line for line in lines if line.startswith("FAILED")]
    assert failed == [f"FAILED SharpEnsemble text8-small M={m} sleep: RuntimeError: CUDA out of "
                      "memory. Tried to allocate 2 GiB" for m in (1, 2)]
    after = lines[lines.index(failed[-1]):]
    assert any("in broken" in line for line in after)  # the traceback's last frame
    assert any(line.startswith("rnn (quick size) wake, 1 stream") for line in after)
    assert any(line.startswith("  (SharpEnsemble text8-small M=2 sleep: ") for line in lines)
    assert lines[-1].startswith("summary: ") and "FAILED: SharpEnsemble text8-small M=1 " \
        "sleep | SharpEnsemble text8-small M=2 sleep;" in lines[-1]
    assert lines[-1].endswith("exit code 1") and "pytest not run" in lines[-1]
    assert out.read_text(encoding="utf-8").splitlines() == lines
    assert not (tmp_path / "check.txt.partial").exists()


def test_a_budget_of_zero_skips_every_group_and_still_runs_pytest(capsys, tmp_path) -> None:
    out = tmp_path / "check.txt"
    assert main(["--device", "cpu", "--budget", "0", "--out", str(out)], plan=TINY) == 0
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines == capsys.readouterr().out.splitlines()
    skipped = [line for line in lines if line.endswith(": over the --budget of 0 s")]
    assert len(skipped) == len(device_check.groups(TINY, torch.device("cpu")))
    assert skipped[0] == "SKIPPED SHARP text8-small evaluation: over the --budget of 0 s"
    text = "\n".join(lines)
    assert "-m cuda" in text and "skipped" in text  # pytest's output, in the file too
    assert "pytest passed (exit 0) in" in text
    assert lines[-1].startswith("summary: 0 figures; SKIPPED: ")
    assert lines[-1].endswith("exit code 0")


def test_no_group_runs_once_cuda_is_unusable(capsys, monkeypatch) -> None:
    monkeypatch.setattr(device_check, "release", lambda device: False)
    assert main(["--device", "cpu", "--no-tests"], plan=TINY) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].startswith("  (SHARP text8-small evaluation: ")
    assert lines[3].startswith("CUDA is unusable in this process now (a sticky error")
    skipped = [line for line in lines if line.startswith("SKIPPED ")]
    assert len(skipped) == len(device_check.groups(TINY, torch.device("cpu"))) - 1
    assert all(line.endswith(": CUDA is unusable after an earlier error") for line in skipped)


def test_a_command_past_its_timeout_is_killed_with_what_it_printed_kept() -> None:
    lines: list[str] = []
    script = "import time; print('started', flush=True); time.sleep(60)"
    began = time.perf_counter()
    assert run_logged([sys.executable, "-c", script], ROOT, {}, 2.0, lines.append) is None
    assert lines == ["started"] and time.perf_counter() - began < 30
    assert run_logged([sys.executable, "-c", "print(1); raise SystemExit(3)"], ROOT, {}, 30.0,
                      lines.append) == 3
    assert lines == ["started", "1"]


def test_a_figure_says_whether_its_target_is_met() -> None:
    assert Figure("a", 5.0, "s", 10.0, higher=False).met
    assert not Figure("b", 5.0, "tokens/s", 10.0).met
    assert Figure("c", 1.0, "tokens/s").met is None


def test_the_device_check_refuses_cuda_where_there_is_none(capsys, monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["--no-tests"]) == 2
    assert "has no CUDA" in capsys.readouterr().err


def test_the_device_check_imports_nothing_a_training_machine_may_lack() -> None:
    blocker = (
        "import importlib.abc, sys\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] in {'pandas', 'plotly', 'tqdm', 'datasets', 'papermill'}:\n"
        "            raise ImportError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import sharp.perf.device\n"
    )
    done = subprocess.run([sys.executable, "-c", blocker], cwd=ROOT, capture_output=True,
                          text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr


def test_the_cuda_tests_collect_where_only_a_training_machine_s_packages_are() -> None:
    """tests/test_cuda.py and conftest.py, and what they import, collect without the
    packages a GPU machine set up for training lacks (found absent, as there)."""
    absent = "'ray', 'plotly', 'ipywidgets', 'anywidget', 'papermill', 'nbformat', 'nbval', " \
        "'datasets', 'playwright'"
    script = (
        "import sys\n"
        "from importlib.machinery import PathFinder\n"
        "class Absent(PathFinder):\n"
        "    @classmethod\n"
        "    def find_spec(cls, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {{{absent}}}:\n"
        "            return None\n"
        "        return super().find_spec(name, path, target)\n"
        "sys.meta_path[:] = [Absent if f is PathFinder else f for f in sys.meta_path]\n"
        "import pytest\n"
        "sys.exit(pytest.main(['--collect-only', '-q', '-o', 'addopts=', '-p',\n"
        "                      'no:cacheprovider', '-m', 'cuda', 'tests/test_cuda.py']))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin",
                                          "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "test_graphed_wake_and_replay_steps_equal_eager_ones_over_500_steps" in done.stdout


def test_sharp_bench_writes_its_report_without_figures_where_plotly_is_missing(
        tmp_path, monkeypatch) -> None:
    from sharp.cli import main as sharp_main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "plotly" else real(name, *args))
    out = tmp_path / "bench"
    code = sharp_main(["bench", "--no-notebook", "--quiet", "--corpus", "wiki", "--segment",
                       "300", "--slice", "100", "--learners", "1", "--baselines", "rnn",
                       "--workers", "1", "--out", str(out)])
    assert code == 0
    assert (out / "results.csv").exists() and not (out / "figures.html").exists()
    assert "no `figures.html`: plotly is not installed" in (out / "summary.md").read_text()
