"""Corpus statistics: sizes, alphabets, character histograms, non-stationarity (SPEC §8.10).

Non-stationarity is measured as in the paper: cut the stream into consecutive windows of
1024 tokens, take each window's character histogram, and average the Hellinger distance
between windows ``lag`` windows apart. A stationary source gives a flat curve (at the
level sampling noise alone produces, shown by the ``shuffled`` column); a drifting one
rises with the lag.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import pandas as pd

from sharp.data.corpus import Corpus, cache_root
from sharp.data.vocab import Vocabulary


def char_counts(tokens: np.ndarray, vocab_size: int) -> np.ndarray:
    """How often each token id 0..vocab_size-1 occurs in ``tokens``."""
    return np.bincount(np.asarray(tokens, dtype=np.int64), minlength=vocab_size)[:vocab_size]


def entropy_bits(counts: np.ndarray) -> float:
    """Shannon entropy (bits) of the distribution ``counts / counts.sum()``: the bits per
    token of a model that knows only the symbol frequencies."""
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def char_frequencies(tokens: np.ndarray, vocab: Vocabulary) -> pd.DataFrame:
    """One row per symbol of ``vocab``: ``symbol``, ``count``, ``share``."""
    counts = char_counts(tokens, vocab.size)
    return pd.DataFrame({
        "symbol": list(vocab.symbols), "count": counts, "share": counts / max(counts.sum(), 1),
    })


def corpus_summary(corpora: Mapping[str, Corpus]) -> pd.DataFrame:
    """One row per corpus: tokens, documents (books), symbols used of the vocabulary,
    unigram entropy in bits, and the first 12 hex digits of its sha256."""
    rows = []
    for name, corpus in corpora.items():
        counts = char_counts(corpus.tokens, corpus.vocab.size)
        rows.append({
            "corpus": name, "tokens": len(corpus),
            "documents": 0 if corpus.documents is None else len(corpus.documents),
            "symbols used": f"{int((counts > 0).sum())} of {corpus.vocab.size}",
            "unigram bits": entropy_bits(counts), "sha256": corpus.sha256[:12],
        })
    return pd.DataFrame(rows).set_index("corpus")


def window_histograms(tokens: np.ndarray, vocab_size: int, window: int = 1024) -> np.ndarray:
    """Normalised character histograms of consecutive, non-overlapping windows of
    ``window`` tokens (a trailing partial window is dropped): shape (windows, vocab)."""
    ids = np.asarray(tokens, dtype=np.int64)
    count = ids.size // window
    if count < 2:
        raise ValueError(
            f"need at least two windows of {window} tokens, got {ids.size} tokens; use a "
            "longer stream or a smaller window"
        )
    rows = np.repeat(np.arange(count), window)
    hist = np.zeros((count, vocab_size))
    np.add.at(hist, (rows, ids[: count * window]), 1.0)
    return hist / window


def hellinger(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Hellinger distance sqrt(1 - Σ sqrt(p·q)) between distributions along the last axis
    (0 for equal distributions, 1 for disjoint supports)."""
    overlap = np.sqrt(p * q).sum(axis=-1)
    return np.sqrt(np.clip(1.0 - overlap, 0.0, None))


def default_lags(windows: int, count: int = 24) -> np.ndarray:
    """About ``count`` lags (in windows) spaced evenly on a log scale from 1 to half the
    number of windows (so that every lag averages over at least half of them)."""
    if windows < 2:
        raise ValueError(f"need at least two windows, got {windows}")
    return np.unique(np.geomspace(1, max(1, windows // 2), count).round().astype(np.int64))


def nonstationarity(
    tokens: np.ndarray,
    vocab_size: int,
    *,
    window: int = 1024,
    lags: np.ndarray | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Mean Hellinger distance between the character histograms of windows ``lag``
    windows apart, for each lag.

    Columns: ``lag`` (windows), ``lag_tokens``, ``hellinger`` (mean over all pairs),
    ``std``, ``pairs``, and ``shuffled``: the same statistic after shuffling the windows'
    order (seeded), i.e. the level a stationary source with these windows would show.
    """
    hist = window_histograms(tokens, vocab_size, window)
    lags = default_lags(len(hist)) if lags is None else np.asarray(lags, dtype=np.int64)
    if lags.size == 0 or lags.min() < 1 or lags.max() >= len(hist):
        raise ValueError(f"lags must lie in 1..{len(hist) - 1} (windows), got {lags}")
    shuffled = hist[np.random.default_rng(seed).permutation(len(hist))]
    rows = []
    for lag in lags.tolist():
        distance = hellinger(hist[:-lag], hist[lag:])
        rows.append({
            "lag": lag, "lag_tokens": lag * window, "hellinger": float(distance.mean()),
            "std": float(distance.std()), "pairs": int(distance.size),
            "shuffled": float(hellinger(shuffled[:-lag], shuffled[lag:]).mean()),
        })
    return pd.DataFrame(rows)


def text8_on_disk(cache_dir: str | os.PathLike[str] | None = None) -> bool:
    """Whether text8 (the extracted file or its zip) is already in the cache, so that
    loading it needs no download."""
    root = cache_root(cache_dir)
    return (root / "text8").is_file() or (root / "text8.zip").is_file()
