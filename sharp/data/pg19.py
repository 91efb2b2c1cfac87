"""PG-19 books through Hugging Face ``datasets``, from the hub or a local folder."""

from __future__ import annotations

import contextlib
import os
import socket
import urllib.parse
import warnings
from collections.abc import Iterable, Iterator
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from sharp.data.corpus import (
    SPLITS,
    Book,
    Corpus,
    cache_root,
    documents_frame,
    encode_books,
    open_token_cache,
    open_token_chars,
    read_utf8,
    tokenized_chunks,
    write_token_cache,
)
from sharp.data.vocab import TEXT8

if TYPE_CHECKING:
    from sharp.data.tokenizer import TextTokenizer

PG19_HUB_ID = "deepmind/pg19"
METADATA_COLUMNS = ("id", "short_book_title", "publication_date", "url")
"""Columns of PG-19's headerless ``metadata.csv``."""

_LAYOUT = (
    "a folder in PG-19 layout: {train,validation,test}/<book_id>.txt, optionally with a "
    "headerless metadata.csv (columns id, short_book_title, publication_date, url) for the "
    "books' titles and years"
)

#: How long :func:`_hub_unreachable` waits for the hub to accept a connection.
HUB_PROBE_SECONDS = 3.0

_PROXIES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def _looks_like_path(source: str) -> bool:
    """True for sources that can only be paths (hub ids are ``name`` or ``owner/name``)."""
    return source.startswith(("/", ".", "~")) or source.count("/") > 1 or "\\" in source


def _split_entries(split_dir: Path) -> tuple[list[Path], list[str]]:
    """What a split folder holds: its books and what is not a book. A book is a non-empty
    ``<book_id>.txt`` file directly in the folder (ordered by numeric id); anything else
    (other files such as README.md, subfolders, empty ``.txt`` files) is not."""
    books, other = [], []
    for entry in split_dir.iterdir():
        if entry.is_file() and entry.suffix == ".txt" and entry.stat().st_size > 0:
            books.append(entry)
        else:
            kind = ("an empty file" if entry.is_file() and entry.suffix == ".txt"
                    else "a folder" if entry.is_dir() else "not a .txt file")
            other.append(f"{entry.name} ({kind})")
    books.sort(
        key=lambda p: (not p.stem.isdigit(), int(p.stem) if p.stem.isdigit() else 0, p.stem))
    return books, sorted(other)


def _book_files(folder: Path, split: str, max_books: int | None) -> list[Path]:
    """The first ``max_books`` books of one split (:func:`_split_entries`), with a warning
    naming every entry of the split folder skipped as not a book. Raises
    FileNotFoundError without the split folder, ValueError when it holds no book."""
    split_dir = folder / split
    if not split_dir.is_dir():
        raise FileNotFoundError(f"{folder} has no {split}/ subfolder; expected {_LAYOUT}")
    files, skipped = _split_entries(split_dir)
    if skipped:
        entries = "entry" if len(skipped) == 1 else "entries"
        warnings.warn(f"{split_dir}: skipped {len(skipped)} {entries}"
                      f" that are not books (a book is a non-empty <book_id>.txt file): "
                      f"{', '.join(skipped)}", stacklevel=3)
    if not files:
        raise ValueError(f"{split_dir} holds no <book_id>.txt book; expected {_LAYOUT}")
    return files[:max_books]


def _read_metadata(folder: Path) -> dict[str, dict[str, Any]]:
    path = folder / "metadata.csv"
    if not path.is_file():
        return {}
    frame = pd.read_csv(
        path, header=None, names=list(METADATA_COLUMNS), dtype=str, keep_default_na=False
    )
    return {row["id"]: row for row in frame.to_dict("records")}


def _folder_rows(files: list[tuple[str, int, int]], folder: str) -> Iterator[dict[str, Any]]:
    """Generator for ``datasets.Dataset.from_generator``: one PG-19 record per book file.

    ``files`` holds (path, size, mtime_ns) so that the dataset fingerprint changes
    whenever a file does.
    """
    metadata = _read_metadata(Path(folder))
    for name, _size, _mtime in files:
        path = Path(name)
        meta = metadata.get(path.stem, {})
        date = str(meta.get("publication_date", "")).strip()
        yield {
            "id": path.stem,
            "short_book_title": meta.get("short_book_title", ""),
            "publication_date": int(date) if date.lstrip("-").isdigit() else None,
            "url": meta.get("url", ""),
            "text": read_utf8(path),
        }


