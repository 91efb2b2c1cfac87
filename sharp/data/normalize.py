"""Text normalisation to the 27-symbol text8 alphabet (space, a-z)."""

from __future__ import annotations

import html
import re
from collections.abc import Callable

NORMALIZATION_VERSION = 1
"""Bumped whenever ``normalize_text8`` or ``wikifil`` change output (keys cached corpora)."""

_NON_LETTERS = re.compile(r"[^a-z]+")


def normalize_text8(text: str) -> str:
    """Lowercase, turn every run of characters outside a-z into one space, strip.

    This is the REFERENCE rule; the result uses only the symbols of ``TEXT8``.
    """
    return _NON_LETTERS.sub(" ", text.lower()).strip()


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
