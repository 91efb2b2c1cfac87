"""Token streams, stride-1 windows, and the segment / slice arithmetic of SPEC §6."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


def check_stream(tokens: np.ndarray, window: int, vocab_size: int) -> np.ndarray:
    """Return ``tokens`` as a 1-D integer array after checking it can feed a learner:
    more than ``window`` tokens, every id in 0..vocab_size-1."""
    ids = np.asarray(tokens)
    if ids.ndim != 1:
        raise ValueError(f"a stream is a 1-D token sequence, got shape {ids.shape}")
    if ids.size <= window:
        raise ValueError(
            f"the stream has {ids.size} tokens but a window of W={window} needs at least "
            f"{window + 1} (W tokens and one target); give a longer stream"
        )
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"tokens must be integer ids, got dtype {ids.dtype}; encode text first")
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= vocab_size:
        bad = low if low < 0 else high
        position = int(np.flatnonzero(ids == bad)[0])
        raise ValueError(
            f"token id {bad} at position {position} is outside the vocabulary "
            f"0..{vocab_size - 1}; encode the text with the learner's vocabulary"
        )
    return ids


def n_windows(length: int, window: int) -> int:
    """Number of (window, target) pairs in a stream of ``length`` tokens."""
    return max(length - window, 0)


def windows(tokens: np.ndarray, window: int) -> Iterator[tuple[np.ndarray, int]]:
    """Stride-1 windows: ``(tokens[i:i+W], tokens[i+W])`` for i = 0, 1, ..."""
    for i in range(n_windows(len(tokens), window)):
        yield tokens[i : i + window], int(tokens[i + window])


@dataclass(frozen=True)
class Span:
    """A half-open token range [start, stop)."""

    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start

    def take(self, tokens: np.ndarray) -> np.ndarray:
        """The tokens of this span."""
        return tokens[self.start : self.stop]


@dataclass(frozen=True)
class SegmentPlan:
    """What learner ``index`` trains on and is evaluated on (SPEC §6)."""

    index: int
    train: Span
    backward: Span
    current: Span
    forward: Span

    def slices(self) -> dict[str, Span]:
        """The three evaluation slices by name."""
        return {"forward": self.forward, "backward": self.backward, "current": self.current}


def plan_segments(total: int, segment: int, slice_len: int, learners: int) -> list[SegmentPlan]:
    """Segment m = [m·S, (m+1)·S) for m < M; backward = its first E tokens, current = its
    last E tokens, forward = the corpus's last E tokens, never trained on."""
    if segment < 1 or slice_len < 1 or learners < 1:
        raise ValueError("segment, slice and learners must all be >= 1")
    if slice_len > segment:
        raise ValueError(f"slice ({slice_len}) cannot be longer than the segment ({segment})")
    need = learners * segment + slice_len
    if need > total:
        raise ValueError(
            f"{learners} segments of {segment} tokens plus a held-out forward slice of "
            f"{slice_len} need {need} tokens but the corpus has {total}; use fewer learners "
            "or smaller segments"
        )
    forward = Span(total - slice_len, total)
    plans = []
    for m in range(learners):
        train = Span(m * segment, (m + 1) * segment)
        plans.append(SegmentPlan(
            index=m,
            train=train,
            backward=Span(train.start, train.start + slice_len),
            current=Span(train.stop - slice_len, train.stop),
            forward=forward,
        ))
    return plans
