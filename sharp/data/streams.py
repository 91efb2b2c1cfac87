"""Stride-1 windows and the segment / slice arithmetic of SPEC §6 (the checks of a
learner's token input are in :mod:`sharp.protocol`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


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
