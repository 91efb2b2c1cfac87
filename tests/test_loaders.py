"""Loaders that touch the disk: text8 (download, verify, cache), PG-19, load_corpus."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import tracemalloc
import urllib.error
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

import sharp.data.corpus as corpus_module
import sharp.data.pg19 as pg19
from sharp.data import (
    TEXT8,
    corpus_splits,
    load_corpus,
    load_pg19,
    load_text8,
    normalize_text8,
    tokens_sha256,
)
from sharp.data.corpus import Corpus, cache_root

FAKE_TEXT8 = b" anarchism originated as a term of abuse first used against early" * 50


def _zip_bytes(tmp_path: Path, member: bytes = FAKE_TEXT8) -> bytes:
    path = tmp_path / "made.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("text8", member)
    return path.read_bytes()


def _no_download(url: str, destination: Path) -> None:
    raise AssertionError(f"the test tried to download {url}")


def _fake_sizes(zip_data: bytes) -> dict[str, int]:
    return {"expected_zip_bytes": len(zip_data), "expected_bytes": len(FAKE_TEXT8)}


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith(".part"))


def test_text8_loads_a_good_zip_and_caches_it(tmp_path: Path) -> None:
    data = _zip_bytes(tmp_path)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "text8.zip").write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    corpus = load_text8(cache, download=_no_download, expected_zip_sha256=sha, **_fake_sizes(data))
    assert corpus.name == "text8"
    assert corpus.vocab == TEXT8
    assert TEXT8.decode(corpus.tokens) == FAKE_TEXT8.decode()
    assert corpus.sha256 == tokens_sha256(np.asarray(corpus.tokens))
    assert isinstance(corpus.tokens, np.memmap)
    (npy,) = (cache / "tokens").glob("text8-*.npy")
    built = npy.stat().st_mtime_ns
    corpus.tokens[:] = 0  # copy-on-write: the cache file must not change
    again = load_text8(cache, download=_no_download, **_fake_sizes(data))
    assert npy.stat().st_mtime_ns == built  # opened, not rebuilt
    assert again.sha256 == corpus.sha256
    assert TEXT8.decode(again.tokens) == FAKE_TEXT8.decode()


def test_text8_downloads_through_the_injected_function(tmp_path: Path) -> None:
    data = _zip_bytes(tmp_path)
    calls = []

    def fake_download(url: str, destination: Path) -> None:
        calls.append(url)
        assert destination.parent == tmp_path / "cache"
        destination.write_bytes(data)

    corpus = load_text8(tmp_path / "cache", download=fake_download, **_fake_sizes(data))
    assert calls == ["http://mattmahoney.net/dc/text8.zip"]
    assert (tmp_path / "cache" / "text8.zip").read_bytes() == data
    assert len(corpus) == len(FAKE_TEXT8)
    assert _leftovers(tmp_path / "cache") == []


def test_text8_uses_an_extracted_file(tmp_path: Path) -> None:
    (tmp_path / "text8").write_bytes(FAKE_TEXT8)
    corpus = load_text8(tmp_path, download=_no_download, expected_bytes=len(FAKE_TEXT8))
    assert TEXT8.decode(corpus.tokens[:10]) == " anarchism"


def test_text8_wrong_size_is_a_clear_error(tmp_path: Path) -> None:
    data = _zip_bytes(tmp_path)
    (tmp_path / "text8.zip").write_bytes(data[:-10])
    with pytest.raises(ValueError) as info:
        load_text8(tmp_path, download=_no_download, **_fake_sizes(data))
    message = str(info.value)
    assert str(tmp_path / "text8.zip") in message
    assert f"{len(data) - 10:,} bytes" in message
    assert f"{len(data):,}" in message
    assert "Delete it" in message


def test_text8_wrong_hash_is_a_clear_error(tmp_path: Path) -> None:
    data = _zip_bytes(tmp_path)
    (tmp_path / "text8.zip").write_bytes(data)
    with pytest.raises(ValueError) as info:
        load_text8(
            tmp_path, download=_no_download, expected_zip_sha256="0" * 64, **_fake_sizes(data)
        )
    message = str(info.value)
    assert hashlib.sha256(data).hexdigest() in message
    assert "0" * 64 in message
    assert "re-download" in message


def test_text8_default_size_is_the_real_one(tmp_path: Path) -> None:
    (tmp_path / "text8.zip").write_bytes(_zip_bytes(tmp_path))
    with pytest.raises(ValueError, match="31,344,016"):
        load_text8(tmp_path, download=_no_download)


def test_text8_offline_says_where_to_put_the_zip(tmp_path: Path) -> None:
    def offline(url: str, destination: Path) -> None:
        destination.write_bytes(b"partial")
        raise urllib.error.URLError("Name or service not known")

    with pytest.raises(RuntimeError) as info:
        load_text8(tmp_path, download=offline)
    message = str(info.value)
    assert str(tmp_path / "text8.zip") in message
    assert "by hand" in message
    assert "http://mattmahoney.net/dc/text8.zip" in message
    assert list(tmp_path.iterdir()) == []  # no partial file left behind


def test_text8_damaged_download_is_removed(tmp_path: Path) -> None:
    data = _zip_bytes(tmp_path)
    cache = tmp_path / "cache"

    def truncated(url: str, destination: Path) -> None:
        destination.write_bytes(data[:100])

    with pytest.raises(RuntimeError, match="damaged"):
        load_text8(cache, download=truncated, **_fake_sizes(data))
    assert list(cache.iterdir()) == []


def test_text8_truncated_cache_entry_is_rebuilt(tmp_path: Path) -> None:
    data = _zip_bytes(tmp_path)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "text8.zip").write_bytes(data)
    first = load_text8(cache, download=_no_download, **_fake_sizes(data))
    expected = np.array(first.tokens)
    del first
    (npy,) = (cache / "tokens").glob("text8-*.npy")
    full = npy.read_bytes()
    npy.write_bytes(full[: len(full) // 2])
    with pytest.warns(UserWarning, match="incomplete or corrupt"):
        rebuilt = load_text8(cache, download=_no_download, **_fake_sizes(data))
    assert np.array_equal(rebuilt.tokens, expected)
    assert npy.read_bytes() == full


def test_a_token_cache_changed_in_place_is_rebuilt_and_a_copied_one_kept(
        tmp_path: Path) -> None:
    """A damaged cache started a run that then blamed the user's text ("token id 255 ...
    is outside the vocabulary"), or, damaged within the vocabulary, went unnoticed."""
    (tmp_path / "text8").write_bytes(FAKE_TEXT8)
    def load() -> Corpus:
        return load_text8(tmp_path, download=_no_download, expected_bytes=len(FAKE_TEXT8))

    expected = np.array(load().tokens)
    (npy,) = (tmp_path / "tokens").glob("text8-*.npy")
    full = npy.read_bytes()
    damaged = bytearray(full)
    damaged[-3] = (damaged[-3] + 1) % 27  # still a letter: only the recorded hash tells
    npy.write_bytes(bytes(damaged))
    with pytest.warns(UserWarning, match=r"incomplete or corrupt \(its tokens changed since "
                                         r"it was written \(sha256 differs\)\); rebuilding"):
        assert np.array_equal(load().tokens, expected)
    assert npy.read_bytes() == full
    os.utime(npy, ns=(1, 1))  # as a copy without its times: same tokens, another time
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.array_equal(load().tokens, expected)
    (meta,) = (tmp_path / "tokens").glob("text8-*.json")
    assert json.loads(meta.read_text())["mtime_ns"] == 1  # hashed once, then trusted


