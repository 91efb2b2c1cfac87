"""Corpora as token arrays, their on-disk cache, and the one entry point ``load_corpus``."""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import itertools
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from sharp.data.normalize import NORMALIZATION_VERSION, normalize_text8, normalize_text8_stream
from sharp.data.vocab import TEXT8, Vocabulary
from sharp.runs.checkpoints import atomic_path, atomic_write_bytes
from sharp.runs.progress import tqdm

if TYPE_CHECKING:
    from sharp.data.tokenizer import TextTokenizer

SPLITS = ("train", "validation", "test")
"""Book-corpus splits, in the order their documents are concatenated."""

DOCUMENT_COLUMNS = ("id", "title", "year", "split", "start", "stop", "licence", "source")
"""Columns of ``Corpus.documents``; ``start``/``stop`` are token offsets into ``tokens``."""

CORPUS_NAMES = ("wiki", "books", "text8", "pg19")

_CACHE_FORMAT = 1

TEXT_CHUNK_BYTES = 1 << 18
"""Bytes of a local text file read, normalised and encoded at a time (bounds peak memory)."""


def tokens_sha256(tokens: np.ndarray) -> str:
    """Hex sha256 of the raw bytes of a token array (in its stored dtype)."""
    return hashlib.sha256(np.ascontiguousarray(tokens).view(np.uint8)).hexdigest()


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in blocks of ``TEXT_CHUNK_BYTES``."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(TEXT_CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Corpus:
    """A token sequence over a vocabulary.

    ``sha256`` is always the sha256 of the token bytes (``tokens_sha256``), so two
    corpora with the same hash hold the same sequence. Book corpora also carry
    ``documents`` (columns ``DOCUMENT_COLUMNS``): one row per book with its token
    offsets ``start``/``stop``; books follow each other in split order
    (train, validation, test), separated by one space token (by the tokens of a blank
    line, ``BOOK_SEPARATOR``, in a token corpus).

    A token corpus (``vocab`` a :class:`~sharp.data.tokenizer.TextTokenizer`) also carries
    ``chars``: each token's number of characters of the raw text (in NFC), shape (T,), which
    bits per character are computed from; None means one character per token.
    """

    name: str
    tokens: np.ndarray
    vocab: Vocabulary | TextTokenizer
    sha256: str
    documents: pd.DataFrame | None = None
    chars: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.tokens.ndim != 1:
            raise ValueError(f"corpus tokens must be 1-D, got shape {self.tokens.shape}")
        if self.chars is not None and self.chars.shape != self.tokens.shape:
            raise ValueError(f"corpus chars {self.chars.shape} must match its tokens "
                             f"{self.tokens.shape}: one character count per token")

    @property
    def characters(self) -> int:
        """Characters of the text the tokens encode (their number without ``chars``)."""
        return len(self) if self.chars is None else int(self.chars.sum(dtype=np.int64))

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def split(self, name: str) -> Corpus:
        """The sub-corpus of one split (train/validation/test) of a book corpus."""
        if self.documents is None:
            raise ValueError(
                f"corpus {self.name!r} has no documents, so it has no splits; "
                "only book corpora ('books', 'pg19') can be split"
            )
        docs = self.documents[self.documents["split"] == name]
        if docs.empty:
            available = sorted(set(self.documents["split"]))
            raise ValueError(f"corpus {self.name!r} has no split {name!r}; available: {available}")
        start, stop = int(docs["start"].min()), int(docs["stop"].max())
        others = self.documents[self.documents["split"] != name]
        if ((others["start"] < stop) & (others["stop"] > start)).any():
            raise ValueError(
                f"the documents of split {name!r} in corpus {self.name!r} are interleaved "
                "with other splits; store each split's documents contiguously"
            )
        tokens = self.tokens[start:stop]
        docs = docs.assign(start=docs["start"] - start, stop=docs["stop"] - start)
        return Corpus(
            name=f"{self.name}:{name}",
            tokens=tokens,
            vocab=self.vocab,
            sha256=tokens_sha256(tokens),
            documents=docs.reset_index(drop=True),
            chars=None if self.chars is None else self.chars[start:stop],
        )


@dataclass(frozen=True)
class Book:
    """One raw book before normalisation (the unit of PG-19 style corpora)."""

    id: str
    title: str
    year: int | None
    split: str
    text: str
    licence: str = "public domain"
    source: str = ""


