"""The package's shape: which folders may import which, and a core free of notebook-only
dependencies (DESIGN.md: folders named by role; the engines import on a bare GPU machine)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sharp"

#: What each part of the package may import from ``sharp`` (modules and their submodules).
ALLOWED = {
    "model": ("sharp.config", "sharp.protocol", "sharp.engines", "sharp.model"),
    "engines": ("sharp.config", "sharp.protocol", "sharp.engines", "sharp.model"),
}
#: Front ends: only the CLI, explore/, perf/ and notebooks import these. ``sharp.explore.plots``
#: is not one: it imports nothing from ``sharp`` and draws the figures the reports embed.
FRONT_ENDS = ("sharp.cli", "sharp.__main__", "sharp.experiments.cli", "sharp.explore.widgets",
              "sharp.explore.notebooks", "sharp.explore.dreams", "sharp.explore.hierarchy",
              "sharp.perf")
CORE = ("__init__.py", "config.py", "protocol.py", "model", "engines", "baselines", "data",
        "runs", "experiments")
#: Imported only by notebooks, widgets and reports, never by the engines or the model.
NOTEBOOK_ONLY = ("plotly", "ipywidgets", "anywidget", "papermill", "nbformat", "nbconvert",
                 "datasets")


def module_name(path: Path) -> str:
    """``sharp/runs/stream.py`` -> ``sharp.runs.stream``; a package's ``__init__.py`` is the
    package itself."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sharp_imports(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every ``sharp`` name the Python ``source`` of ``module`` imports, wherever the import
    sits: relative imports resolved, and ``from X import a`` counted as both ``X`` and
    ``X.a`` (``a`` may be a submodule), as are ``importlib.import_module("...")`` calls
    with a literal name."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                origin = ".".join([*base, node.module] if node.module else base)
            else:
                origin = node.module or ""
            names.add(origin)
            names.update(f"{origin}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif (isinstance(node, ast.Call) and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"):
            names.add(node.args[0].value)
    return {name for name in names if name == "sharp" or name.startswith("sharp.")}


def within(name: str, prefixes: tuple[str, ...]) -> bool:
    """True if ``name`` is one of the modules ``prefixes`` or inside one of them."""
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def _imports(path: Path) -> set[str]:
    return sharp_imports(path.read_text(), module_name(path), path.name == "__init__.py")


def _modules(part: str) -> list[Path]:
    """The Python files of a folder of the package, or the one module ``part`` names."""
    path = PACKAGE / part
    return [path] if path.suffix == ".py" else sorted(path.rglob("*.py"))


def test_the_import_scan_sees_every_form_of_import() -> None:
    source = (
        "import sharp.perf.throughput as t\n"
        "from sharp import cli\n"
        "from sharp.explore import widgets\n"
        "from ..experiments.cli import main\n"
        "from . import stream\n"
        "def late():\n"
        "    from sharp.explore.notebooks import execute_notebook\n"
        "    importlib.import_module('sharp.explore.hierarchy')\n"
    )
    found = sharp_imports(source, "sharp.runs.bench")
    assert {"sharp.perf.throughput", "sharp.cli", "sharp.explore.widgets",
            "sharp.experiments.cli", "sharp.runs.stream", "sharp.explore.notebooks",
            "sharp.explore.hierarchy"} <= found
    assert sharp_imports("from .gate import RecallGate", "sharp.model", is_package=True) == {
        "sharp.model.gate", "sharp.model.gate.RecallGate"}
    assert not within("sharp.client", ("sharp.cli",)) and within("sharp.cli.main", ("sharp.cli",))


@pytest.mark.parametrize("folder", sorted(ALLOWED))
def test_model_and_engines_import_only_what_they_may(folder: str) -> None:
    wrong = {
        f"{path.relative_to(PACKAGE)} imports {name}"
        for path in _modules(folder) for name in _imports(path)
        if not within(name, ALLOWED[folder])
    }
    assert not wrong, sorted(wrong)


@pytest.mark.parametrize("part", CORE)
def test_core_never_imports_front_ends(part: str) -> None:
    wrong = {
        f"{path.relative_to(PACKAGE)} imports {name}"
        for path in _modules(part) for name in _imports(path)
        if within(name, FRONT_ENDS)
    }
    assert not wrong, sorted(wrong)


def test_every_module_is_checked() -> None:
    """A new top-level module or folder of the package is sorted into the core or the
    front ends here, not left unchecked."""
    front = {"cli.py", "__main__.py", "explore", "perf"}
    parts = {path.name for path in PACKAGE.iterdir()
             if path.suffix == ".py" or (path / "__init__.py").is_file()}
    assert parts == set(CORE) | front, sorted(parts ^ (set(CORE) | front))


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
