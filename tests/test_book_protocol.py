"""The book protocol (SPEC §6) on local PG-19 folders: held-out splits found, and every
split or book-length problem refused before any encoding or training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_config

import sharp.explore.notebooks
import sharp.runs.jobs as jobs
from sharp.cli import main
from sharp.data import TEXT8, Corpus, normalize_text8
from sharp.runs.benchmark import MIN_BOOK_TOKENS, book_benchmark, plan_books
from sharp.runs.registry import LearnerSpec

WINDOW = 4  # the quick preset's W


def _write_pg19(folder: Path, words: dict[str, int]) -> None:
    """One book per split, ``words[split]`` words of text each (PG-19 layout)."""
    vocabulary = np.array(["the", "whale", "sea", "ship", "and", "of", "captain"])
    for number, (split, count) in enumerate(words.items()):
        (folder / split).mkdir(parents=True)
        text = " ".join(vocabulary[np.random.default_rng(number).integers(0, 7, count)])
        (folder / split / f"{100 + number}.txt").write_text(text.capitalize() + ".\n")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SHARP_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "cache"


BENCH = ["bench", "--no-notebook", "--corpus", "./pg", "--segment", "5000", "--slice", "500",
         "--learners", "1", "--baselines", "--quiet"]


@pytest.mark.filterwarnings("ignore:only 1 training book")  # one book per split
def test_bench_on_a_local_pg19_folder_runs_the_book_protocol(cache: Path, tmp_path: Path) -> None:
    _write_pg19(tmp_path / "pg", {"train": 300, "validation": 200, "test": 150})
    assert main([*BENCH, "--out", "report"]) == 0
    results = pd.read_csv(tmp_path / "report" / "results.csv").set_index("slice")
    train_book = normalize_text8((tmp_path / "pg" / "train" / "100.txt").read_text())
    assert results.loc["forward", "train_tokens"] == len(train_book) - WINDOW
    # forward = the validation book (200 words, more than 500 tokens) cut at --slice
    assert results.loc["forward", "tokens"] == 500 - WINDOW
    assert results.loc["backward", "tokens"] == results.loc["current", "tokens"] == 500 - WINDOW
    assert json.loads((tmp_path / "report" / "run.json").read_text())["held_out"] == "validation"
    assert "forward = 1 held-out book of the validation split" in (
        tmp_path / "report" / "summary.md").read_text()


def test_book_report_states_the_books_it_used(cache: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """New-user finding: the summary claimed 5 books per slice though one was used, and a
    single training book makes backward and current the same book: say so, once (it was
    a raw Python warning with its source line, printed when planning and when running)."""
    _write_pg19(tmp_path / "pg", {"train": 300, "validation": 200})
    assert main([*BENCH, "--out", "report"]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if "warning" in line.lower()]
    assert warned == ["sharp bench: warning: only 1 training book(s) fit the budget, so the "
                      "backward and current slices share books and measure the same thing; "
                      "give a larger --segment (the budget) to train on more books"]
    with pytest.warns(RuntimeWarning, match="backward and current slices share books"):
        plan_books(_toy_books({"train": [300], "validation": [200]}), budget=1_000
                   ).warn_if_slices_coincide()  # the Python API keeps Python's warnings
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert summary.startswith("# Book protocol")
    assert ("1 training book in order up to 5,000 tokens, state reset at each book; backward = "
            "first 1 training book, current = last 1 training book, forward = 1 held-out book"
            ) in summary
    assert "mean ± sample std over 1 learner)" in summary


@pytest.mark.filterwarnings("ignore:only 1 training book")  # one book per split
def test_held_out_from_test_when_there_is_no_validation(cache: Path, tmp_path: Path) -> None:
    _write_pg19(tmp_path / "pg", {"train": 300, "test": 30})
    assert main([*BENCH, "--slice", "100", "--out", "report"]) == 0
    results = pd.read_csv(tmp_path / "report" / "results.csv").set_index("slice")
    assert results.loc["forward", "tokens"] == 100 - WINDOW
    assert json.loads((tmp_path / "report" / "run.json").read_text())["held_out"] == "test"
    assert "forward = 1 held-out book of the test split" in (
        tmp_path / "report" / "summary.md").read_text()


@pytest.mark.parametrize("splits", [{"train": 300}, {"validation": 300, "test": 300}])
def test_missing_splits_are_refused_before_any_encoding(
    cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], splits: dict[str, int]
) -> None:
    _write_pg19(tmp_path / "pg", splits)
    assert main([*BENCH, "--out", "report"]) == 2
    error = capsys.readouterr().err
    missing = "held-out books (a validation or test split)" if "train" in splits else (
        "training books (a train split)")
    assert f"the book protocol needs {missing}, but corpus './pg' has only the splits" in error
    assert not cache.exists()  # nothing was read, encoded or cached
    assert not (tmp_path / "report").exists()


def test_book_protocol_on_a_text_without_books_is_refused(
    cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*BENCH, "--corpus", "wiki", "--protocol", "books"]) == 2
    assert "the book protocol needs a book corpus" in capsys.readouterr().err


def test_training_books_too_short_are_named_before_training(
    cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _write_pg19(tmp_path / "pg", {"train": 10, "validation": 300})

    def no_notebook(*args: object, **kwargs: object) -> None:
        raise AssertionError("a notebook kernel was started")

    monkeypatch.setattr(sharp.explore.notebooks, "execute_notebook", no_notebook)
    for notebook in ([], ["--no-notebook"]):
        argv = [a for a in BENCH if a != "--no-notebook"] + notebook
        assert main([*argv, "--out", "report"]) == 2
        error = capsys.readouterr().err
        assert (
            f"the book protocol trains on books of at least {MIN_BOOK_TOKENS} tokens, but no "
            "train book of corpus 'pg19' is that long: '100' ("
        ) in error
        assert not (tmp_path / "report").exists()


def _toy_books(lengths: dict[str, list[int]]) -> Corpus:
    rows, parts, offset = [], [], 0
    for split, sizes in lengths.items():
        for i, size in enumerate(sizes):
            parts.append(np.arange(size) % 7)
            rows.append({"id": f"{split}-{i}", "title": "", "year": 1900, "split": split,
                         "start": offset, "stop": offset + size, "licence": "", "source": ""})
            offset += size
    tokens = np.concatenate(parts).astype(np.uint8)
    return Corpus("toy", tokens, TEXT8, "x", pd.DataFrame(rows))


def test_short_books_message_says_which_and_for_what(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_learner(spec: LearnerSpec) -> None:
        raise AssertionError("a learner was built")

    monkeypatch.setattr(jobs, "build_learner", no_learner)
    spec = LearnerSpec("sharp", tiny_config().to_dict(), "tiny")
    short_train = _toy_books({"train": [60, 99, 12], "validation": [300]})
    with pytest.raises(ValueError) as info:
        book_benchmark([spec], short_train, budget=1_000, progress=False)
    assert str(info.value) == (
        "the book protocol trains on books of at least 100 tokens, but no train book of corpus "
        "'toy' is that long: 'train-0' (60 tokens), 'train-1' (99 tokens), 'train-2' "
        "(12 tokens); use longer books"
    )
    short_held = _toy_books({"train": [300], "validation": [50, 80]})
    with pytest.raises(ValueError, match=r"evaluates held-out books of at least 100 tokens, but "
                       r"no validation book of corpus 'toy' is that long: 'validation-0' \(50 "
                       r"tokens\), 'validation-1' \(80 tokens\)"):
        book_benchmark([spec], short_held, budget=1_000, progress=False)
    fine = _toy_books({"train": [300, 40, 200], "test": [20, 150]})
    with pytest.raises(ValueError, match=r"cut to 3 tokens .* W=3 needs at least 4"):
        plan_books(fine, budget=1_000, max_eval_tokens=3, window=3)
    with pytest.raises(ValueError, match="budget \\(50 tokens\\) is below the 100"):
        plan_books(fine, budget=50)
    plan = plan_books(fine, budget=1_000, max_eval_tokens=120, window=3)
    assert plan.train_ids == ["train-0", "train-2"]  # the 40-token book is not streamed
    assert plan.forward_ids == ["test-1"] and plan.held_out == "test"
    assert [len(book) for book in plan.slices["forward"]] == [120]