def _folder_dataset(folder: Path, files: list[tuple[str, int, int]], hf_cache: Path) -> Any:
    """The books of ``files`` as a ``datasets.Dataset``. Raises the ValueError of a book
    that is not UTF-8 (:func:`~sharp.data.corpus.read_utf8`) as it is, not wrapped in
    datasets' generation error."""
    import datasets

    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "short_book_title": datasets.Value("string"),
            "publication_date": datasets.Value("int32"),
            "url": datasets.Value("string"),
            "text": datasets.Value("string"),
        }
    )
    try:
        return datasets.Dataset.from_generator(
            _folder_rows,
            features=features,
            gen_kwargs={"files": files, "folder": str(folder)},
            cache_dir=str(hf_cache),
        )
    except datasets.exceptions.DatasetGenerationError as err:
        if isinstance(err.__cause__, ValueError):
            raise err.__cause__ from None
        raise


@contextlib.contextmanager
def _datasets_progress(progress: bool) -> Iterator[None]:
    """Hugging Face ``datasets``' progress bars off inside the block unless ``progress``;
    their previous setting restored after it."""
    import datasets

    was_disabled = datasets.are_progress_bars_disabled()
    if not progress:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not progress and not was_disabled:
            datasets.enable_progress_bars()


def _hub_unreachable() -> str | None:
    """Why the Hugging Face hub cannot be reached, found within
    :data:`HUB_PROBE_SECONDS` by opening a connection to its endpoint (without it,
    ``datasets`` retries for about 25 s); None when it answers, in offline mode
    (``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE``: ``datasets`` then reads its cache
    without a request) and behind a proxy (not probed)."""
    import datasets
    from huggingface_hub import constants

    from sharp.data.tokenizer import _hub_offline

    if (_hub_offline() or datasets.config.HF_DATASETS_OFFLINE
            or any(os.environ.get(name) for name in _PROXIES)):
        return None
    endpoint = urllib.parse.urlsplit(constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=HUB_PROBE_SECONDS).close()
    except OSError as err:
        return f"no connection to {endpoint.hostname}:{port} within {HUB_PROBE_SECONDS:g} s: {err}"
    return None


def _unreachable(source: str, why: str) -> RuntimeError:
    return RuntimeError(
        f"the Hugging Face hub is unreachable ({why}), so PG-19 {source!r} cannot be loaded: "
        f"put a copy of PG-19 on disk as {_LAYOUT}, and give its path instead (sharp bench "
        "--corpus /path/to/pg19; in Python load_pg19(source='/path/to/pg19')); or, with "
        "PG-19 already in the Hugging Face cache, set HF_HUB_OFFLINE=1")


def _hub_dataset(source: str, split: str, max_books: int | None) -> Any:
    import datasets

    why = _hub_unreachable()
    if why is not None:
        raise _unreachable(source, why)
    try:
        dataset = datasets.load_dataset(source, split=split)
    except ConnectionError as err:
        raise _unreachable(source, str(err)) from err
    if max_books is not None:
        dataset = dataset.select(range(min(max_books, len(dataset))))
    return dataset


def _books(rows: Iterable[dict[str, Any]], split: str, source: str) -> Iterator[Book]:
    for index, row in enumerate(rows):
        url = row.get("url") or ""
        book_id = row.get("id") or url.rstrip("/").rsplit("/", 1)[-1] or str(index)
        yield Book(
            id=str(book_id),
            title=row.get("short_book_title") or "",
            year=row.get("publication_date"),
            split=split,
            text=row["text"],
            licence="public domain (Project Gutenberg)",
            source=url or source,
        )


def pg19_splits(source: str = PG19_HUB_ID) -> tuple[str, ...]:
    """The splits a PG-19 source has, in ``SPLITS`` order, found without reading or
    downloading any book.

    A local folder has the ``train/``, ``validation/`` and ``test/`` subfolders that hold
    books (non-empty ``<book_id>.txt`` files); a hub id has all three (PG-19's hub dataset
    does). Raises FileNotFoundError for a path that is not a folder, or a folder with no
    book in any split folder.
    """
    folder = Path(source).expanduser()
    if folder.is_dir():
        found = tuple(split for split in SPLITS
                      if (folder / split).is_dir() and _split_entries(folder / split)[0])
        if not found:
            raise FileNotFoundError(
                f"{folder} is a folder but holds no book: a corpus folder must be {_LAYOUT} "
                "(a book is a non-empty <book_id>.txt file); otherwise give the path of a "
                "UTF-8 text file or a corpus name (wiki, books, text8, pg19)")
        return found
    if _looks_like_path(source):
        raise FileNotFoundError(f"no folder {folder}; load_pg19 expects a hub id or {_LAYOUT}")
    return SPLITS


