"""The text8 corpus: downloaded once, verified, encoded once into a memory-mapped cache."""

from __future__ import annotations

import functools
import http.client
import os
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from sharp.data.corpus import (
    TEXT_CHUNK_BYTES,
    Corpus,
    cache_root,
    file_sha256,
    open_token_cache,
    write_token_cache,
)
from sharp.data.vocab import TEXT8
from sharp.runs.checkpoints import atomic_path
from sharp.runs.progress import tqdm

TEXT8_URL = "http://mattmahoney.net/dc/text8.zip"
TEXT8_ZIP_BYTES = 31_344_016
TEXT8_BYTES = 100_000_000

Downloader = Callable[[str, Path], None]
"""Writes the resource at a URL to a local file (the loader takes care of atomicity)."""

def download_url(url: str, destination: Path, progress: bool = True) -> None:
    """Download ``url`` into ``destination``, with a progress bar when ``progress``."""
    with urllib.request.urlopen(url, timeout=30) as response, destination.open("wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {url}",
                  disable=not progress) as bar:
            while block := response.read(1 << 20):
                out.write(block)
                bar.update(len(block))


def _check_file(path: Path, expected_bytes: int, expected_sha256: str | None, what: str) -> str:
    """Verify size (and hash if known) of ``path``; return its sha256."""
    found = path.stat().st_size
    if found != expected_bytes:
        raise ValueError(
            f"{path} has {found:,} bytes but {what} has {expected_bytes:,}: the file is "
            "incomplete or not the right file. Delete it and load again to re-download it, "
            "or replace it by hand with the right file."
        )
    sha = file_sha256(path)
    if expected_sha256 is not None and sha != expected_sha256:
        raise ValueError(
            f"{path} has sha256 {sha} but {what} has {expected_sha256}: the file is "
            "corrupt or not the right file. Delete it and load again to re-download it, "
            "or replace it by hand with the right file."
        )
    return sha


def _fetch_zip(
    zip_path: Path,
    url: str,
    download: Downloader,
    expected_bytes: int,
    expected_sha256: str | None,
) -> None:
    manual = (
        f"Download {url} ({expected_bytes:,} bytes) by hand and put it at {zip_path} "
        "(or point cache_dir / the SHARP_CACHE environment variable at the folder holding "
        "text8.zip or the extracted text8)."
    )
    with atomic_path(zip_path) as tmp:
        try:
            download(url, tmp)
        except (OSError, http.client.HTTPException) as err:
            raise RuntimeError(f"could not download text8 from {url} ({err}). {manual}") from err
        try:
            _check_file(tmp, expected_bytes, expected_sha256, f"text8.zip from {url}")
        except ValueError as err:
            raise RuntimeError(f"the download of {url} is damaged: {err} {manual}") from err


def _zip_chunks(zip_path: Path) -> Iterator[np.ndarray]:
    with zipfile.ZipFile(zip_path) as archive:
        if "text8" not in archive.namelist():
            raise ValueError(f"{zip_path} has no member 'text8' (members: {archive.namelist()})")
        with archive.open("text8") as member:
            yield from _encoded_chunks(member.read, str(zip_path))


def _raw_chunks(raw_path: Path) -> Iterator[np.ndarray]:
    with raw_path.open("rb") as handle:
        yield from _encoded_chunks(handle.read, str(raw_path))


def _encoded_chunks(read: Callable[[int], bytes], origin: str) -> Iterator[np.ndarray]:
    offset = 0
    while block := read(TEXT_CHUNK_BYTES):
        try:
            yield TEXT8.encode(block.decode("ascii"))
        except (UnicodeDecodeError, ValueError) as err:
            raise ValueError(
                f"{origin} is not text8 (27 symbols: space, a-z) in the block at byte "
                f"{offset}: {err}"
            ) from err
        offset += len(block)


def load_text8(
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    download: Downloader | None = None,
    url: str = TEXT8_URL,
    expected_zip_bytes: int = TEXT8_ZIP_BYTES,
    expected_bytes: int = TEXT8_BYTES,
    expected_zip_sha256: str | None = None,
    expected_sha256: str | None = None,
    progress: bool = True,
) -> Corpus:
    """Load text8 (10^8 characters over ``TEXT8``) from the cache, downloading it once.

    The cache folder (``cache_dir``, else ``$SHARP_CACHE``, else ``~/.cache/sharp``)
    may hold the extracted ``text8`` or ``text8.zip``; if neither is there,
    ``text8.zip`` is downloaded with ``download`` into a temporary file, its size
    checked, and moved into place. ``expected_zip_sha256`` and ``expected_sha256``
    (if given) are checked against ``text8.zip`` and ``text8``. The text is encoded
    once into a memory-mapped ``.npy`` keyed by the source's size and sha256; later
    loads open it instantly. ``download`` defaults to :func:`download_url`; ``progress``
    shows its and the encoding's progress bars. The ``expected_*``, ``url`` and
    ``download`` parameters exist for tests and mirrors.
    """
    root = cache_root(cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    raw_path, zip_path = root / "text8", root / "text8.zip"
    if raw_path.exists():
        source, size, sha256 = raw_path, expected_bytes, expected_sha256
        chunks: Callable[[Path], Iterator[np.ndarray]] = _raw_chunks
    else:
        if not zip_path.exists():
            fetch = download or functools.partial(download_url, progress=progress)
            _fetch_zip(zip_path, url, fetch, expected_zip_bytes, expected_zip_sha256)
        source, size, sha256 = zip_path, expected_zip_bytes, expected_zip_sha256
        chunks = _zip_chunks
    sha = _check_file(source, size, sha256, f"{source.name} of text8")
    identity = {"source": source.name, "bytes": size, "sha256": sha}
    cached = open_token_cache(root, "text8", identity)
    if cached is None:
        cached = write_token_cache(
            root, "text8", identity, chunks(source), dtype=TEXT8.dtype, total=expected_bytes,
            progress=progress,
        )
    tokens, meta = cached
    if meta["length"] != expected_bytes:
        raise ValueError(
            f"{source} holds {meta['length']:,} characters of text, but text8 has "
            f"{expected_bytes:,}: delete {source} and load again to re-download it"
        )
    return Corpus("text8", tokens, TEXT8, meta["sha256"])
