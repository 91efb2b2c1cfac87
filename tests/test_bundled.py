"""The bundled corpus: alphabet, provenance, book splits."""

from __future__ import annotations

import hashlib
import io
import lzma
import tarfile
import warnings
from importlib import resources

import numpy as np
import pandas as pd
import pytest
import torch

from sharp.data import (
    TEXT8,
    load_books,
    load_corpus,
    load_wiki,
    normalize_text8,
    provenance,
    stored_text,
)
from sharp.data.corpus import SPLITS

BUNDLE = resources.files("sharp.data").joinpath("bundle")
NOVELS = ("austen-", "melville-")


def _stored_files() -> dict[str, bytes]:
    """Every stored text, read straight from the bundle files (not through sharp.data)."""
    files = {"wiki.txt.xz": lzma.decompress(BUNDLE.joinpath("wiki.txt.xz").read_bytes())}
    raw = io.BytesIO(BUNDLE.joinpath("books.tar.xz").read_bytes())
    with tarfile.open(fileobj=raw, mode="r:xz") as archive:
        for member in archive.getmembers():
            handle = archive.extractfile(member)
            assert handle is not None, member.name
            files[f"books.tar.xz:{member.name}"] = handle.read()
    return files


def test_wiki_uses_exactly_the_27_symbols() -> None:
    wiki = load_wiki()
    assert wiki.vocab == TEXT8
    assert wiki.tokens.dtype == np.uint8
    assert int(wiki.tokens.max()) < 27
    assert (np.bincount(wiki.tokens, minlength=27) > 0).all()
    assert 2_800_000 < len(wiki) < 3_300_000


def test_stored_files_match_provenance() -> None:
    rows = provenance()
    files = _stored_files()
    assert set(files) == {*rows["file"], "books.tar.xz:metadata.csv"}
    for row in rows.itertuples():
        data = files[row.file]
        assert len(data.decode("utf-8")) == row.chars, row.id
        assert hashlib.sha256(data).hexdigest() == row.sha256, row.id
    bundle_files = ("wiki.txt.xz", "books.tar.xz", "PROVENANCE.csv", "ATTRIBUTION.md")
    assert sum(len(BUNDLE.joinpath(name).read_bytes()) for name in bundle_files) < 12_000_000


def test_books_metadata_is_pg19_layout() -> None:
    rows = provenance()
    books = rows[rows["split"] != ""]
    metadata = pd.read_csv(
        io.BytesIO(_stored_files()["books.tar.xz:metadata.csv"]),
        header=None,
        names=["id", "short_book_title", "publication_date", "url"],
        dtype={"id": str},
    )
    assert metadata["id"].tolist() == books["id"].tolist()
    assert metadata["short_book_title"].tolist() == books["title"].tolist()
    expected_files = [f"books.tar.xz:{r.split}/{r.id}.txt" for r in books.itertuples()]
    assert books["file"].tolist() == expected_files


def test_book_splits_are_disjoint_and_non_empty() -> None:
    rows = provenance()
    books = rows[rows["split"] != ""]
    assert set(books["split"]) == set(SPLITS)
    assert books["id"].is_unique
    ids = {split: set(books.loc[books["split"] == split, "id"]) for split in SPLITS}
    assert not ids["train"] & ids["validation"]
    assert not ids["train"] & ids["test"]
    assert not ids["validation"] & ids["test"]
    novels = [i for i in books["id"] if i.startswith(NOVELS)]
    assert len(novels) >= 7
    assert any(i.startswith(NOVELS) for i in ids["test"])
    for split in SPLITS:
        part = load_books(split)
        assert set(part.documents["id"]) == ids[split]
        assert len(part) > 100_000


def test_books_corpus_documents_and_offsets() -> None:
    corpus = load_books()
    docs = corpus.documents
    assert docs is not None
    assert int(corpus.tokens.max()) < 27
    assert docs["start"].iloc[0] == 0
    assert docs["stop"].iloc[-1] == len(corpus)
    assert (docs["start"].iloc[1:].to_numpy() == docs["stop"].iloc[:-1].to_numpy() + 1).all()
    assert (corpus.tokens[docs["stop"].iloc[:-1].to_numpy()] == 0).all()
    for doc in docs.iloc[[0, -1]].itertuples():
        expected = normalize_text8(stored_text(doc.id))
        assert TEXT8.decode(corpus.tokens[doc.start : doc.stop]) == expected
    joined = np.concatenate(
        [piece for split in SPLITS for piece in (load_books(split).tokens, np.zeros(1, np.uint8))]
    )[:-1]
    assert np.array_equal(joined, corpus.tokens)


def test_split_offsets_are_relative_to_the_split() -> None:
    test = load_books("test")
    assert test.name == "books:test"
    first = test.documents.iloc[0]
    assert first["start"] == 0
    assert TEXT8.decode(test.tokens[: first["stop"]]) == normalize_text8(stored_text(first["id"]))
    assert load_corpus("books", split="test").sha256 == test.sha256


def test_wiki_has_no_splits() -> None:
    with pytest.raises(ValueError, match="no documents"):
        load_wiki().split("train")
    with pytest.raises(ValueError, match="no split 'dev'"):
        load_books().split("dev")


def test_loaded_tokens_are_private_copies() -> None:
    wiki = load_wiki()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns about read-only arrays
        assert torch.as_tensor(wiki.tokens[:9]).tolist() == TEXT8.encode("anarchism").tolist()
    wiki.tokens[:9] = 0
    assert TEXT8.decode(load_wiki().tokens[:9]) == "anarchism"
    books = load_books()
    books.tokens[:] = 0
    assert load_books().tokens.any()
