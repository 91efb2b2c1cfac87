"""The corpus bundled inside the package: a Wikipedia excerpt and public-domain books.

Built by ``python -m tools.build_bundle`` (which documents every source); the
files live in ``sharp/data/bundle/`` and need no download.
"""

from __future__ import annotations

import functools
import hashlib
import io
import lzma
import os
import tarfile
from collections.abc import Iterator
from importlib import resources
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from sharp.data.corpus import (
    SPLITS,
    Book,
    Corpus,
    book_corpus,
    cache_root,
    documents_frame,
    open_token_cache,
    open_token_chars,
    tokenized_chunks,
    tokens_sha256,
    write_token_cache,
)
from sharp.data.vocab import TEXT8

if TYPE_CHECKING:
    from sharp.data.tokenizer import TextTokenizer

_REBUILD = (
    "the bundled corpus in sharp/data/bundle/ is damaged or incomplete: reinstall sharp, "
    "or rebuild it with `python -m tools.build_bundle`"
)


def _read_bundle_file(name: str) -> bytes:
    try:
        return resources.files("sharp.data").joinpath("bundle", name).read_bytes()
    except FileNotFoundError as err:
        raise FileNotFoundError(f"missing {name}: {_REBUILD}") from err


@functools.cache
def _provenance() -> pd.DataFrame:
    frame = pd.read_csv(
        io.BytesIO(_read_bundle_file("PROVENANCE.csv")),
        dtype={"id": str, "split": str, "source_version": str, "sha256": str},
        keep_default_na=False,
    )
    frame["year"] = frame["year"].astype("Int64")
    return frame


def provenance() -> pd.DataFrame:
    """One row per stored text: id, title, year, split (empty for the wiki),
    source_package, source_version, licence, chars, sha256 (of the stored UTF-8 text)
    and file (where the text is stored in the bundle)."""
    return _provenance().copy()


@functools.cache
def _book_archive() -> dict[str, bytes]:
    files = {}
    with tarfile.open(fileobj=io.BytesIO(_read_bundle_file("books.tar.xz")), mode="r:xz") as tar:
        for member in tar.getmembers():
            handle = tar.extractfile(member)
            if handle is not None:
                files[member.name] = handle.read()
    return files


def stored_text(doc_id: str) -> str:
    """The stored (uncompressed, not normalised) text of one bundled document.

    ``doc_id`` is an ``id`` of ``provenance()``: ``"wiki"`` or a book id. The text is
    checked against the sha256 recorded in PROVENANCE.csv.
    """
    rows = _provenance().set_index("id")
    if doc_id not in rows.index:
        raise KeyError(f"no bundled document {doc_id!r}; ids are listed by provenance()")
    row = rows.loc[doc_id]
    archive, _, member = str(row["file"]).partition(":")
    if member:
        data = _book_archive().get(member)
        if data is None:
            raise FileNotFoundError(f"{archive} has no member {member}: {_REBUILD}")
    else:
        data = lzma.decompress(_read_bundle_file(archive))
    if hashlib.sha256(data).hexdigest() != row["sha256"]:
        raise RuntimeError(f"{row['file']} does not match its sha256 in PROVENANCE.csv: {_REBUILD}")
    return data.decode("utf-8")


@functools.cache
def _wiki() -> tuple[np.ndarray, str]:
    tokens = TEXT8.encode(stored_text("wiki"))
    tokens.flags.writeable = False
    return tokens, tokens_sha256(tokens)


def load_wiki() -> Corpus:
    """The bundled Wikipedia text (text8 style, about 3M characters over ``TEXT8``).

    Every call returns its own copy of the tokens.
    """
    tokens, sha = _wiki()
    return Corpus("wiki", tokens.copy(), TEXT8, sha)


def _bundled_books() -> Iterator[Book]:
    """The bundled books (raw text), in split order as PROVENANCE.csv lists them."""
    rows = _provenance()
    for row in rows[rows["split"].isin(SPLITS)].itertuples():
        yield Book(id=row.id, title=row.title, year=int(row.year), split=row.split,
                   text=stored_text(row.id), licence=row.licence,
                   source=f"{row.source_package} {row.source_version}")


@functools.cache
def _books() -> Corpus:
    corpus = book_corpus("books", _bundled_books())
    corpus.tokens.flags.writeable = False
    return corpus


def _token_books(tokenizer: TextTokenizer, cache_dir: str | os.PathLike[str] | None,
                 progress: bool) -> Corpus:
    """The bundled books' raw text encoded with ``tokenizer``, from the token cache (keyed
    by the books' sha256 and the tokenizer's), encoded into it first if absent."""
    rows = _provenance()
    rows = rows[rows["split"].isin(SPLITS)]
    identity = {"bundled_books": [[i, sha] for i, sha in zip(rows["id"], rows["sha256"],
                                                             strict=True)],
                **tokenizer.identity()}
    root = cache_root(cache_dir)
    cached = open_token_cache(root, "books", identity)
    if cached is None:
        documents: list[dict] = []
        chunks = tokenized_chunks(_bundled_books(), tokenizer, documents)
        cached = write_token_cache(root, "books", identity, chunks, dtype=tokenizer.dtype,
                                   chars=True,
                                   extra=lambda: {"documents": documents}, progress=progress)
    tokens, meta = cached
    return Corpus("books", tokens, tokenizer, meta["sha256"], documents_frame(meta["documents"]),
                  open_token_chars(root, "books", identity))


def load_books(split: str | None = None, *, tokenizer: TextTokenizer | None = None,
               cache_dir: str | os.PathLike[str] | None = None, progress: bool = True
               ) -> Corpus:
    """The bundled books, normalised with ``normalize_text8``, as a PG-19 style corpus.

    Books follow each other in split order (train, validation, test), one space
    apart; ``documents`` gives each book's offsets. ``split`` selects one split.
    Every call returns its own copy of the tokens.

    With a ``tokenizer`` the books' raw text is encoded instead (a blank line between
    books, per-token character counts in ``chars``), cached under ``cache_dir`` (else
    ``$SHARP_CACHE``, else ``~/.cache/sharp``) as memory-mapped arrays and read from there
    the next time (a progress bar while encoding when ``progress``).
    """
    if tokenizer is not None:
        corpus = _token_books(tokenizer, cache_dir, progress)
        return corpus if split is None else corpus.split(split)
    books = _books()
    corpus = Corpus(books.name, books.tokens.copy(), TEXT8, books.sha256, books.documents.copy())
    return corpus if split is None else corpus.split(split)
