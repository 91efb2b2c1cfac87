"""The device check (tools/device_check.py) runs on the CPU with tiny sizes, so that it
cannot rot before someone runs it on a GPU, and imports nothing a GPU machine set up for
training may lack."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import torch

from sharp.perf.device import Figure, Plan, main

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
