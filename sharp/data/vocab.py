"""Character vocabularies: map text to integer token ids and back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

EncodePolicy = Literal["reject", "map"]


def _code_points(text: str) -> np.ndarray:
    """Unicode code points of ``text`` as a uint32 array (one entry per character)."""
    return np.frombuffer(text.encode("utf-32-le"), dtype="<u4")


@dataclass(frozen=True)
class Vocabulary:
    """An ordered set of characters: token id ``i`` stands for ``symbols[i]``."""

    symbols: str
    _lookup: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.symbols:
            raise ValueError("a Vocabulary needs at least one symbol")
        if len(set(self.symbols)) != len(self.symbols):
            repeated = sorted({c for c in self.symbols if self.symbols.count(c) > 1})
            raise ValueError(f"vocabulary symbols must be distinct; repeated: {repeated!r}")
        points = _code_points(self.symbols)
        lookup = np.full(int(points.max()) + 1, -1, dtype=np.int64)
        lookup[points] = np.arange(len(self.symbols))
        object.__setattr__(self, "_lookup", lookup)

    @property
    def size(self) -> int:
        """Number of symbols (the V of the model)."""
        return len(self.symbols)

    @property
    def dtype(self) -> np.dtype:
        """Token dtype: uint8 when every id fits in a byte, int32 otherwise."""
        return np.dtype(np.uint8) if self.size <= 256 else np.dtype(np.int32)

    def encode(self, text: str, policy: EncodePolicy = "reject") -> np.ndarray:
        """Token ids of ``text`` (uint8 if ``size <= 256``, else int32).

        ``policy="reject"`` raises ``ValueError`` at the first character outside the
        vocabulary; ``policy="map"`` maps every such character to ``symbols[0]``
        (the space for ``TEXT8``).
        """
        if policy not in ("reject", "map"):
            raise ValueError(f"policy must be 'reject' or 'map', got {policy!r}")
        points = _code_points(text)
        ids = np.full(points.shape, -1, dtype=np.int64)
        known = points < len(self._lookup)
        ids[known] = self._lookup[points[known]]
        unknown = np.flatnonzero(ids < 0)
        if unknown.size:
            if policy == "reject":
                pos = int(unknown[0])
                char = text[pos]
                raise ValueError(
                    f"character {char!r} (U+{ord(char):04X}) at position {pos} is not in the "
                    f"vocabulary {self.symbols!r}; normalise the text first "
                    "(sharp.data.normalize_text8 for the text8 alphabet) or encode with "
                    f"policy='map' to turn unknown characters into {self.symbols[0]!r}"
                )
            ids[unknown] = 0
        return ids.astype(self.dtype)

    def decode(self, ids: Any) -> str:
        """Text of a sequence of token ids (numpy array, list, or torch tensor)."""
        if hasattr(ids, "detach"):
            ids = ids.detach().cpu().numpy()
        arr = np.asarray(ids)
        if arr.size == 0:
            return ""
        if not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"token ids must be integers, got dtype {arr.dtype}")
        arr = arr.reshape(-1).astype(np.int64)
        bad = np.flatnonzero((arr < 0) | (arr >= self.size))
        if bad.size:
            pos = int(bad[0])
            raise ValueError(
                f"token id {int(arr[pos])} at position {pos} is outside this vocabulary "
                f"(ids 0..{self.size - 1})"
            )
        return _code_points(self.symbols)[arr].astype("<u4").tobytes().decode("utf-32-le")


TEXT8 = Vocabulary(" abcdefghijklmnopqrstuvwxyz")
"""The text8 alphabet: space = 0, a..z = 1..26."""


def char_vocabulary(text: str) -> Vocabulary:
    """The vocabulary of the distinct characters of ``text``, sorted by code point."""
    if not text:
        raise ValueError("cannot build a vocabulary from empty text")
    return Vocabulary("".join(sorted(set(text))))
