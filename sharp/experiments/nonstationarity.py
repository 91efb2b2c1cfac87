"""Experiment 10 (SPEC §8): non-stationarity of the corpora.

For each corpus, the stream is cut into consecutive windows of ``window`` (1024) tokens;
the mean Hellinger distance between the character histograms of windows ``lag`` windows
apart is reported for a log-spaced set of lags, next to the same statistic after
shuffling the windows' order (the level a stationary source with these windows shows).
The computation is :func:`sharp.data.stats.nonstationarity`; this module runs it per
corpus (``wiki`` and ``books`` bundled; ``text8`` too when it is already on disk) and
plots it. There are no learners and no repetitions: ``seed`` is the shuffle's seed.

The paper's claim: natural text is non-stationary — the distance grows with the lag far
above the shuffled level (books more than encyclopaedic text).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from sharp.data.corpus import load_corpus
from sharp.data.stats import default_lags, text8_on_disk
from sharp.data.stats import nonstationarity as nonstationarity_curve
from sharp.experiments.common import COLOURS, Experiment, Job, Size, register, run_jobs

COLUMNS = ("corpus", "rep", "seed", "lag", "lag_tokens", "hellinger", "std", "pairs",
           "shuffled", "tokens")


def available_corpora() -> tuple[str, ...]:
    """``wiki`` and ``books``, plus ``text8`` when it is in the cache."""
    return ("wiki", "books", *(("text8",) if text8_on_disk() else ()))


def _corpus_job(corpus: str, window: int, max_tokens: int | None, lags: int,
                seed: int) -> pd.DataFrame:
    loaded = load_corpus(corpus)
    tokens = loaded.tokens if max_tokens is None else loaded.tokens[:max_tokens]
    windows = len(tokens) // window
    frame = nonstationarity_curve(tokens, loaded.vocab.size, window=window,
                                  lags=np.asarray(default_lags(windows, lags)), seed=seed)
    frame["tokens"] = len(tokens)
    return frame


def _size(corpus: str, window: int, max_tokens: int | None) -> Size:
    """A job's length in tokens (``max_tokens``, or the whole corpus), from 4 windows (the
    fewest that give a lag) up."""
    tokens = len(load_corpus(corpus).tokens) if max_tokens is None else max_tokens
    return Size("max_tokens", tokens, start=4 * window)


def nonstationarity(
    *,
    corpora: Sequence[str] | None = None,
    window: int = 1024,
    max_tokens: int | None = 1_000_000,
    lags: int = 24,
    seed: int = 0,
    workers: int | None = 1,
    progress: bool = True,
) -> pd.DataFrame:
    """Mean Hellinger distance vs lag per corpus (the first ``max_tokens`` tokens of each;
    None = all). Columns: :data:`COLUMNS`."""
    corpora = available_corpora() if corpora is None else tuple(corpora)
    jobs = [Job(_corpus_job, {"corpus": name, "window": window, "max_tokens": max_tokens,
                              "lags": lags, "seed": seed},
                {"corpus": name, "rep": 0, "seed": seed}, _size(name, window, max_tokens))
            for name in corpora]
    frame = run_jobs(jobs, workers, progress=progress, description="non-stationarity")
    return frame[list(COLUMNS)]


def nonstationarity_figure(frame: pd.DataFrame) -> go.Figure:
    """Mean Hellinger distance vs lag (tokens, log axis) per corpus; dotted: the same
    corpus with its windows shuffled."""
    fig = go.Figure()
    for i, (name, part) in enumerate(frame.groupby("corpus", sort=False)):
        colour = COLOURS[i % len(COLOURS)]
        fig.add_trace(go.Scatter(x=part["lag_tokens"], y=part["hellinger"], name=name,
                                 mode="lines+markers", line={"color": colour, "width": 3},
                                 legendgroup=name))
        fig.add_trace(go.Scatter(x=part["lag_tokens"], y=part["shuffled"],
                                 name=f"{name}, windows shuffled", mode="lines",
                                 line={"color": colour, "dash": "dot"}, legendgroup=name))
    fig.update_xaxes(type="log", title_text="lag (tokens)")
    fig.update_yaxes(title_text="mean Hellinger distance between window histograms")
    fig.update_layout(title="Non-stationarity: character histograms of 1024-token windows",
                      template="plotly_white", height=450, width=800)
    return fig


def summarise(frame: pd.DataFrame) -> list[str]:
    """Distance at the smallest and largest lag vs the shuffled level, per corpus."""
    lines = []
    for name, part in frame.groupby("corpus", sort=False):
        first, last = part.iloc[0], part.iloc[-1]
        lines.append(f"- {name} ({int(first.tokens):,} tokens): Hellinger "
                     f"{first.hellinger:.3f} at lag {int(first.lag_tokens):,} → "
                     f"{last.hellinger:.3f} at lag {int(last.lag_tokens):,}; windows shuffled: "
                     f"{part.shuffled.mean():.3f}")
    return lines


PRESETS = {
    "tiny": {"corpora": ("wiki",), "max_tokens": 100_000, "lags": 6},
    "quick": {"corpora": ("wiki", "books"), "max_tokens": 2_000_000},
    "paper": {"max_tokens": None},
}

EXPERIMENT = register(Experiment(
    "nonstationarity", 10, "Non-stationarity: Hellinger distance between window histograms",
    nonstationarity, nonstationarity_figure, PRESETS,
    "natural text is non-stationary: the distance grows with the lag, above the shuffled "
    "level", summarise))
