"""The package's shape: which folders may import which, and a core free of notebook-only
dependencies (DESIGN.md: folders named by role; the engines import on a bare GPU machine)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sharp"

#: What each folder of the package may import from ``sharp`` (prefixes).
ALLOWED = {
    "model": ("sharp.config", "sharp.protocol", "sharp.engines", "sharp.model"),
    "engines": ("sharp.config", "sharp.protocol", "sharp.engines", "sharp.model"),
}
#: Front ends: only the CLI, explore/, perf/ and notebooks import these.
FRONT_ENDS = ("sharp.cli", "sharp.explore.widgets", "sharp.explore.notebooks", "sharp.perf")
CORE = ("model", "engines", "baselines", "data", "runs", "experiments")
#: Imported only by notebooks, widgets and reports, never by the engines or the model.
NOTEBOOK_ONLY = ("plotly", "ipywidgets", "anywidget", "papermill", "nbformat", "nbconvert",
                 "datasets")


def _sharp_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name for name in names if name == "sharp" or name.startswith("sharp.")}


def _modules(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


@pytest.mark.parametrize("folder", sorted(ALLOWED))
def test_model_and_engines_import_only_what_they_may(folder: str) -> None:
    wrong = {
        f"{path.relative_to(PACKAGE)} imports {name}"
        for path in _modules(folder) for name in _sharp_imports(path)
        if not name.startswith(ALLOWED[folder])
    }
    assert not wrong, sorted(wrong)


@pytest.mark.parametrize("folder", CORE)
def test_core_never_imports_front_ends(folder: str) -> None:
    wrong = {
        f"{path.relative_to(PACKAGE)} imports {name}"
        for path in _modules(folder) for name in _sharp_imports(path)
        if name.startswith(FRONT_ENDS)
    }
    assert not wrong, sorted(wrong)


def test_core_imports_without_notebook_dependencies() -> None:
    """A GPU machine has torch but no plotly, papermill or datasets: the learners, engines,
    runner and checkpoints still import there."""
    blocked = ", ".join(repr(name) for name in NOTEBOOK_ONLY)
    code = (
        f"import sys\nfor name in ({blocked}):\n    sys.modules[name] = None\n"
        "import sharp, sharp.model.learner, sharp.engines.fused, sharp.baselines, sharp.data\n"
        "import sharp.runs.stream, sharp.runs.registry, sharp.runs.checkpoints\n"
        "import sharp.runs.benchmark\n"
        "from sharp import Sharp, preset\n"
        "Sharp(preset('quick', layers=2, hidden=8, embedding=4, engine='torch'))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False, cwd=PACKAGE.parent)
    assert done.returncode == 0, done.stderr[-2000:]
