"""The corpus bundled inside the package: a Wikipedia excerpt and public-domain books.

Built by ``python -m tools.build_bundle`` (which documents every source); the
files live in ``sharp/data/bundle/`` and need no download.
"""

from __future__ import annotations

import functools
import hashlib
import io
import lzma
import tarfile
from importlib import resources

import numpy as np
import pandas as pd

from sharp.data.corpus import SPLITS, Book, Corpus, book_corpus, tokens_sha256
from sharp.data.vocab import TEXT8

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


@functools.cache
def _books() -> Corpus:
    rows = _provenance()
    rows = rows[rows["split"].isin(SPLITS)]
    corpus = book_corpus(
        "books",
        (
            Book(
                id=row.id,
                title=row.title,
                year=int(row.year),
                split=row.split,
                text=stored_text(row.id),
                licence=row.licence,
                source=f"{row.source_package} {row.source_version}",
            )
            for row in rows.itertuples()
        ),
    )
    corpus.tokens.flags.writeable = False
    return corpus


def load_books(split: str | None = None) -> Corpus:
    """The bundled books, normalised with ``normalize_text8``, as a PG-19 style corpus.

    Books follow each other in split order (train, validation, test), one space
    apart; ``documents`` gives each book's offsets. ``split`` selects one split.
    Every call returns its own copy of the tokens.
    """
    books = _books()
    corpus = Corpus(books.name, books.tokens.copy(), TEXT8, books.sha256, books.documents.copy())
    return corpus if split is None else corpus.split(split)
