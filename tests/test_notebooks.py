"""Executing notebooks (papermill), their offline HTML, and `sharp bench` through 05."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest

from sharp.cli import main
from sharp.explore.notebooks import NOTEBOOKS, NotebookError, execute_notebook, notebook_path

NAMES = ["01_data", "02_wake", "03_sleep", "04_hierarchy", "05_evaluation"]


def small_notebook(path: Path, body: str) -> Path:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell("height: int = 1  # a parameter",
                                  metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(body),
    ]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}
    nbformat.write(notebook, path)
    return path


def test_notebooks_are_committed_clean_and_parameterised() -> None:
    for name in NAMES:
        notebook = nbformat.read(notebook_path(name), as_version=4)
        assert notebook.cells[0].cell_type == "markdown"
        assert notebook.cells[0].source.startswith("# "), f"{name} opens with a title"
        parameters = notebook.cells[1]
        assert parameters.metadata.get("tags") == ["parameters"], name
        assert "interactive: bool = True" in parameters.source, name
        for line in parameters.source.splitlines():
            assert ": " in line.split("=")[0] and "#" in line, f"{name}: untyped {line!r}"
        code = [c for c in notebook.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), \
            f"{name} must be committed without outputs"
        assert any("assert " in c.source for c in code), f"{name} checks what it shows"


def test_progress_bars_of_a_headless_run_reach_the_terminal(tmp_path: Path, capfd,
                                                            monkeypatch) -> None:
    monkeypatch.delenv("SHARP_PROGRESS", raising=False)
    source = small_notebook(tmp_path / "bars.ipynb", (
        "from sharp.runs.progress import tqdm\n"
        "for _ in tqdm(range(height), desc='relayed bar'):\n"
        "    pass"))
    execute_notebook(source, tmp_path / "quiet", {"height": 3}, html=False)
    assert "relayed bar" not in capfd.readouterr().err
    execute_notebook(source, tmp_path / "loud", {"height": 3}, progress=True, html=False)
    assert "relayed bar: 100%" in capfd.readouterr().err
    assert "SHARP_PROGRESS" not in os.environ


def test_execute_injects_parameters_and_renders_offline_html(tmp_path: Path) -> None:
    source = small_notebook(tmp_path / "figure.ipynb", (
        "import plotly.graph_objects as go\n"
        "print('height', height)\n"
        "go.Figure(go.Bar(y=[1, height]))"))
    run = execute_notebook(source, tmp_path / "out", {"height": 7})
    executed = nbformat.read(run.notebook, as_version=4)
    assert "height 7" in executed.cells[-1].outputs[0]["text"]
    assert run.html is not None
    page = run.html.read_text()
    assert page.count("plotly.js v") == 1, "plotly.js must be inlined exactly once"
    assert "Plotly.newPlot" in page
    assert not list((tmp_path / "out").glob(".*part*"))


def test_a_failing_cell_names_the_notebook_and_the_cell(tmp_path: Path) -> None:
    source = small_notebook(tmp_path / "broken.ipynb", "assert height > 5, 'too small'")
    with pytest.raises(NotebookError) as error:
        execute_notebook(source, tmp_path / "out", html=False)
    message = str(error.value)
    assert "broken.ipynb" in message and "In [" in message and "too small" in message
    assert "assert height" in message
    assert (tmp_path / "out" / "broken.ipynb").is_file()


def test_notebook_path_resolution() -> None:
    assert notebook_path("05_evaluation") == NOTEBOOKS / "05_evaluation.ipynb"
    with pytest.raises(FileNotFoundError, match="no-notebook"):
        notebook_path("99_missing")


def test_bench_runs_the_evaluation_notebook_like_the_plain_path(tmp_path: Path) -> None:
    text = tmp_path / "corpus.txt"
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran"]
    text.write_text(" ".join(np.random.default_rng(0).choice(words, 1_500)))
    common = ["bench", "--corpus", str(text), "--segment", "1200", "--slice", "200",
              "--learners", "2", "--workers", "1", "--quiet", "--baselines",
              "--set", "hidden=16",
              "--set", "embedding=8", "--set", "layers=3", "--set", "sleep_every=500",
              "--set", "sleep_steps=17", "--baselines", "lstm"]
    assert main([*common, "--no-notebook", "--out", str(tmp_path / "plain")]) == 0
    assert main([*common, "--out", str(tmp_path / "nb")]) == 0
    for name in ("results.csv", "curves.csv", "summary.md", "figures.html",
                 "05_evaluation.ipynb", "05_evaluation.html"):
        assert (tmp_path / "nb" / name).stat().st_size > 0, name
    plain = pd.read_csv(tmp_path / "plain" / "results.csv")
    notebook = pd.read_csv(tmp_path / "nb" / "results.csv")
    columns = ["learner", "segment", "slice", "bits", "accuracy", "tokens", "sleeps"]
    pd.testing.assert_frame_equal(plain[columns], notebook[columns])
    executed = nbformat.read(tmp_path / "nb" / "05_evaluation.ipynb", as_version=4)
    injected = next(c for c in executed.cells
                    if "injected-parameters" in c.metadata.get("tags", []))
    assert "segment = 1200" in injected.source and "interactive = False" in injected.source
    summary = (tmp_path / "nb" / "summary.md").read_text()
    assert "- command: `sharp " in summary and '"hidden": [' in summary
    assert "Plotly.newPlot" in (tmp_path / "nb" / "05_evaluation.html").read_text()


def test_bench_reports_a_failing_notebook_cell(tmp_path: Path, capsys,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(*args: object, **kwargs: object) -> None:
        raise NotebookError("notebook 05_evaluation.ipynb failed at In [4] (...): ValueError")

    monkeypatch.setattr("sharp.explore.notebooks.execute_notebook", failing)
    assert main(["bench", "--quiet", "--baselines", "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "sharp bench: error: notebook 05_evaluation.ipynb failed at In [4]" in error
