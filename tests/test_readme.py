"""The README's "## The package" section: its Python example runs as written, on the first
few thousand tokens of its corpus, and its tree and module table match the package; the
Quick start and reports/README.md name the files `make bench` writes."""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path

import sharp.data
from sharp.data import Corpus
from sharp.runs.lock import LOCK_FILE
from sharp.runs.report import REPORT_FILES

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TOKENS = 3_000  # the corpus slice the example sees, so that it runs in a few seconds


def package_section() -> str:
    """README.md from "## The package" up to its Python example."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("\n## The package"):]
    return section[: section.index("```python")]


def readme_example() -> str:
    """The first ```python block after the "## The package" heading of README.md."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("\n## The package"):]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README.md has no python example under '## The package'"
    return match.group(1)


def test_readme_example_runs(monkeypatch, capsys) -> None:
    load_corpus = sharp.data.load_corpus

    def first_tokens(name: str, *args: object, **kwargs: object) -> Corpus:
        corpus = copy.copy(load_corpus(name, *args, **kwargs))  # never the cached object
        corpus.tokens = corpus.tokens[:TOKENS]
        return corpus

    monkeypatch.setattr(sharp.data, "load_corpus", first_tokens)
    exec(compile(readme_example(), str(README), "exec"), {"__name__": "readme"})
    printed = capsys.readouterr().out.split()
    assert len(printed) == 2 and all(math.isfinite(float(v)) for v in printed)
    assert 0 < float(printed[0]) < 5 and 0 < float(printed[1]) < 5  # bits per character


def test_the_tree_names_every_folder_and_tool() -> None:
    tree = package_section().split("```")[1]
    folders = set(re.findall(r"^  (\w+)/ ", tree, re.M))
    package = {path.parent.name for path in (ROOT / "sharp").glob("*/__init__.py")}
    assert folders == package, sorted(folders ^ package)
    modules = set(re.findall(r"^  (\w+\.py) ", tree, re.M))
    assert modules == {"config.py", "protocol.py", "cli.py"}
    tools = tree[tree.index("\ntools/"):]
    missing = [path.name for path in (ROOT / "tools").glob("*.py") if path.name not in tools]
    assert not missing, missing


def test_the_module_table_covers_the_package_and_names_only_real_modules() -> None:
    table = package_section().split("| module | what it is |")[1]
    named = set(re.findall(r"`(sharp(?:\.\w+)+)`", table))
    stale = [name for name in named
             if not (ROOT / f"{name.replace('.', '/')}.py").is_file()
             and not (ROOT / name.replace(".", "/") / "__init__.py").is_file()]
    assert not stale, stale
    top = {"sharp", "sharp.__main__", "sharp.cli", "sharp.config", "sharp.protocol"}  # the tree's
    modules = {".".join(path.relative_to(ROOT).with_suffix("").parts)
               for path in (ROOT / "sharp").rglob("*.py") if path.name != "__init__.py"}
    unnamed = [module for module in sorted(modules - top)
               if not any(module == name or module.startswith(name + ".") for name in named)]
    assert not unnamed, unnamed


def test_the_bench_folder_is_described_with_every_file_make_bench_leaves() -> None:
    """The Quick start and the table of reports/README.md name exactly the files `make bench`
    writes (the report's files, ``jobs/`` and the run lock), so neither misses a new one."""
    written = {*REPORT_FILES, LOCK_FILE, "jobs/"}
    text = README.read_text(encoding="utf-8")
    quick = text[text.index("\n## Quick start"):text.index("\n## Notebooks")]
    quick = quick[quick.index("It writes"):quick.index("reports/README.md")]
    assert set(re.findall(r"`([\w.]+/?)`", quick)) == written
    reports = (ROOT / "reports" / "README.md").read_text(encoding="utf-8")
    table = reports[reports.index("| file | how it is produced |"):]
    table = table[:table.index("\n\n")]
    named = {name.split("<")[0] for name in re.findall(r"^\| `([^`]+)`", table, re.M)}
    assert named == written
