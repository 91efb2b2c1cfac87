"""Experiment 3 (SPEC §8): head capacity.

A 2-layer SHARP (W = 4, sleeping on its schedule) on the community task with context
depth K = 4 (required context 13 tokens), with prediction heads of 1..5 linear layers.
Only ``head_layers`` changes between conditions; every condition uses the same seeds and
so the same data. The paper's claim: the memory does no credit assignment, so the heads
must turn its states into the prediction — one linear layer stays far from the optimal
error, deeper heads approach it.

The ``paper`` preset is that setting. The ``quick`` preset (one minute on 2 cores) runs a
1-layer SHARP (memory and one head, no context from above) on context depth 2: there a
one-layer head stays near 0.30 while three or more layers reach about 0.26 within 5,000
samples. A 2-layer SHARP on depth 2 or 4 shows no ordering at that length (its FiLM
context already gives a one-layer head enough capacity, and deeper heads learn slower).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import pandas as pd
import plotly.graph_objects as go

from sharp.config import SharpConfig, preset
from sharp.data.community import CommunityTask
from sharp.experiments.common import (
    SIMULATION_WINDOW,
    CommunityStream,
    Condition,
    Experiment,
    band_figure,
    community_runs,
    late_error,
    register,
    sharp_spec,
    window_error,
)

COLUMNS = ("condition", "head_layers", "rep", "seed", "samples", "error", "bits",
           "memory_update_rate", "layers", "depth", "optimal_error", "window_error")


#: SHARP's configuration: the ``simulation`` preset (W = 4) with 2 layers, at the quick
#: scale; the conditions change ``head_layers`` only.
CONFIG = preset("simulation", layers=2, hidden=32, embedding=16, lr=3e-3, sleep_every=1_500,
                tag_buffer=20)


def head_capacity(
    *,
    head_layers: Sequence[int] = (1, 2, 3, 4, 5),
    samples: int = 3_000,
    reps: int = 2,
    depth: int = 4,
    rule: Literal["hash", "sum"] = "hash",
    config: SharpConfig = CONFIG,
    every: int = 500,
    seed: int = 0,
    reuse_sequence: bool = False,
    workers: int | None = None,
    progress: bool = True,
    ensemble: str = "auto",
) -> pd.DataFrame:
    """Online error of SHARP with ``config`` for each number of head layers;
    ``window_error`` is the best error from the last W tokens alone (:func:`window_error`).
    ``ensemble`` (``auto``, ``on``, ``off``): whether each condition's repetitions run
    as one ensemble job (:func:`~sharp.experiments.common.community_runs`).
    Columns: :data:`COLUMNS`."""

    def conditions(task: CommunityTask, rep_seed: int) -> list[Condition]:
        return [Condition(sharp_spec(config, task, rep_seed, f"{n} head layer" + "s" * (n > 1),
                                     head_layers=n),
                          sleep=True, columns={"head_layers": n}) for n in head_layers]

    stream = CommunityStream(samples, every, rule, seed, reuse_sequence)
    frame = community_runs(conditions, stream, depths=(depth,), reps=reps, workers=workers,
                           progress=progress, ensemble=ensemble, description="head capacity")
    frame["layers"] = config.layers
    frame["window_error"] = window_error(stream.task(depth), config.window)
    return frame[list(COLUMNS)]


def head_capacity_figure(frame: pd.DataFrame) -> go.Figure:
    """Online error vs samples, one median/IQR band per head depth, the optimal error and
    the best error from the last W tokens."""
    return band_figure(frame, x="samples", y="error",
                       optimal=float(frame["optimal_error"].iloc[0]),
                       levels={"window_error": f"best from the last {SIMULATION_WINDOW} tokens"},
                       title=f"Head capacity: {int(frame['layers'].iloc[0])}-layer SHARP, "
                       f"context depth {int(frame['depth'].iloc[0])}",
                       x_title="samples seen", y_title="prediction error")


def summarise(frame: pd.DataFrame) -> list[str]:
    """Per head depth, the median across repetitions of the mean error over the last
    quarter of the stream."""
    table = late_error(frame, ["head_layers"]).groupby("head_layers").median()
    return [f"- median error, last quarter, {n} head layer(s): {v:.3f}"
            for n, v in table.items()] + [
        f"- best error from the last {SIMULATION_WINDOW} tokens: "
        f"{frame['window_error'].iloc[0]:.3f}"]


PRESETS = {
    "tiny": {"head_layers": (1, 3), "samples": 300, "reps": 1,
             "config": CONFIG.replace(hidden=8, embedding=4, sleep_every=150, sleep_steps=5,
                                      tag_buffer=3),
             "every": 100, "workers": 1},
    "quick": {"config": CONFIG.replace(layers=1), "depth": 2, "samples": 5_000, "every": 500},
    "paper": {"samples": 1_000_000, "reps": 10,
              "config": CONFIG.replace(hidden=100, embedding=30, lr=1e-4, sleep_every=20_000,
                                       tag_buffer=100),
              "every": 1000},
}

EXPERIMENT = register(Experiment(
    "head_capacity", 3,
    "Head capacity: 1..5 head layers (paper: 2-layer SHARP, context depth 4)",
    head_capacity, head_capacity_figure, PRESETS,
    "a one-layer head stays far from the optimal error; deeper heads approach it",
    summarise, ensembles=True))