def encode_books(books: Iterable[Book]) -> Iterator[tuple[np.ndarray, dict[str, Any] | None]]:
    """Normalise and encode books one by one (``normalize_text8``, ``TEXT8``).

    Yields ``(tokens, row)`` pairs whose tokens, concatenated, form the corpus: each
    book yields its tokens with its ``documents`` row; between two books a single
    space token is yielded with ``row=None``. Books that normalise to nothing (no
    letter a-z) are left out, with a warning naming them.
    """
    offset = 0
    separator = TEXT8.encode(" ")
    for book in books:
        ids = TEXT8.encode(normalize_text8(book.text))
        if ids.size == 0:
            warnings.warn(f"book {book.id!r} ({book.split}, {book.source or 'no source'}) has "
                          "no letters a-z; left out of the corpus", stacklevel=2)
            continue
        if offset:
            yield separator, None
            offset += 1
        row = {
            "id": book.id,
            "title": book.title,
            "year": book.year,
            "split": book.split,
            "start": offset,
            "stop": offset + int(ids.size),
            "licence": book.licence,
            "source": book.source,
        }
        offset += int(ids.size)
        yield ids, row


BOOK_SEPARATOR = "\n\n"
"""The text between two books of a token corpus (a blank line)."""


#: Books encoded at once (in parallel) by :func:`tokenize_books`.
TOKENIZE_BATCH = 8


def tokenize_books(books: Iterable[Book], tokenizer: TextTokenizer
                   ) -> Iterator[tuple[np.ndarray, np.ndarray, dict[str, Any] | None]]:
    """Encode the raw text of books with ``tokenizer`` (in Unicode NFC, no other
    normalisation: :meth:`~sharp.data.tokenizer.TextTokenizer.encode_batch_with_chars`), in order,
    :data:`TOKENIZE_BATCH` books at a time in parallel.

    Yields ``(ids, chars, row)`` triples as :func:`encode_books` yields pairs: ``chars``
    gives each token's characters (:meth:`~sharp.data.tokenizer.TextTokenizer.
    encode_with_chars`); between two books the tokens of ``BOOK_SEPARATOR`` come with
    ``row=None``. Books that encode to no token (empty text) are left out with a warning."""
    offset = 0
    separator = tokenizer.encode_with_chars(BOOK_SEPARATOR)
    stream = iter(books)
    while batch := list(itertools.islice(stream, TOKENIZE_BATCH)):
        encoded = tokenizer.encode_batch_with_chars([book.text for book in batch])
        for book, (ids, chars) in zip(batch, encoded, strict=True):
            if ids.size == 0:
                warnings.warn(f"book {book.id!r} ({book.split}, {book.source or 'no source'}) "
                              "has no text; left out of the corpus", stacklevel=2)
                continue
            if offset:
                yield *separator, None
                offset += int(separator[0].size)
            row = {"id": book.id, "title": book.title, "year": book.year, "split": book.split,
                   "start": offset, "stop": offset + int(ids.size), "licence": book.licence,
                   "source": book.source}
            offset += int(ids.size)
            yield ids, chars, row


