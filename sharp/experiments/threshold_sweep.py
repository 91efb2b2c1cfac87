"""Experiment 9 (SPEC §8): the threshold sweep tau ∈ {0, 1e-3, 1e-2, 1e-1} on text.

The text-stream protocol of :mod:`sharp.experiments.text_stream` (shared with the sleep
ablation): one stream, evaluated every ``every`` steps (curve mode) on the forward, current
and backward slices, plus memory 0's update rate over each interval. Only ``tau`` changes;
every condition uses the same seeds and stream, and sleeps on the same schedule.

The paper's claim: a larger threshold cuts the memory update rate (adaptive compute: the
memory learns early and rarely later) at little or no cost in BPC up to tau ≈ 1e-2; too
large a threshold (1e-1) hurts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Unpack

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from sharp.config import SharpConfig
from sharp.experiments.common import COLOURS, Experiment, add_band, register
from sharp.experiments.text_stream import (
    CONFIG,
    PAPER,
    SLICES,
    TINY,
    TextCondition,
    TextStream,
    text_curves,
)

COLUMNS = ("condition", "tau", "rep", "seed", "samples", "slice", "bits", "accuracy",
           "memory_update_rate", "sleeps")


def tau_label(tau: float) -> str:
    """``tau=0``, ``tau=0.001``, ..."""
    return f"tau={tau:g}"


def threshold_sweep(*, taus: Sequence[float] = (0.0, 1e-3, 1e-2, 1e-1),
                    config: SharpConfig = CONFIG,
                    **stream: Unpack[TextStream]) -> pd.DataFrame:
    """BPC per slice and memory update rate per checkpoint for each tau, with ``config``'s
    ``tau`` replaced by each of ``taus``; ``stream``: the corpus, repetitions, seed and
    ``ensemble`` (:class:`TextStream`, defaults
    :data:`~sharp.experiments.text_stream.DEFAULTS`). Columns: :data:`COLUMNS`."""
    runs = [TextCondition({"condition": tau_label(tau), "tau": tau}, {"tau": tau})
            for tau in taus]
    frame = text_curves(runs, description="threshold sweep", config=config, **stream)
    return frame[list(COLUMNS)]


def threshold_sweep_figure(frame: pd.DataFrame) -> go.Figure:
    """Four panels: memory update rate (log axis), forward, current and backward BPC vs
    samples; median and IQR across repetitions."""
    slices = [s for s in SLICES if s in set(frame["slice"])]
    fig = make_subplots(rows=1, cols=1 + len(slices), subplot_titles=(
        "memory update rate", *[f"{s} BPC" for s in slices]))
    for i, name in enumerate(frame["condition"].unique()):
        part = frame[frame["condition"] == name]
        colour = COLOURS[i % len(COLOURS)]
        rate = part[part["slice"] == slices[0]].copy()
        # a rate of 0 cannot be shown on a log axis: floor it at 1e-4
        rate["memory_update_rate"] = rate["memory_update_rate"].clip(lower=1e-4)
        add_band(fig, rate, "samples", "memory_update_rate", name, colour, col=1)
        for j, piece in enumerate(slices, start=2):
            add_band(fig, part[part["slice"] == piece], "samples", "bits", name, colour,
                     col=j, show_legend=False)
    fig.update_yaxes(type="log", title_text="updates per step (log)", row=1, col=1)
    fig.update_yaxes(title_text="bits per character", row=1, col=2)
    fig.update_xaxes(title_text="samples seen")
    fig.update_layout(title="Threshold sweep (curve mode)", template="plotly_white",
                      height=420, width=400 * (1 + len(slices)))
    return fig


def summarise(frame: pd.DataFrame) -> list[str]:
    """Final median BPC per slice and mean update rate per tau."""
    last = frame[frame["samples"] == frame["samples"].max()]
    lines = []
    for name, part in frame.groupby("condition", sort=False):
        rate = part.drop_duplicates(["rep", "samples"])["memory_update_rate"].mean()
        final = last[last["condition"] == name].groupby("slice")["bits"].median()
        lines.append(f"- {name}: update rate {rate:.3f}; final BPC "
                     + ", ".join(f"{s} {final[s]:.3f}" for s in SLICES if s in final))
    return lines


PRESETS = {
    "tiny": {"taus": (0.0, 1e-1), "train_tokens": 300, "eval_tokens": 100, "every": 150,
             "reps": 1, "config": TINY, "workers": 1},
    "quick": {},
    "paper": {"corpus": "text8", "train_tokens": 99_000_000, "eval_tokens": 100_000,
              "every": 1_000_000, "reps": 1, "config": PAPER},
}

EXPERIMENT = register(Experiment(
    "threshold_sweep", 9, "Threshold sweep: tau ∈ {0, 1e-3, 1e-2, 1e-1}",
    threshold_sweep, threshold_sweep_figure, PRESETS,
    "a larger tau lowers the memory update rate at little BPC cost up to 1e-2; 1e-1 hurts",
    summarise, ensembles=True))
