"""Vocabularies and text normalisation (text8 rule and wikifil)."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import numpy as np
import pytest
import torch

from sharp.data import (
    TEXT8,
    Vocabulary,
    char_vocabulary,
    fold_unicode,
    normalize_text8,
    normalize_text8_stream,
    wikifil,
)

LICENSES = Path("/usr/share/common-licenses")
REFERENCE_FILES = ("GPL-3", "GFDL-1.3", "Apache-2.0", "MPL-2.0", "LGPL-2.1", "GPL-2", "Artistic",
                   "CC0-1.0")  # fmt: skip


def test_text8_alphabet() -> None:
    assert TEXT8.size == 27
    assert TEXT8.encode(" az").tolist() == [0, 1, 26]


def test_round_trip_and_dtypes() -> None:
    text = "the quick brown fox jumps over the lazy dog"
    ids = TEXT8.encode(text)
    assert ids.dtype == np.uint8
    assert TEXT8.decode(ids) == text
    assert TEXT8.decode(ids.tolist()) == text
    assert TEXT8.decode(torch.from_numpy(ids.astype(np.int64))) == text
    assert TEXT8.decode([]) == ""


def test_large_vocabulary_uses_int32() -> None:
    vocab = Vocabulary("".join(chr(0x400 + i) for i in range(300)))
    text = vocab.symbols[::-1] + vocab.symbols[299]
    ids = vocab.encode(text)
    assert ids.dtype == np.int32
    assert ids[0] == 299
    assert vocab.decode(ids) == text


def test_char_vocabulary_is_sorted_and_distinct() -> None:
    vocab = char_vocabulary("banana!")
    assert vocab.symbols == "!abn"
    assert vocab.decode(vocab.encode("nab")) == "nab"
    with pytest.raises(ValueError, match="distinct"):
        Vocabulary("abca")


def test_reject_policy_names_the_character_and_the_fix() -> None:
    with pytest.raises(ValueError) as info:
        TEXT8.encode("hello World")
    message = str(info.value)
    assert "'W'" in message
    assert "position 6" in message
    assert "normalize_text8" in message
    assert "policy='map'" in message


def test_map_policy_maps_to_first_symbol() -> None:
    ids = TEXT8.encode("héllo!", policy="map")
    assert ids.tolist() == [8, 0, 12, 12, 15, 0]
    assert TEXT8.decode(ids) == "h llo "
    with pytest.raises(ValueError, match="policy"):
        TEXT8.encode("x", policy="drop")  # type: ignore[arg-type]


def test_decode_rejects_out_of_range_ids() -> None:
    with pytest.raises(ValueError, match="token id 27 at position 1"):
        TEXT8.decode([1, 27])


def test_normalize_text8_rule() -> None:
    assert normalize_text8("  Hello, World!! 42 -- Ça va?\n") == "hello world ca va"
    assert normalize_text8("123") == ""


def test_unicode_forms_give_identical_tokens() -> None:
    nfc, nfd = unicodedata.normalize("NFC", "Été été"), unicodedata.normalize("NFD", "Été été")
    assert nfc != nfd
    assert normalize_text8(nfc) == normalize_text8(nfd) == "ete ete"
    assert np.array_equal(TEXT8.encode(normalize_text8(nfc)), TEXT8.encode(normalize_text8(nfd)))
    for written, expected in [
        ("ﬁne ﬂour, eﬀort", "fine flour effort"),  # ligatures spelled out
        ("Straße Æsop œuvre Øre İstanbul", "strasse aesop oeuvre ore istanbul"),
        ("ＦＵＬＬ ſtate", "full state"),  # fullwidth letters, long s
        ("Gutenberg™ ½ № 5", "gutenberg"),  # symbols stay symbols, so they become spaces
        ("naïve café Ελλάδα", "naive cafe"),  # other scripts become spaces
    ]:
        assert normalize_text8(written) == expected, written
    assert fold_unicode("plain ASCII, unchanged.") == "plain ASCII, unchanged."


def test_normalizing_in_pieces_equals_normalizing_the_whole() -> None:
    rng = np.random.default_rng(0)
    alphabet = list("ab ,.-\nÉe\u0301ﬁ™ß")
    for _ in range(500):
        text = "".join(rng.choice(alphabet, rng.integers(0, 40)))
        cuts = sorted(rng.integers(0, len(text) + 1, rng.integers(0, 6)).tolist())
        pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        assert "".join(normalize_text8_stream(pieces)) == normalize_text8(text), pieces


def test_normalize_reference_license_text() -> None:
    paths = [LICENSES / name for name in REFERENCE_FILES]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        pytest.skip(f"Debian common-licenses files missing: {missing}")
    text = "\n".join(p.read_text(encoding="utf-8") for p in paths)
    normalized = normalize_text8(text)
    assert len(normalized) == 134_008
    assert normalized.startswith(
        "gnu general public license version june copyright c free software foundation inc"
    )
    assert set(normalized) <= set(TEXT8.symbols)


WIKI_XML = """<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/">
  <page>
    <title>Redirected</title>
    <text xml:space="preserve">#REDIRECT [[Somewhere]]</text>
  </page>
  <page>
    <title>Example</title>
    <text xml:space="preserve" bytes="1">{{Infobox|name={{nested|x}}|y=1}}'''Example''' \
is a [[Test page|sample]] of [[wiki]]s, born in 1984.&lt;ref name="a"&gt;A reference \
{{cite|b}}&lt;/ref&gt; See [http://example.com the site] and [http://bare.example].\
&lt;ref name="b" /&gt;
{| class="wikitable"
|-
| cell || 42
|}
[[Image:Pic.jpg|thumb|A picture of [[Paris]]]]
== History ==
Tom &amp;amp; Jerry &lt;b&gt;ran&lt;/b&gt;&amp;nbsp;away.&lt;!-- hidden --&gt;
[[Category:Examples]]
[[de:Beispiel]]</text>
  </page>
  <page>
    <title>Empty</title>
    <text xml:space="preserve" />
  </page>
  <page>
    <title>Second</title>
    <text xml:space="preserve">Zero is 0.</text>
  </page>
</mediawiki>
"""


def test_wikifil_cleans_markup() -> None:
    assert wikifil(WIKI_XML) == (
        "example is a sample of wikis born in one nine eight four see the site and "
        "history tom jerry ran away zero is zero"
    )


def test_wikifil_output_uses_text8_symbols_only() -> None:
    cleaned = wikifil(WIKI_XML)
    assert set(cleaned) <= set(TEXT8.symbols)
    assert "  " not in cleaned
    assert cleaned == cleaned.strip()