def load_pg19(
    source: str = PG19_HUB_ID,
    split: str | None = None,
    max_books: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    tokenizer: TextTokenizer | None = None,
) -> Corpus:
    """PG-19 as a book corpus (normalised to ``TEXT8``, one space between books; or, with
    a ``tokenizer``, its raw text as token ids with per-token character counts, a blank
    line between books, cached per tokenizer).

    ``split=None`` loads every split the source has (``pg19_splits``: train, then
    validation, then test, as ``Corpus.split`` expects), so the book protocol finds its
    held-out books; ``split="train"`` etc. loads one. ``source`` is a hub id
    (``datasets.load_dataset(source, split=...)``) or a local folder in PG-19 layout,
    read through ``datasets.Dataset.from_generator``; local books are non-empty
    ``<book_id>.txt`` files, ordered by numeric id, read as strict UTF-8 like every text
    path (anything else in a split folder is skipped with a warning naming it; a book with
    no letter a-z is left out with a warning). ``max_books`` keeps the first books of each
    split. The encoded splits are cached (``cache_dir``, else ``$SHARP_CACHE``, else
    ``~/.cache/sharp``) as one memory-mapped array keyed by the source's files (or the
    hub datasets' fingerprints), so later loads are instant. ``progress=False`` shows no
    progress bar (ours or ``datasets``'). Raises ValueError for a bad ``split`` /
    ``max_books``, a book that is not UTF-8 (naming the file and byte) or when no book
    has any letter, FileNotFoundError for a folder without the layout, and RuntimeError
    (saying how to use a local folder instead) when the hub is unreachable.
    """
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
    if max_books is not None and max_books < 1:
        raise ValueError(f"max_books must be a positive number or None, got {max_books}")
    splits = pg19_splits(source) if split is None else (split,)
    root = cache_root(cache_dir)
    folder = Path(source).expanduser()
    with _datasets_progress(progress):
        tokens, meta, chars = _load_cached(source, folder, splits, max_books, root, progress,
                                           tokenizer)
    if not meta["documents"]:
        what = "text" if tokenizer is not None else "letters a-z"
        raise ValueError(f"no book in the {'/'.join(splits)} split of {source} has {what}")
    documents = documents_frame(meta["documents"])
    return Corpus("pg19" if split is None else f"pg19:{split}", tokens,
                  TEXT8 if tokenizer is None else tokenizer, meta["sha256"], documents, chars)


def _load_cached(source: str, folder: Path, splits: tuple[str, ...], max_books: int | None,
                 root: Path, progress: bool, tokenizer: TextTokenizer | None
                 ) -> tuple[np.ndarray, dict[str, Any], np.ndarray | None]:
    """The cached tokens, metadata and (with a ``tokenizer``) per-token character counts
    of ``splits`` of ``source`` (a local folder or a hub id), encoded into the cache first
    if they are not there."""
    keyed = {} if tokenizer is None else tokenizer.identity()
    if folder.is_dir():
        files = {
            name: [
                (str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns)
                for p in _book_files(folder, name, max_books)
            ]
            for name in splits
        }
        meta_file = folder / "metadata.csv"
        meta_stat = None
        if meta_file.is_file():
            meta_stat = (meta_file.stat().st_size, meta_file.stat().st_mtime_ns)
        identity: dict[str, Any] = {"folder": files, "metadata": meta_stat, "splits": splits,
                                    **keyed}
        cached = open_token_cache(root, "pg19", identity)
        if cached is None:
            books = chain.from_iterable(
                _books(_folder_dataset(folder, files[name], root / "hf"), name, str(folder))
                for name in splits
            )
            cached = _encode(root, identity, books, progress, tokenizer)
    else:
        datasets = {name: _hub_dataset(source, name, max_books) for name in splits}
        identity = {
            "hub": source,
            "fingerprints": {name: data._fingerprint for name, data in datasets.items()},
            **keyed,
        }
        cached = open_token_cache(root, "pg19", identity)
        if cached is None:
            books = chain.from_iterable(
                _books(data, name, source) for name, data in datasets.items()
            )
            cached = _encode(root, identity, books, progress, tokenizer)
    tokens, meta = cached
    chars = None if tokenizer is None else open_token_chars(root, "pg19", identity)
    return tokens, meta, chars


def _encode(
    root: Path, identity: dict[str, Any], books: Iterable[Book], progress: bool,
    tokenizer: TextTokenizer | None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Encode ``books`` into the cache entry ``identity``: normalised to ``TEXT8``, or with
    ``tokenizer`` (token ids and per-token character counts)."""
    rows: list[dict[str, Any]] = []

    def chunks() -> Iterator[np.ndarray]:
        for ids, row in encode_books(books):
            if row is not None:
                rows.append(row)
            yield ids

    if tokenizer is None:
        return write_token_cache(root, "pg19", identity, chunks(), dtype=TEXT8.dtype,
                                 extra=lambda: {"documents": rows}, progress=progress)
    return write_token_cache(root, "pg19", identity, tokenized_chunks(books, tokenizer, rows),
                             dtype=tokenizer.dtype, extra=lambda: {"documents": rows},
                             progress=progress, chars=True)