def tokenized_chunks(books: Iterable[Book], tokenizer: TextTokenizer,
                     documents: list[dict[str, Any]]
                     ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """:func:`tokenize_books`' ``(ids, chars)`` pairs, the chunks of a
    :func:`write_token_cache` entry with ``chars=True``; each book's document row is
    appended to ``documents`` as the book is read."""
    for ids, chars, row in tokenize_books(books, tokenizer):
        if row is not None:
            documents.append(row)
        yield ids, chars


def documents_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The ``documents`` DataFrame of a book corpus from its rows."""
    frame = pd.DataFrame(rows, columns=list(DOCUMENT_COLUMNS))
    frame["year"] = frame["year"].astype("Int64")
    frame["start"] = frame["start"].astype(np.int64)
    frame["stop"] = frame["stop"].astype(np.int64)
    return frame


def book_corpus(name: str, books: Iterable[Book]) -> Corpus:
    """A book corpus held in memory (for small collections such as the bundled books)."""
    pieces: list[np.ndarray] = []
    rows: list[dict[str, Any]] = []
    for ids, row in encode_books(books):
        pieces.append(ids)
        if row is not None:
            rows.append(row)
    if not rows:
        raise ValueError(f"corpus {name!r} has no book with any text")
    tokens = np.concatenate(pieces)
    return Corpus(name, tokens, TEXT8, tokens_sha256(tokens), documents_frame(rows))


# --- the on-disk cache --------------------------------------------------------------


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cache folder: ``cache_dir``, else ``$SHARP_CACHE``, else ``~/.cache/sharp``."""
    if cache_dir is not None:
        root = Path(cache_dir)
    elif os.environ.get("SHARP_CACHE"):
        root = Path(os.environ["SHARP_CACHE"])
    else:
        root = Path.home() / ".cache" / "sharp"
    return root.expanduser()


def _entry_paths(root: Path, name: str, identity: Mapping[str, Any]) -> tuple[Path, Path]:
    key = json.dumps(
        {"identity": identity, "normalization": NORMALIZATION_VERSION, "format": _CACHE_FORMAT},
        sort_keys=True,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    stem = root / "tokens" / f"{name}-{digest}"
    return stem.with_suffix(".npy"), stem.with_suffix(".json")


def _chars_path(npy: Path) -> Path:
    """The per-token character counts stored next to a token corpus's ``.npy``."""
    return npy.with_suffix(".chars.npy")


#: Dtype of stored per-token character counts.
CHARS_DTYPE = np.dtype(np.uint16)


def open_token_cache(
    root: Path, name: str, identity: Mapping[str, Any]
) -> tuple[np.ndarray, dict[str, Any]] | None:
    """The memory-mapped tokens and metadata of a cache entry, or None if absent.

    The map is copy-on-write: writes to the array stay in memory, the file never changes.
    An entry written with character counts has ``meta["chars_file_bytes"]``; read them with
    :func:`open_token_chars`.

    A partial or corrupt entry (unreadable metadata, missing or truncated array,
    wrong dtype or length, or an array changed since it was written: its modification
    time differs from the recorded one and the sha256 of its tokens from the recorded
    sha256) is reported with a warning, deleted, and None returned so that the caller
    rebuilds it. An array whose time differs but whose tokens hash as recorded (a copied
    cache) is kept and its time recorded, so it is hashed once, not on every open.
    """
    npy, meta_path = _entry_paths(root, name, identity)
    chars_npy = _chars_path(npy)
    if not meta_path.exists() and not npy.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        tokens = np.load(npy, mmap_mode="c")  # copy-on-write: writable, file untouched
        if (
            meta["identity"] != json.loads(json.dumps(identity))
            or tokens.shape != (meta["length"],)
            or tokens.dtype != np.dtype(meta["dtype"])
            or npy.stat().st_size != meta["file_bytes"]
            or ("chars_file_bytes" in meta
                and chars_npy.stat().st_size != meta["chars_file_bytes"])
        ):
            raise ValueError("metadata does not match the array")
        if meta.get("mtime_ns") != npy.stat().st_mtime_ns:
            if tokens_sha256(tokens) != meta["sha256"]:
                raise ValueError("its tokens changed since it was written (sha256 differs)")
            meta["mtime_ns"] = npy.stat().st_mtime_ns
            with contextlib.suppress(OSError):  # a read-only cache is hashed at every open
                atomic_write_bytes(meta_path, json.dumps(meta, indent=1).encode())
    except (OSError, ValueError, KeyError, TypeError) as err:
        warnings.warn(
            f"cache entry {npy} is incomplete or corrupt ({err}); rebuilding it",
            stacklevel=3,
        )
        for path in (npy, chars_npy, meta_path):
            path.unlink(missing_ok=True)
        return None
    return tokens, meta


def open_token_chars(root: Path, name: str, identity: Mapping[str, Any]) -> np.ndarray:
    """The memory-mapped (copy-on-write) per-token character counts of a cache entry that
    :func:`write_token_cache` wrote with ``chars=True`` (open it first with
    :func:`open_token_cache`). Raises FileNotFoundError when the entry has none."""
    npy, _ = _entry_paths(root, name, identity)
    return np.load(_chars_path(npy), mmap_mode="c")


def _write_npy(raw: Any, path: Path, dtype: np.dtype, length: int) -> int:
    """Write the ``length`` items of ``dtype`` in the raw file ``raw`` as the ``.npy`` file
    ``path``, atomically; returns its size in bytes."""
    raw.seek(0)
    with atomic_path(path) as tmp, tmp.open("wb") as out:
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                  "fortran_order": False, "shape": (length,)}
        np.lib.format.write_array_header_1_0(out, header)
        shutil.copyfileobj(raw, out, length=TEXT_CHUNK_BYTES)
    return path.stat().st_size


def write_token_cache(
    root: Path,
    name: str,
    identity: Mapping[str, Any],
    chunks: Iterable[np.ndarray] | Iterable[tuple[np.ndarray, np.ndarray]],
    *,
    dtype: np.dtype,
    total: int | None = None,
    extra: Callable[[], dict[str, Any]] | None = None,
    progress: bool = True,
    chars: bool = False,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Stream token chunks into a new cache entry and return it memory-mapped.

    The array is written as ``.npy`` and its metadata (length, dtype, sha256 of the
    token bytes, plus ``extra()`` evaluated after the last chunk) as ``.json``; both
    atomically, metadata last, so an interrupted build leaves no valid-looking entry.
    With ``chars`` the chunks are ``(ids, chars)`` pairs and the per-token character
    counts go to a ``.chars.npy`` next to it (:data:`CHARS_DTYPE`; read with
    :func:`open_token_chars`). ``total`` (tokens expected) only sizes the progress bar,
    shown when ``progress``. Raises ValueError for a token of more characters than
    :data:`CHARS_DTYPE` holds.
    """
    npy, meta_path = _entry_paths(root, name, identity)
    npy.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    length = 0
    with (
        tempfile.TemporaryFile(dir=npy.parent, suffix=".raw") as raw,
        tempfile.TemporaryFile(dir=npy.parent, suffix=".raw") as raw_chars,
    ):
        with tqdm(total=total, unit="tok", unit_scale=True, desc=f"encoding {name}",
                  disable=not progress) as bar:
            for chunk in chunks:
                ids, counts = chunk if chars else (chunk, None)
                data = np.ascontiguousarray(ids, dtype=dtype)
                raw.write(data.tobytes())
                digest.update(data.view(np.uint8))
                if counts is not None:
                    if counts.size and int(counts.max()) > np.iinfo(CHARS_DTYPE).max:
                        raise ValueError(f"a token of {int(counts.max())} characters does not "
                                         f"fit the {CHARS_DTYPE} character counts")
                    raw_chars.write(np.ascontiguousarray(counts, dtype=CHARS_DTYPE).tobytes())
                length += int(data.size)
                bar.update(int(data.size))
        file_bytes = _write_npy(raw, npy, dtype, length)
        chars_bytes = (_write_npy(raw_chars, _chars_path(npy), CHARS_DTYPE, length)
                       if chars else None)
    meta = {
        "identity": identity,
        "length": length,
        "dtype": np.dtype(dtype).str,
        "sha256": digest.hexdigest(),
        "file_bytes": file_bytes,
        "mtime_ns": npy.stat().st_mtime_ns,
        **({"chars_file_bytes": chars_bytes} if chars else {}),
        **(extra() if extra is not None else {}),
    }
    atomic_write_bytes(meta_path, json.dumps(meta, indent=1).encode())
    opened = open_token_cache(root, name, identity)
    if opened is None:
        raise RuntimeError(f"the cache entry {npy} could not be read back right after writing it")
    return opened


# --- one entry point ------------------------------------------------------------------


def not_utf8(path: Path, byte: int, reason: str) -> ValueError:
    """The error every text path raises for a file that is not UTF-8: its name, the offset
    of the first invalid byte, and what to do."""
    return ValueError(f"{path} is not UTF-8 text (byte {byte:,}: {reason}); convert it to UTF-8")


def read_utf8(path: Path) -> str:
    """The whole text of a UTF-8 file (a book). Raises ValueError (:func:`not_utf8`) naming
    the file and the byte offset of the first invalid sequence."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise not_utf8(path, err.start, err.reason) from err


def _text_file_pieces(path: Path) -> Iterator[str]:
    """The text of a UTF-8 file in pieces of at most ``TEXT_CHUNK_BYTES`` bytes.

    Raises ValueError (:func:`not_utf8`) naming the byte offset of the first invalid
    UTF-8 sequence.
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with path.open("rb") as handle:
        while True:
            block = handle.read(TEXT_CHUNK_BYTES)
            held = len(decoder.getstate()[0])
            try:
                yield decoder.decode(block, final=not block)
            except UnicodeDecodeError as err:
                raise not_utf8(path, offset - held + err.start, err.reason) from err
            if not block:
                return
            offset += len(block)


def _load_text_file(path: Path, cache_dir: str | os.PathLike[str] | None,
                    progress: bool = True) -> Corpus:
    """A local UTF-8 text file, normalised with ``normalize_text8`` and encoded with
    ``TEXT8`` in chunks into the token cache (keyed by the file's size and sha256, so a
    file is encoded once whatever its name; peak memory stays a few MB), with a progress
    bar when ``progress``."""
    root = cache_root(cache_dir)
    identity = {"text_file_bytes": path.stat().st_size, "sha256": file_sha256(path)}
    cached = open_token_cache(root, "text", identity)
    if cached is None:
        chunks = (TEXT8.encode(piece) for piece in normalize_text8_stream(_text_file_pieces(path)))
        cached = write_token_cache(
            root, "text", identity, chunks, dtype=TEXT8.dtype,
            total=identity["text_file_bytes"], progress=progress,
        )
    tokens, meta = cached
    if meta["length"] == 0:
        raise ValueError(f"{path} has no letters a-z, so its normalised text is empty")
    return Corpus(path.stem, tokens, TEXT8, meta["sha256"])


def load_corpus(
    name: str,
    *,
    split: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    tokenizer: TextTokenizer | None = None,
) -> Corpus:
    """Load a corpus by name, optionally one split of a book corpus.

    ``name`` is ``"wiki"`` or ``"books"`` (bundled, offline), ``"text8"`` (downloaded
    once into the cache), ``"pg19"`` (Hugging Face hub), a local PG-19 folder
    (``{train,validation,test}/<id>.txt``, ``metadata.csv`` optional), or a local UTF-8 text
    file (normalised with ``normalize_text8`` in chunks and cached by content). Book
    corpora hold every split they have unless ``split`` names one (``corpus_splits``
    tells which without loading). ``progress=False`` shows no progress bar (downloads,
    encoding, Hugging Face ``datasets``' own bars).

    With a ``tokenizer`` (:func:`~sharp.data.tokenizer.load_tokenizer`) a book corpus
    (``books``, ``pg19``, a PG-19 folder) is read as raw text, not normalised beyond
    Unicode NFC (:data:`~sharp.data.tokenizer.UNICODE_FORM`), and encoded
    into token ids with per-token character counts (``Corpus.chars``), cached once per
    (corpus, tokenizer) as memory-mapped arrays. Raises ValueError for an unknown name,
    a split the corpus lacks, a tokenizer with a corpus that has no books, or a text file
    (or book) that is not UTF-8 or has no letters a-z; FileNotFoundError for a name that
    looks like a path (a suffix or a slash) but names nothing.
    """
    from sharp.data.bundled import load_books, load_wiki
    from sharp.data.pg19 import load_pg19
    from sharp.data.text8 import load_text8

    path = Path(name).expanduser()
    if tokenizer is not None and name != "books" and name != "pg19" and not path.is_dir():
        raise ValueError(f"a tokenizer reads the raw text of book corpora ('books', 'pg19' "
                         f"or a folder in PG-19 layout); {name!r} is stored normalised to "
                         "27 symbols: use it without a tokenizer")
    if name == "wiki":
        corpus = load_wiki()
    elif name == "books":
        return load_books(split, tokenizer=tokenizer, cache_dir=cache_dir, progress=progress)
    elif name == "text8":
        corpus = load_text8(cache_dir, progress=progress)
    elif name == "pg19":
        return load_pg19(split=split, cache_dir=cache_dir, progress=progress,
                         tokenizer=tokenizer)
    elif path.is_dir():
        return load_pg19(str(path), split=split, cache_dir=cache_dir, progress=progress,
                         tokenizer=tokenizer)
    elif path.is_file():
        corpus = _load_text_file(path, cache_dir, progress)
    else:
        raise _unknown_corpus(name)
    return corpus if split is None else corpus.split(split)


def _unknown_corpus(name: str) -> ValueError | FileNotFoundError:
    """The error for a corpus ``name`` that is neither a known name nor an existing path:
    FileNotFoundError when it looks like a path (it has a suffix or a slash), else
    ValueError listing the names."""
    paths = ("the path of a UTF-8 text file, or the path of a folder in PG-19 layout "
             "({train,validation,test}/<id>.txt, metadata.csv optional)")
    names = ", ".join(repr(n) for n in CORPUS_NAMES)
    if Path(name).suffix or "/" in name or os.sep in name:
        return FileNotFoundError(f"no such file or folder: {name!r}; give {paths}, or a "
                                 f"corpus name ({names})")
    return ValueError(f"unknown corpus {name!r}: use one of {names}, {paths}")


def corpus_splits(name: str) -> tuple[str, ...] | None:
    """The splits (in ``SPLITS`` order) of the corpus ``load_corpus(name)`` returns, found
    without loading, reading or downloading any text; None for corpora without documents
    (``"wiki"``, ``"text8"``, text files). Raises ValueError for an unknown name,
    FileNotFoundError for a path (a suffix or a slash) that names nothing."""
    from sharp.data.bundled import provenance
    from sharp.data.pg19 import pg19_splits

    path = Path(name).expanduser()
    if name == "books":
        present = set(provenance()["split"])
        return tuple(split for split in SPLITS if split in present)
    if name == "pg19":
        return pg19_splits()
    if name in ("wiki", "text8"):
        return None
    if path.is_dir():
        return pg19_splits(str(path))
    if path.is_file():
        return None
    raise _unknown_corpus(name)
