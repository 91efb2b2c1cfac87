"""Experiment 5 (SPEC §8): memory capacity of the layer-0 recurrent autoencoder.

For each recall window W ("BPTT window": the memory recalls its last W tokens), a fresh
token memory (V = 7) is trained online with the wake rule on one kind of sequence —
``linear`` (0, 1, ..., 6, 0, 1, ...), ``random`` (uniform i.i.d.) or ``community``
(C = 2, N = 3, context depth 2) — and frozen. Its persistent state is then run over a new
sequence of every kind (in- and cross-distribution) and a linear probe reads the token
``lag`` steps back (lag 0 = the token just consumed) from the state. An ``untrained``
memory (same initialisation, no training) is the control.

The probe is a ridge least-squares fit to one-hot targets (with a bias), fitted on the
first half of the states and scored (top-1 error) on the second half — held out, unlike
the authors, who scored on the fitting data.

The paper's claim: a trained memory recalls the tokens inside its window almost
perfectly and the error grows with the lag beyond it; larger windows recall further
back; training matters (the untrained control is worse on random sequences).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
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
    register,
    rep_seeds,
    run_jobs,
    token_memory,
    train_memory,
)

VOCAB = 7
DATASETS = ("linear", "random", "community")
UNTRAINED = "untrained"
COLUMNS = ("train", "eval", "in_distribution", "window", "lag", "rep", "seed", "error",
           "chance_error", "train_updates")


def make_sequence(kind: str, samples: int, seed: int) -> np.ndarray:
    """``samples`` tokens (V = 7) of a ``linear``, ``random`` or ``community`` sequence."""
    rng = np.random.default_rng(seed)
    if kind == "linear":
        return (np.arange(samples) + int(rng.integers(VOCAB))) % VOCAB
    if kind == "random":
        return rng.integers(0, VOCAB, size=samples)
    if kind == "community":
        return community_tokens(CommunityTask(depth=2, rule="hash"), samples, seed)
    raise ValueError(f"unknown sequence kind {kind!r}; choose one of {list(DATASETS)}")


def probe_error(states: np.ndarray, tokens: np.ndarray, lag: int, *, ridge: float = 1e-3,
                vocab: int = VOCAB) -> float:
    """Held-out top-1 error of a ridge linear probe reading ``tokens[t - lag]`` from
    ``states[t]``: fitted on the first half of the positions, scored on the second.
    (Solved with torch, which the experiment's jobs keep on one thread.)"""
    x = torch.as_tensor(np.asarray(states)[lag:], dtype=torch.float64)
    y = torch.as_tensor(np.asarray(tokens)[: len(tokens) - lag], dtype=torch.long)
    x = torch.cat([x, torch.ones(len(x), 1, dtype=torch.float64)], dim=1)
    half = len(x) // 2
    if half < 2:
        raise ValueError(f"need more states to fit a probe at lag {lag}, got {len(states)}")
    onehot = torch.nn.functional.one_hot(y[:half], vocab).double()
    gram = x[:half].T @ x[:half] + ridge * torch.eye(x.shape[1], dtype=torch.float64)
    weights = torch.linalg.solve(gram, x[:half].T @ onehot)
    predicted = (x[half:] @ weights).argmax(1)
    return float((predicted != y[half:]).double().mean())


def _capacity_job(config: SharpConfig, datasets: Sequence[str], lags: Sequence[int],
                  train_samples: int, probe_samples: int, ridge: float,
                  seed: int) -> pd.DataFrame:
    probes = {kind: make_sequence(kind, probe_samples, seed + 1) for kind in datasets}
    rows = []
    for train in (*datasets, UNTRAINED):
        memory = token_memory(config, VOCAB, seed)  # same initialisation for every training set
        updates = 0
        if train != UNTRAINED:
            updates = train_memory(memory, make_sequence(train, train_samples, seed), config)
        for kind, tokens in probes.items():
            states = memory_states(memory, tokens)
            for lag in lags:
                rows.append({"train": train, "eval": kind, "in_distribution": train == kind,
                             "window": config.window, "lag": lag,
                             "error": probe_error(states, tokens, lag, ridge=ridge),
                             "chance_error": 1.0 - 1.0 / VOCAB, "train_updates": updates})
    return pd.DataFrame(rows)


#: Memory 0 of a SHARP in the ``simulation`` preset with H = 32, E = 16, lr 3e-3, learning on
#: every step (tau = 0); the conditions set its ``window``.
CONFIG = preset("simulation", layers=1, hidden=32, embedding=16, lr=3e-3, tau=0.0)


def memory_capacity(
    *,
    windows: Sequence[int] = (2, 4, 6),
    lags: Sequence[int] = (1, 2, 3, 4, 5, 6),
    datasets: Sequence[str] = DATASETS,
    train_samples: int = 3_000,
    probe_samples: int = 2_000,
    reps: int = 3,
    config: SharpConfig = CONFIG,
    ridge: float = 1e-3,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Probe error per training set (plus ``untrained``) × probe set × window × lag ×
    repetition, for ``config``'s layer-0 memory with its ``window`` replaced by each of
    ``windows``. Columns: :data:`COLUMNS`."""
    jobs = [
        Job(_capacity_job, {
            "config": config.replace(window=window), "datasets": tuple(datasets),
            "lags": tuple(lags), "train_samples": train_samples,
            "probe_samples": probe_samples, "ridge": ridge, "seed": rep_seed,
        }, {"rep": rep, "seed": rep_seed}, Size("train_samples", train_samples))
        for rep, rep_seed in enumerate(rep_seeds(seed, reps)) for window in windows
    ]
    frame = run_jobs(jobs, workers, progress=progress, description="memory capacity")
    return frame[list(COLUMNS)]


def memory_capacity_figure(frame: pd.DataFrame) -> go.Figure:
    """Grid: rows = trained on (plus the untrained control), columns = tested on; probe
    error vs lag, one median/IQR band per window; dashed line = chance."""
    trains = [t for t in (*DATASETS, UNTRAINED) if t in set(frame["train"])]
    evals = [e for e in DATASETS if e in set(frame["eval"])]
    fig = make_subplots(rows=len(trains), cols=len(evals), shared_xaxes=True,
                        shared_yaxes=True, column_titles=[f"tested on {e}" for e in evals],
                        row_titles=[f"trained on {t}" if t != UNTRAINED else "untrained"
                                    for t in trains], vertical_spacing=0.05,
                        horizontal_spacing=0.03)
    windows = sorted(frame["window"].unique())
    chance = float(frame["chance_error"].iloc[0])
    lags = frame["lag"]
    for i, train in enumerate(trains, start=1):
        for j, kind in enumerate(evals, start=1):
            part = frame[(frame["train"] == train) & (frame["eval"] == kind)]
            for k, window in enumerate(windows):
                add_band(fig, part[part["window"] == window], "lag", "error",
                         f"window W={window}", COLOURS[k % len(COLOURS)], row=i, col=j,
                         show_legend=i == 1 and j == 1, markers=True)
            fig.add_trace(go.Scatter(x=[lags.min(), lags.max()], y=[chance, chance],
                                     mode="lines", name="chance", legendgroup="chance",
                                     showlegend=i == 1 and j == 1,
                                     line={"color": "black", "dash": "dash", "width": 1}),
                          row=i, col=j)
    fig.update_yaxes(range=[-0.02, 1.0])
    fig.update_xaxes(title_text="how far back (lag, tokens)", row=len(trains))
    fig.update_layout(title="Memory capacity: held-out linear-probe recall error",
                      template="plotly_white", height=220 * len(trains) + 120,
                      width=300 * len(evals) + 250)
    return fig


def summarise(frame: pd.DataFrame) -> list[str]:
    """Median error by lag on random sequences (or the first kind tested): per window for
    the memories trained on that kind, and for the untrained control."""
    kind = "random" if "random" in set(frame["eval"]) else str(frame["eval"].iloc[0])
    table = frame[frame["eval"] == kind].pivot_table(
        index=["train", "window"], columns="lag", values="error", aggfunc="median")
    windows = sorted(frame["window"].unique())
    rows = [(kind, window, f"trained on {kind}, W={window}") for window in windows]
    rows.append((UNTRAINED, windows[0], "untrained"))
    return [f"- tested on {kind}, {label}: median error by lag "
            + ", ".join(f"{lag}: {value:.2f}" for lag, value in table.loc[(train, window)].items())
            for train, window, label in rows if (train, window) in table.index]


PRESETS = {
    "tiny": {"windows": (2, 4), "lags": (1, 2, 5), "train_samples": 300,
             "probe_samples": 400, "reps": 1, "config": CONFIG.replace(hidden=16, embedding=8),
             "workers": 1},
    "quick": {},
    "paper": {"windows": (2, 3, 4, 5, 6), "lags": (2, 3, 4, 5, 6), "train_samples": 10_000,
              "probe_samples": 10_000, "reps": 10,
              "config": CONFIG.replace(hidden=100, embedding=30, lr=6e-4)},
}

EXPERIMENT = register(Experiment(
    "memory_capacity", 5, "Memory capacity: linear-probe recall vs distance into the past",
    memory_capacity, memory_capacity_figure, PRESETS,
    "trained memories recall tokens inside their window almost perfectly, the error grows "
    "with the distance beyond it; the untrained control recalls worse", summarise))
