"""Text normalisation to the 27-symbol text8 alphabet (space, a-z).

Every text path of the kit (bundled books, PG-19, local text files, ``wikifil``) goes
through :func:`normalize_text8`, which first folds Unicode with :func:`fold_unicode`, so
text that looks the same gives the same tokens whatever its Unicode form.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator

NORMALIZATION_VERSION = 2
"""Bumped whenever ``normalize_text8`` or ``wikifil`` change output (keys cached corpora).
Version 2 added Unicode folding (``fold_unicode``)."""

_NON_LETTERS = re.compile(r"[^a-z]+")
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")

LETTER_FOLDS = {
    "ß": "ss", "ẞ": "SS", "æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE", "ø": "o", "Ø": "O",
    "ł": "l", "Ł": "L", "đ": "d", "Đ": "D", "ð": "d", "Ð": "D", "þ": "th", "Þ": "TH",
    "ı": "i",
}
"""Latin letters without a Unicode decomposition, spelled with the letters a-z."""


def _fold_char(char: str) -> str:
    """One character folded: letters by compatibility decomposition (NFKD), other
    characters by canonical decomposition (NFD); combining marks dropped; then
    ``LETTER_FOLDS``."""
    form = "NFKD" if unicodedata.category(char).startswith("L") else "NFD"
    kept = (c for c in unicodedata.normalize(form, char) if unicodedata.category(c)[0] != "M")
    return "".join(LETTER_FOLDS.get(c, c) for c in kept)


class _FoldTable(dict[int, str]):
    """``str.translate`` table of ``_fold_char``, filled on first sight of each code point."""

    def __missing__(self, code: int) -> str:
        folded = _fold_char(chr(code))
        self[code] = folded
        return folded


_FOLDS = _FoldTable()


def fold_unicode(text: str) -> str:
    """Fold ``text`` so that visually identical spellings become the same string.

    Each non-ASCII character is decomposed -- letters by compatibility decomposition
    (NFKD: ligatures ``"ﬁ"`` -> ``"fi"``, long s ``"ſ"`` -> ``"s"``, fullwidth
    ``"Ａ"`` -> ``"A"``), other characters canonically (NFD, so symbols such as
    ``"™"`` or ``"½"`` stay symbols) -- and its combining marks are dropped (accents:
    ``"é"`` in NFC and ``"e\u0301"`` in NFD both become ``"e"``); ``LETTER_FOLDS`` then
    spells ``ß æ œ ø ł đ ð þ ı`` with a-z. ASCII text is returned unchanged. The rule is
    per character, so folding pieces of a text and joining them equals folding the text.
    """
    if text.isascii():
        return text
    return _NON_ASCII.sub(lambda run: run.group().translate(_FOLDS), text)


def normalize_text8(text: str) -> str:
    """Fold Unicode (``fold_unicode``), lowercase, turn every run of characters outside
    a-z into one space, strip.

    This is the REFERENCE rule (on ASCII text ``fold_unicode`` changes nothing); the
    result uses only the symbols of ``TEXT8``. Accented letters keep their base letter
    (``"Été"`` -> ``"ete"``), ligatures are spelled out (``"ﬁ"`` -> ``"fi"``); letters of
    other scripts, digits and symbols become spaces.
    """
    return _NON_LETTERS.sub(" ", fold_unicode(text).lower()).strip()


def normalize_text8_stream(pieces: Iterable[str]) -> Iterator[str]:
    """``normalize_text8`` of a text given in pieces, yielded in pieces.

    ``"".join(normalize_text8_stream(pieces)) == normalize_text8("".join(pieces))`` for
    any way of cutting the text (the fold is per character; runs of non-letters that
    straddle a cut become one space), so a file can be normalised in bounded memory.
    """
    started = pending_space = False
    for piece in pieces:
        mapped = _NON_LETTERS.sub(" ", fold_unicode(piece).lower())
        core = mapped.strip()
        if not core:
            pending_space = pending_space or bool(mapped)
            continue
        if started and (pending_space or mapped[0] == " "):
            yield " "
        yield core
        started = True
        pending_space = mapped[-1] == " "


_PAGE = re.compile(r"<page>(.*?)</page>", re.DOTALL)
_TEXT = re.compile(r"<text\b[^>]*?(?:/>|>(.*?)</text>)", re.DOTALL)
_REDIRECT = re.compile(r"\s*#redirect", re.IGNORECASE)
_COMMENT = re.compile(r"<!--.*?(?:-->|$)", re.DOTALL)
_REF_OR_GALLERY = re.compile(
    r"<(?P<tag>ref|gallery)\b(?:[^>]*?/>|[^>]*>.*?</(?P=tag)\s*>)", re.DOTALL | re.IGNORECASE
)
_TAG = re.compile(r"<[^<>]*>")
_DROPPED_LINK = re.compile(r"(?i:image|file|category|media)\s*:|[a-z]{2,3}(?:-[a-z]+)*:")
_PIPED_LINK = re.compile(r"\[\[[^\[\]|]*\|([^\[\]]*)\]\]")
_PLAIN_LINK = re.compile(r"\[\[([^\[\]]*)\]\]")
_EXTERNAL_LINK = re.compile(r"\[(?:https?|ftp)://[^\s\]]*\s*([^\]]*)\]", re.IGNORECASE)
_DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_DIGITS = re.compile(r"[0-9]")


def _remove_nested(text: str, opener: str, closer: str, keep: Callable[[str], str]) -> str:
    """Replace each outermost ``opener ... closer`` span (nesting allowed) by ``keep(inner)``.

    Closers without an opener are left alone, and so is the text after an opener that
    is never closed.
    """
    tokens = re.compile(f"{re.escape(opener)}|{re.escape(closer)}")
    out: list[str] = []
    depth = 0
    last = 0  # end of the text already copied to ``out``
    start = 0  # start of the current outermost span
    for match in tokens.finditer(text):
        if match.group() == opener:
            if depth == 0:
                start = match.start()
            depth += 1
        elif depth > 0:
            depth -= 1
            if depth == 0:
                out.append(text[last:start])
                out.append(keep(text[start + len(opener) : match.start()]))
                last = match.end()
    out.append(text[last:])
    return "".join(out)


def _drop(_inner: str) -> str:
    return " "


def _keep_link(inner: str) -> str:
    """A top-level ``[[...]]`` link: images, files, categories and language links vanish."""
    if _DROPPED_LINK.match(inner):
        return " "
    return f"[[{inner}]]"


def _clean_article(wikitext: str) -> str:
    text = _COMMENT.sub(" ", wikitext)
    text = _REF_OR_GALLERY.sub(" ", text)
    text = _remove_nested(text, "{{", "}}", _drop)
    text = _remove_nested(text, "{|", "|}", _drop)
    text = _TAG.sub(" ", text)
    text = _remove_nested(text, "[[", "]]", _keep_link)
    text = _PIPED_LINK.sub(r"\1", text)
    text = _PLAIN_LINK.sub(r"\1", text)
    text = _EXTERNAL_LINK.sub(r"\1", text)
    text = html.unescape(text)
    text = _DIGITS.sub(lambda m: f" {_DIGIT_WORDS[int(m.group())]} ", text)
    return normalize_text8(text)


def wikifil(xml_text: str) -> str:
    """Clean a MediaWiki XML dump the way Matt Mahoney's ``wikifil.pl`` produced text8.

    Written from the script's documented behaviour (not its code): keep only the
    ``<text>`` of each ``<page>``; drop ``#REDIRECT`` pages; remove comments,
    ``<ref>`` references, ``<gallery>`` blocks, ``{{templates}}`` (nested),
    ``{| tables |}``, HTML tags, and image/file/category/interlanguage links;
    ``[[a|b]]`` becomes ``b`` and ``[[a]]`` becomes ``a``; ``[url text]`` becomes
    ``text``; entities are decoded; digits are spelled out (``"1"`` -> ``" one "``);
    then ``normalize_text8``. Pages are joined by one space, so the result uses
    exactly the 27 ``TEXT8`` symbols.
    """
    articles = []
    for page in _PAGE.finditer(xml_text):
        body = _TEXT.search(page.group(1))
        if body is None or body.group(1) is None:
            continue
        wikitext = html.unescape(body.group(1))  # undo the XML escaping of the dump
        if _REDIRECT.match(wikitext):
            continue
        cleaned = _clean_article(wikitext)
        if cleaned:
            articles.append(cleaned)
    return " ".join(articles)