def test_text8_corrupt_cache_metadata_is_rebuilt(tmp_path: Path) -> None:
    (tmp_path / "text8").write_bytes(FAKE_TEXT8)
    load_text8(tmp_path, download=_no_download, expected_bytes=len(FAKE_TEXT8))
    (meta,) = (tmp_path / "tokens").glob("text8-*.json")
    meta.write_text('{"length": ')
    with pytest.warns(UserWarning, match="incomplete or corrupt"):
        corpus = load_text8(tmp_path, download=_no_download, expected_bytes=len(FAKE_TEXT8))
    assert len(corpus) == len(FAKE_TEXT8)


def test_text8_rejects_text_outside_the_alphabet(tmp_path: Path) -> None:
    (tmp_path / "text8").write_bytes(b"Not Text8")
    with pytest.raises(ValueError, match="not text8"):
        load_text8(tmp_path, download=_no_download, expected_bytes=9)
    assert list((tmp_path / "tokens").iterdir()) == []


def test_cache_root_follows_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHARP_CACHE", str(tmp_path / "env"))
    assert cache_root() == tmp_path / "env"
    assert cache_root(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("SHARP_CACHE")
    assert cache_root() == Path.home() / ".cache" / "sharp"


BOOKS = {
    ("train", "12"): "Twelve: the SECOND book, in order.\n",
    ("train", "3"): "Three -- the first book!\n",
    ("validation", "7"): "Seven is held out.",
    ("test", "9"): "Nine, tested.",
}


@pytest.fixture
def pg19_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "pg19"
    for (split, book_id), text in BOOKS.items():
        (folder / split).mkdir(parents=True, exist_ok=True)
        (folder / split / f"{book_id}.txt").write_text(text)
    (folder / "metadata.csv").write_text(
        "3,The First,1850,http://www.gutenberg.org/ebooks/3\n"
        "12,The Second,1900,http://www.gutenberg.org/ebooks/12\n"
        "7,Held Out,1910,http://www.gutenberg.org/ebooks/7\n"
        "9,Tested,1800,http://www.gutenberg.org/ebooks/9\n"
    )
    return folder


def test_pg19_local_folder(pg19_folder: Path, tmp_path: Path) -> None:
    corpus = load_pg19(str(pg19_folder), split="train", cache_dir=tmp_path / "cache")
    first, second = normalize_text8(BOOKS["train", "3"]), normalize_text8(BOOKS["train", "12"])
    assert TEXT8.decode(corpus.tokens) == f"{first} {second}"
    docs = corpus.documents
    assert docs is not None
    assert docs["id"].tolist() == ["3", "12"]
    assert docs["title"].tolist() == ["The First", "The Second"]
    assert docs["year"].tolist() == [1850, 1900]
    assert docs["split"].tolist() == ["train", "train"]
    assert docs["start"].tolist() == [0, len(first) + 1]
    assert docs["stop"].tolist() == [len(first), len(first) + 1 + len(second)]
    assert docs["source"].tolist()[0] == "http://www.gutenberg.org/ebooks/3"
    assert corpus.split("train").sha256 == corpus.sha256
    only_first = load_pg19(str(pg19_folder), "train", max_books=1, cache_dir=tmp_path / "cache")
    assert only_first.documents["id"].tolist() == ["3"]
    test = load_corpus(str(pg19_folder), split="test", cache_dir=tmp_path / "cache")
    assert TEXT8.decode(test.tokens) == "nine tested"


def test_pg19_folder_loads_every_split_for_held_out_books(
    pg19_folder: Path, tmp_path: Path
) -> None:
    assert corpus_splits(str(pg19_folder)) == ("train", "validation", "test")
    corpus = load_corpus(str(pg19_folder), cache_dir=tmp_path / "cache")
    assert corpus.name == "pg19"
    assert corpus.documents["split"].tolist() == ["train", "train", "validation", "test"]
    assert TEXT8.decode(corpus.split("validation").tokens) == "seven is held out"
    assert TEXT8.decode(corpus.split("test").tokens) == "nine tested"
    train = load_pg19(str(pg19_folder), split="train", cache_dir=tmp_path / "cache")
    assert np.array_equal(corpus.split("train").tokens, train.tokens)
    assert load_pg19(str(pg19_folder), cache_dir=tmp_path / "cache").sha256 == corpus.sha256
    for split in ("validation", "test"):
        for book in (pg19_folder / split).iterdir():
            book.unlink()
    assert corpus_splits(str(pg19_folder)) == ("train",)
    assert corpus_splits("pg19") == ("train", "validation", "test")
    assert corpus_splits("books") == ("train", "validation", "test")
    assert corpus_splits("wiki") is None


def test_pg19_rejects_bad_arguments(pg19_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="split must be one of"):
        load_pg19(str(pg19_folder), split="dev", cache_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="PG-19 layout"):
        load_pg19(str(tmp_path / "missing"), cache_dir=tmp_path)


def test_pg19_hub_offline_is_a_clear_error(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "SHARP_CACHE": str(tmp_path / "cache"),
    }
    code = "from sharp.data import load_pg19; load_pg19('deepmind/pg19', split='validation')"
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert time.monotonic() - started < 30
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("RuntimeError: the Hugging Face hub is unreachable")
    assert "load_pg19(source='/path/to/pg19'" in last_line
    assert "(sharp bench --corpus /path/to/pg19;" in last_line  # a CLI user's way too


def test_pg19_hub_unreachable_fails_fast(tmp_path: Path) -> None:
    """Without network, datasets retried for 25 s (12 lines of log) before the error."""
    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf"),
           "SHARP_CACHE": str(tmp_path / "cache")}  # port 9 (discard): refused at once
    for name in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", *pg19._PROXIES):
        env.pop(name, None)
    code = "from sharp.data import load_pg19; load_pg19('deepmind/pg19', split='validation')"
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert time.monotonic() - started < 20
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("RuntimeError: the Hugging Face hub is unreachable (no "
                                "connection to 127.0.0.1:9 within 3 s: ")
    assert lines[-1].endswith("or, with PG-19 already in the Hugging Face cache, set "
                              "HF_HUB_OFFLINE=1")
    assert not any("Retrying" in line for line in lines)


