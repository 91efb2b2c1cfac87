"""Token streams, stride-1 windows, and the segment / slice arithmetic of SPEC §6."""

from __future__ import annotations

import operator
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NoReturn

import numpy as np
import torch

#: What a learner accepts as tokens: a list of ids, a numpy array or a tensor.
TokenIds = Sequence[int] | np.ndarray | torch.Tensor


def token_array(tokens: TokenIds) -> np.ndarray:
    """``tokens`` (a list, numpy array or tensor on any device) as a numpy array, without
    copying where it can."""
    if isinstance(tokens, torch.Tensor):
        return tokens.numpy(force=True)
    return np.asarray(tokens)


def check_stream(tokens: TokenIds, window: int, vocab_size: int) -> np.ndarray:
    """Return ``tokens`` as a 1-D integer numpy array after checking it can feed a learner:
    one dimension, more than ``window`` tokens, integer ids (not floats or booleans), every
    id in 0..vocab_size-1. Raises ValueError saying what to fix.

    Every runner and every learner's ``evaluate`` check their input with this (and every
    ``learn`` with :func:`check_window` and :func:`check_target`): one set of messages."""
    ids = token_array(tokens)
    if ids.ndim != 1:
        raise ValueError(f"a stream is a 1-D token sequence, got shape {ids.shape}")
    if ids.size <= window:
        raise ValueError(
            f"the stream has {ids.size} tokens but a window of W={window} needs at least "
            f"{window + 1} (W tokens and one target); give a longer stream"
        )
    _check_dtype(ids)
    if int(ids.min()) < 0 or int(ids.max()) >= vocab_size:
        _outside(ids, vocab_size)
    return ids


def check_window(window: TokenIds, size: int, vocab_size: int) -> np.ndarray:
    """One learning step's window as a 1-D integer numpy array of ``size`` ids, checked as
    :func:`check_stream` checks a stream (cheaply: about a microsecond for W = 4)."""
    ids = token_array(window)
    if ids.shape != (size,):
        got = f"shape {ids.shape}" if ids.ndim != 1 else f"{ids.size} tokens"
        raise ValueError(f"window has {got} but this learner's window W is {size}")
    _check_dtype(ids)
    values = ids.tolist()
    if min(values) < 0 or max(values) >= vocab_size:
        _outside(ids, vocab_size)
    return ids


def check_target(target: object, vocab_size: int) -> int:
    """One learning step's target as an int: an integer id (a Python or numpy integer or a
    one-element integer tensor) in 0..vocab_size-1, else ValueError."""
    try:
        y = operator.index(target)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(
            f"the target must be an integer token id, got {target!r}; encode text first"
        ) from None
    if not 0 <= y < vocab_size:
        raise ValueError(
            f"target token {y} is outside the vocabulary 0..{vocab_size - 1}; encode the "
            "text with the learner's vocabulary"
        )
    return y


def token_tensor(tokens: TokenIds, window: int, vocab_size: int,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """A slice to evaluate or stream, checked by :func:`check_stream`, as a 1-D int64
    tensor on ``device``."""
    ids = check_stream(tokens, window, vocab_size)
    return torch.tensor(ids, dtype=torch.long, device=device)


def _check_dtype(ids: np.ndarray) -> None:
    if ids.dtype.kind not in "iu":
        raise ValueError(f"tokens must be integer ids, got dtype {ids.dtype}; encode text first")


def _outside(ids: np.ndarray, vocab_size: int) -> NoReturn:
    position = int(np.flatnonzero((ids < 0) | (ids >= vocab_size))[0])
    bad = int(ids[position])
    raise ValueError(
        f"token id {bad} at position {position} is outside the vocabulary "
        f"0..{vocab_size - 1}; encode the text with the learner's vocabulary"
    )


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
