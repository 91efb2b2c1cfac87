"""The README's Python example (the block under "## The package") runs as written, on the
first few thousand tokens of its corpus."""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path

import sharp.data
from sharp.data import Corpus

README = Path(__file__).resolve().parents[1] / "README.md"
TOKENS = 3_000  # the corpus slice the example sees, so that it runs in a few seconds


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
