"""Experiment 6 (SPEC §8): hidden-state drift with and without the loss threshold.

A layer-0 token memory (W = 4) learns online on the community task with the wake rule:
one Adam step whenever the recall-loss EMA exceeds ``tau``. Every ``every`` samples its
persistent states are recomputed, from a zero state, over a fixed probe sequence (the same
for every repetition and condition); the drift is the mean over probe positions of the
Euclidean distance between those states and the ones at the previous checkpoint. The
only difference between the conditions is ``tau`` (0 = learn on every step).

The paper's claim: with the threshold, memory learning stops once recall is good, so the
codes the heads read stay put (drift falls to zero); without it they keep drifting.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from sharp.config import SharpConfig, preset
from sharp.data.community import CommunityTask
from sharp.experiments.common import (
    COLOURS,
    Experiment,
    Job,
    Size,
    add_band,
    community_tokens,
    memory_states,
    periodic_argument,
    register,
    rep_seeds,
    run_jobs,
    token_memory,
    train_memory,
)

COLUMNS = ("condition", "tau", "rep", "seed", "samples", "drift", "memory_update_rate")


def condition_label(tau: float) -> str:
    """``no threshold (tau=0)`` or ``loss-thresholded (tau=...)``."""
    return "no threshold (tau=0)" if tau == 0 else f"loss-thresholded (tau={tau:g})"


def _drift_job(config: SharpConfig, samples: int, every: int, probe: np.ndarray,
               seed: int) -> pd.DataFrame:
    task = CommunityTask(depth=2, rule="hash")
    tokens = community_tokens(task, samples + config.window - 1, seed)
    memory = token_memory(config, task.vocab_size, seed)
    previous = [memory_states(memory, probe)]
    last_updates = [0]
    rows = []

    def checkpoint(step: int, updates: int) -> None:
        states = memory_states(memory, probe)
        drift = float(np.linalg.norm(states - previous[0], axis=1).mean())
        rows.append({"samples": step, "drift": drift,
                     "memory_update_rate": (updates - last_updates[0]) / every})
        previous[0], last_updates[0] = states, updates

    train_memory(memory, tokens, config, every=every, callback=checkpoint)
    return pd.DataFrame(rows)


#: Memory 0 of a SHARP in the ``simulation`` preset (W = 4) with H = 32, E = 16, lr 1e-3;
#: the conditions set its ``tau``.
CONFIG = preset("simulation", layers=1, hidden=32, embedding=16, lr=1e-3)


def drift(
    *,
    taus: Sequence[float] = (0.0, 1e-3),
    samples: int = 6_000,
    every: int = 250,
    reps: int = 3,
    config: SharpConfig = CONFIG,
    probe_tokens: int = 20,
    probe_seed: int = 12345,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Drift of the states of ``config``'s layer-0 memory on a fixed probe sequence between
    checkpoints, per threshold (``config.tau`` replaced by each of ``taus``).
    Columns: :data:`COLUMNS`."""
    probe = community_tokens(CommunityTask(depth=2, rule="hash"), probe_tokens, probe_seed)
    jobs = [
        Job(_drift_job, {"config": config.replace(tau=tau), "samples": samples, "every": every,
                         "probe": probe, "seed": rep_seed},
            {"condition": condition_label(tau), "tau": tau, "rep": rep, "seed": rep_seed},
            Size("samples", samples, periodic=(periodic_argument("every", every),)))
        for rep, rep_seed in enumerate(rep_seeds(seed, reps)) for tau in taus
    ]
    frame = run_jobs(jobs, workers, progress=progress, description="drift")
    return frame[list(COLUMNS)]


def drift_figure(frame: pd.DataFrame) -> go.Figure:
    """Drift (top) and memory update rate (bottom) vs samples: median and IQR."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.65, 0.35],
                        subplot_titles=("hidden-state drift between checkpoints",
                                        "memory update rate"))
    for i, name in enumerate(frame["condition"].unique()):
        part = frame[frame["condition"] == name]
        colour = COLOURS[i % len(COLOURS)]
        add_band(fig, part, "samples", "drift", name, colour, row=1)
        add_band(fig, part, "samples", "memory_update_rate", name, colour, row=2,
                 show_legend=False, dash="dot")
    fig.update_xaxes(title_text="samples seen", row=2)
    fig.update_yaxes(title_text="drift (mean L2)", row=1)
    fig.update_yaxes(title_text="rate", range=[0, 1.05], row=2)
    fig.update_layout(title="Hidden-state drift with and without the loss threshold",
                      template="plotly_white", height=600, width=800)
    return fig


def summarise(frame: pd.DataFrame) -> list[str]:
    """Median drift and update rate over the second half of the stream."""
    late = frame[frame["samples"] > 0.5 * frame["samples"].max()]
    table = late.groupby("condition")[["drift", "memory_update_rate"]].median()
    return [f"- {name}: median drift (second half) {row.drift:.4f}, update rate "
            f"{row.memory_update_rate:.2f}" for name, row in table.iterrows()]


PRESETS = {
    "tiny": {"samples": 400, "every": 100, "reps": 1,
             "config": CONFIG.replace(hidden=8, embedding=4), "workers": 1},
    "quick": {"taus": (0.0, 1e-2), "config": CONFIG.replace(lr=3e-3), "samples": 10_000},
    "paper": {"samples": 500_000, "every": 1000, "reps": 10,
              "config": CONFIG.replace(hidden=100, embedding=30)},
}

EXPERIMENT = register(Experiment(
    "drift", 6, "Hidden-state drift with and without the loss threshold",
    drift, drift_figure, PRESETS,
    "with the loss threshold the memory states drift less (learning stops once recall is "
    "good); without it they keep drifting", summarise))