def test_load_corpus_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHARP_CACHE", str(tmp_path / "cache"))
    text_file = tmp_path / "notes.txt"
    text_file.write_text("Hello, World! 42\n", encoding="utf-8")
    corpus = load_corpus(str(text_file))
    assert corpus.name == "notes"
    assert TEXT8.decode(corpus.tokens) == "hello world"
    assert load_corpus("wiki").sha256 == tokens_sha256(load_corpus("wiki").tokens)
    with pytest.raises(ValueError) as info:
        load_corpus("wikipedia")
    for name in ("'wiki'", "'books'", "'text8'", "'pg19'"):
        assert name in str(info.value)
    for path in ("nonexist.txt", "data/pg"):  # were "unknown corpus"
        for load in (load_corpus, corpus_splits):
            with pytest.raises(FileNotFoundError, match=rf"^no such file or folder: {path!r}; "
                               "give the path of a UTF-8 text file, or the path of a folder "
                               r"in PG-19 layout \(\{train,validation,test\}/<id>.txt, "
                               r"metadata.csv optional\), or a corpus name \('wiki', "):
                load(path)
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8 text \\(byte 3"):
        load_corpus(str(latin1))


def test_text_file_streams_in_chunks_into_the_token_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # NFD accents, a ligature and 2-4 byte UTF-8 characters straddle the 7-byte blocks
    text = ("Été -- e\u0301te\u0301, ﬁn; 𝔊 ß!! " * 40) + "tail..."
    path = tmp_path / "story.txt"
    path.write_text(text, encoding="utf-8")
    monkeypatch.setattr(corpus_module, "TEXT_CHUNK_BYTES", 7)
    corpus = load_corpus(str(path), cache_dir=tmp_path / "cache")
    assert TEXT8.decode(corpus.tokens) == normalize_text8(text)
    assert corpus.sha256 == tokens_sha256(np.asarray(corpus.tokens))
    assert isinstance(corpus.tokens, np.memmap)
    (npy,) = (tmp_path / "cache" / "tokens").glob("text-*.npy")

    def no_encoding(pieces: object) -> None:
        raise AssertionError("the file was encoded again")

    monkeypatch.setattr(corpus_module, "normalize_text8_stream", no_encoding)
    copy = tmp_path / "same-text-other-name.txt"
    copy.write_bytes(path.read_bytes())
    again = load_corpus(str(copy), cache_dir=tmp_path / "cache")  # keyed by content
    assert again.name == "same-text-other-name"
    assert again.sha256 == corpus.sha256
    assert list((tmp_path / "cache" / "tokens").glob("text-*.npy")) == [npy]


def test_text_file_bad_utf8_names_the_byte(tmp_path: Path) -> None:
    path = tmp_path / "mixed.txt"
    path.write_bytes(b"fine text " * 100_000 + b"caf\xe9")
    with pytest.raises(ValueError, match="not UTF-8 text \\(byte 1,000,003"):
        load_corpus(str(path), cache_dir=tmp_path / "cache")
    assert list((tmp_path / "cache" / "tokens").glob("*.npy")) == []  # nothing half-written
    empty = tmp_path / "digits.txt"
    empty.write_text("1 2 3 ...")
    with pytest.raises(ValueError, match="no letters a-z"):
        load_corpus(str(empty), cache_dir=tmp_path / "cache")


def test_text_file_peak_memory_is_a_small_multiple_of_the_file(tmp_path: Path) -> None:
    words = np.array(["The", "whale,", "été", "ﬁsh", "Sea", "and", "of", "42;", "naïve\n", "a"])
    path = tmp_path / "big.txt"
    path.write_text(" ".join(words[np.random.default_rng(0).integers(0, 10, 1_200_000)]))
    size = path.stat().st_size
    assert size > 5_000_000
    tracemalloc.start()
    try:
        corpus = load_corpus(str(path), cache_dir=tmp_path / "cache")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(corpus) > 4_000_000
    # the whole-file loader peaked at ~28 bytes per character; chunks keep a few MB
    assert peak < 2 * size, f"peak {peak:,} bytes for a file of {size:,} bytes"


def test_pg19_books_follow_the_utf8_rule_of_every_text_path(
    pg19_folder: Path, tmp_path: Path
) -> None:
    book = pg19_folder / "train" / "12.txt"
    book.write_bytes(b"Twelve at the caf\xe9.\n")  # Latin-1, not UTF-8
    with pytest.raises(ValueError, match=r"12.txt is not UTF-8 text \(byte 17: invalid "
                       r"continuation byte\); convert it to UTF-8"):
        load_corpus(str(pg19_folder), cache_dir=tmp_path / "cache")
    assert list((tmp_path / "cache" / "tokens").glob("*.npy")) == []  # nothing half-written
    text_file = tmp_path / "same.txt"
    text_file.write_bytes(book.read_bytes())
    with pytest.raises(ValueError, match=r"same.txt is not UTF-8 text \(byte 17: invalid "):
        load_corpus(str(text_file), cache_dir=tmp_path / "cache")


def test_pg19_says_what_in_a_split_folder_is_not_a_book(
    pg19_folder: Path, tmp_path: Path
) -> None:
    (pg19_folder / "train" / "README.md").write_text("about these books")
    (pg19_folder / "train" / "5.txt").write_text("")
    (pg19_folder / "train" / "extra").mkdir()
    (pg19_folder / "validation" / "8.txt").write_text("1850 -- 1900.")  # no letter a-z
    with pytest.warns(UserWarning) as caught:
        corpus = load_corpus(str(pg19_folder), cache_dir=tmp_path / "cache")
    messages = [str(w.message) for w in caught]
    assert any("skipped 3 entries that are not books (a book is a non-empty <book_id>.txt "
               "file): 5.txt (an empty file), README.md (not a .txt file), extra (a folder)"
               in m for m in messages), messages
    assert any("book '8' (validation" in m and "no letters a-z; left out" in m
               for m in messages), messages
    assert corpus.documents["id"].tolist() == ["3", "12", "7", "9"]
    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    (empty / "train" / "1.txt").write_text("")
    for folder in (empty, tmp_path / "cache"):  # a folder without any book, e.g. /tmp
        with pytest.raises(FileNotFoundError, match="is a folder but holds no book: a corpus "
                           "folder must be a folder in PG-19 layout"):
            corpus_splits(str(folder))


def test_quiet_loads_show_no_progress_bar(
    pg19_folder: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    text_file = tmp_path / "story.txt"
    text_file.write_text("A short story. " * 100)
    load_corpus(str(text_file), cache_dir=tmp_path / "cache", progress=False)
    load_corpus(str(pg19_folder), cache_dir=tmp_path / "cache", progress=False)
    err = capfd.readouterr().err
    assert "encoding" not in err and "Generating" not in err and "%" not in err
    import datasets

    assert not datasets.are_progress_bars_disabled()  # restored after the load
    load_corpus(str(pg19_folder), split="test", cache_dir=tmp_path / "cache2")
    assert "encoding pg19" in capfd.readouterr().err
