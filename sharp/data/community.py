"""The community task (SPEC §8): a token stream whose structure needs long context."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _mix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser: a bijective scramble of uint64 values (wraps mod 2^64)."""
    z = x + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@dataclass(frozen=True)
class CommunityTask:
    """C communities of N member tokens each, plus a separator token (the last id).

    Each visit picks a community uniformly at random, starts at a uniformly random
    member, walks all N members cyclically in one direction (clockwise: member
    j -> j+1 mod N; counter-clockwise: j -> j-1 mod N), then emits the separator.
    Member j of community c is token ``c*N + j``. The direction of visit t is a
    deterministic function of the previous K = ``depth`` community choices:
    clockwise when the parity of their sum (``rule="sum"``), or of a hash of the
    ordered choices (``rule="hash"``), is even; clockwise for t < K.
    """

    communities: int = 2
    members: int = 3
    depth: int = 2
    rule: Literal["hash", "sum"] = "sum"

    def __post_init__(self) -> None:
        if self.communities < 1 or self.members < 1:
            raise ValueError(
                f"need at least one community and one member, got communities="
                f"{self.communities}, members={self.members}"
            )
        if self.depth < 0:
            raise ValueError(f"depth must be >= 0, got {self.depth}")
        if self.rule not in ("hash", "sum"):
            raise ValueError(f"rule must be 'hash' or 'sum', got {self.rule!r}")

    @property
    def vocab_size(self) -> int:
        """C*N member tokens plus the separator."""
        return self.communities * self.members + 1

    @property
    def separator(self) -> int:
        """Token id of the separator (the last id)."""
        return self.communities * self.members

    @property
    def tokens_per_visit(self) -> int:
        """N members plus the separator."""
        return self.members + 1

    @property
    def optimal_error(self) -> float:
        """Error rate (1 - top-1 accuracy per token) of the Bayes-optimal online predictor.

        A visit has N+1 tokens. Its first member is uniform over all C*N members
        (community and start are fresh random draws): the best guess is right with
        probability 1/(C*N). Given the first member, the direction is a known
        function of the past K community choices, so the other N-1 members and the
        separator are certain. Hence error = (1 - 1/(C*N)) / (N+1), i.e.
        1 - (1/(C*N) + N)/(N+1); for C=2, N=3: 1 - (1/6 + 3)/4 = 5/24 ≈ 0.2083.
        """
        c, n = self.communities, self.members
        return (1.0 - 1.0 / (c * n)) / (n + 1)

    def directions(self, communities: np.ndarray) -> np.ndarray:
        """Direction (+1 clockwise, -1 counter-clockwise) of each visit, given the
        sequence of community choices of all visits."""
        choices = np.asarray(communities, dtype=np.int64).reshape(-1)
        if choices.size and (choices.min() < 0 or choices.max() >= self.communities):
            raise ValueError(f"community choices must lie in 0..{self.communities - 1}")
        visits, k = choices.size, self.depth
        odd = np.zeros(visits, dtype=bool)
        if visits > k:
            if self.rule == "sum":
                totals = np.concatenate(([0], np.cumsum(choices)))
                odd[k:] = (totals[k:visits] - totals[: visits - k]) % 2 == 1
            else:
                # rolling hash: the window's choices as base-C digits (mod 2^64), scrambled
                code = np.zeros(visits - k, dtype=np.uint64)
                base = np.uint64(self.communities)
                for j in range(k):
                    code = code * base + choices[j : visits - k + j].astype(np.uint64)
                odd[k:] = (_mix64(code) & np.uint64(1)).astype(bool)
        return np.where(odd, -1, 1).astype(np.int64)

    def generate(self, visits: int, seed: int) -> np.ndarray:
        """``visits * (N+1)`` token ids (int64) drawn with ``np.random.default_rng(seed)``."""
        if visits < 0:
            raise ValueError(f"visits must be >= 0, got {visits}")
        rng = np.random.default_rng(seed)
        choices = rng.integers(0, self.communities, size=visits)
        starts = rng.integers(0, self.members, size=visits)
        steps = self.directions(choices)[:, None] * np.arange(self.members)[None, :]
        members = (starts[:, None] + steps) % self.members
        tokens = np.empty((visits, self.tokens_per_visit), dtype=np.int64)
        tokens[:, :-1] = choices[:, None] * self.members + members
        tokens[:, -1] = self.separator
        return tokens.reshape(-1)
