"""Experiment 7 (SPEC §8): replay quality.

A 2-layer SHARP (W = 4) learns the community task (context depth 2) while, every
``tag_every`` wake steps, a context tag (its layer-0 state and the context head 1 gives
it) is stored. At every checkpoint (every ``every`` samples) each stored tag is dreamed
forward ``dream_steps`` steps exactly as in sleep (head 0 with the tag's context fixed
samples a token, memory 0 steps on it) and the dreamed layer-0 states are compared with
the layer-0 states of the wake steps since the previous checkpoint by the unbiased
RBF-kernel MMD² (bandwidth by the median heuristic):

* ``replay vs wake`` — dreamed states against each random half of the wake states
  (the mean of the two);
* ``wake split-half`` — one random half of the wake states against the other (the level
  two samples of the same distribution give);
* ``noise vs wake`` — Gaussian noise matched to the wake states' per-unit mean and std,
  against each half.

Each set is subsampled to at most ``max_points`` states. The learner sleeps on its
schedule. Values are the unbiased estimates (they may be slightly negative).

The paper's claim: dreamed states are much closer to waking states than matched noise
(replay MMD² near the wake split-half level, noise MMD² far above).
"""

from __future__ import annotations

import math

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
    periodic_argument,
    periodic_config_field,
    register,
    rep_seeds,
    run_jobs,
)
from sharp.model.learner import Sharp

REPLAY, SPLIT, NOISE = "replay vs wake", "wake split-half", "noise vs wake"
COLUMNS = ("condition", "rep", "seed", "samples", "mmd2", "sigma", "error", "optimal_error")


def median_bandwidth(x: torch.Tensor, y: torch.Tensor) -> float:
    """Median heuristic: sigma = sqrt(median of the positive pairwise squared distances of
    the pooled sample / 2)."""
    z = torch.cat([x, y]).double()
    d2 = torch.cdist(z, z).pow(2)
    values = d2[~torch.eye(len(z), dtype=torch.bool)]
    values = values[values > 0]
    return 1.0 if values.numel() == 0 else math.sqrt(float(values.median()) / 2.0)


def mmd2_unbiased(x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray,
                  sigma: float | None = None) -> tuple[float, float]:
    """Unbiased MMD² between samples ``x`` (n, d) and ``y`` (m, d) with the RBF kernel
    exp(-|a-b|²/(2σ²)); σ by the median heuristic unless given. Returns (MMD², σ)."""
    x = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x).double()
    y = torch.as_tensor(np.asarray(y) if not torch.is_tensor(y) else y).double()
    n, m = len(x), len(y)
    if n < 2 or m < 2:
        raise ValueError(f"need at least two points in each sample, got {n} and {m}")
    sigma = median_bandwidth(x, y) if sigma is None else sigma
    gamma = 1.0 / (2.0 * sigma * sigma)
    kxx = torch.exp(-gamma * torch.cdist(x, x).pow(2))
    kyy = torch.exp(-gamma * torch.cdist(y, y).pow(2))
    kxy = torch.exp(-gamma * torch.cdist(x, y).pow(2))
    within_x = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    within_y = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(within_x + within_y - 2.0 * kxy.mean()), sigma


def _subsample(x: torch.Tensor, size: int, rng: np.random.Generator) -> torch.Tensor:
    if len(x) <= size:
        return x
    return x[torch.as_tensor(rng.choice(len(x), size, replace=False))]


def _replay_job(samples: int, every: int, tag_every: int, dream_steps: int, max_points: int,
                config: SharpConfig, seed: int) -> pd.DataFrame:
    task = CommunityTask(depth=2, rule="hash")
    learner = Sharp(config)
    tokens = community_tokens(task, samples + learner.window, seed)
    stream = torch.from_numpy(tokens.astype(np.int64))
    generator = torch.Generator(device=learner.device).manual_seed(seed)
    rng = np.random.default_rng(seed)
    wake, tag_states, tag_contexts, correct, rows = [], [], [], [], []
    sleep_every = learner.config.sleep_every
    for i in range(samples):
        result = learner.learn(stream[i : i + learner.window], int(tokens[i + learner.window]))
        correct.append(result.correct)
        wake.append(learner.states[0][0].clone())
        step = i + 1
        if step % tag_every == 0:
            with torch.no_grad():
                context = learner.context()
            tag_states.append(learner.states[0].clone())
            tag_contexts.append(context.clone())
        if step % every == 0 and len(tag_states) >= 1 and len(wake) >= 4:
            awake = _subsample(torch.stack(wake), max_points, rng)
            dreams = torch.cat([state for _, state in learner.dream_steps(
                torch.cat(tag_states), torch.cat(tag_contexts), dream_steps, generator)])
            dreams = _subsample(dreams, max_points, rng)
            order = rng.permutation(len(awake))
            half_a = awake[torch.as_tensor(order[: len(order) // 2])]
            half_b = awake[torch.as_tensor(order[len(order) // 2 :])]
            noise = awake.mean(0) + awake.std(0) * torch.randn(
                awake.shape, generator=generator, dtype=awake.dtype, device=awake.device)
            error = 1.0 - float(np.mean(correct))
            pairs = {REPLAY: (dreams, None), SPLIT: (half_a, half_b), NOISE: (noise, None)}
            for name, (sample, other) in pairs.items():
                if other is not None:
                    mmd2, sigma = mmd2_unbiased(sample, other)
                else:
                    m1, s1 = mmd2_unbiased(half_a, sample)
                    m2, s2 = mmd2_unbiased(half_b, sample)
                    mmd2, sigma = (m1 + m2) / 2, math.sqrt((s1 * s1 + s2 * s2) / 2)
                rows.append({"condition": name, "samples": step, "mmd2": mmd2, "sigma": sigma,
                             "error": error})
            wake, tag_states, tag_contexts, correct = [], [], [], []
        if step % sleep_every == 0:
            learner.sleep()
    return pd.DataFrame(rows)


#: SHARP's configuration: the ``simulation`` preset (W = 4, 3-layer heads) with 2 layers at
#: the quick scale, sleeping every 2,000 steps with 17 replay steps per tag.
CONFIG = preset("simulation", layers=2, hidden=32, embedding=16, lr=3e-3, sleep_every=2_000,
                sleep_steps=17, tag_buffer=10)


def replay_quality(
    *,
    samples: int = 4_000,
    every: int = 500,
    reps: int = 3,
    config: SharpConfig = CONFIG,
    tag_every: int = 20,
    dream_steps: int = 20,
    max_points: int = 400,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """MMD² of dreamed, split-half and noise samples against waking layer-0 states of
    SHARP with ``config`` at every checkpoint, and the online error of that interval.
    Columns: :data:`COLUMNS`."""
    task = CommunityTask(depth=2, rule="hash")
    jobs = []
    for rep, rep_seed in enumerate(rep_seeds(seed, reps)):
        jobs.append(Job(_replay_job, {
            "samples": samples, "every": every, "tag_every": tag_every,
            "dream_steps": dream_steps, "max_points": max_points,
            "config": config.replace(vocab_size=task.vocab_size, seed=rep_seed),
            "seed": rep_seed}, {"rep": rep, "seed": rep_seed}, Size("samples", samples, periodic=(
                periodic_argument("every", every),
                *([periodic_config_field("config", "sleep_every", config.sleep_every)]
                  if config.sleep_every else [])))))
    frame = run_jobs(jobs, workers, progress=progress, description="replay quality")
    frame["optimal_error"] = task.optimal_error
    return frame[list(COLUMNS)]


def replay_quality_figure(frame: pd.DataFrame) -> go.Figure:
    """Left: MMD² vs samples (replay, wake split-half, noise); right: prediction error
    with the optimal line. Median and IQR across repetitions."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=(
        "MMD² to waking layer-0 states", "prediction error"))
    for i, name in enumerate((REPLAY, SPLIT, NOISE)):
        part = frame[frame["condition"] == name]
        if not part.empty:
            add_band(fig, part, "samples", "mmd2", name, COLOURS[i], col=1)
    errors = frame[frame["condition"] == frame["condition"].iloc[0]]
    add_band(fig, errors, "samples", "error", "SHARP (2 layers)", COLOURS[3], col=2)
    optimal = float(frame["optimal_error"].iloc[0])
    fig.add_trace(go.Scatter(x=[errors["samples"].min(), errors["samples"].max()],
                             y=[optimal, optimal], mode="lines", name="optimal",
                             line={"color": "black", "dash": "dash", "width": 2}), row=1, col=2)
    fig.update_xaxes(title_text="samples seen")
    fig.update_yaxes(title_text="MMD² (unbiased, RBF, median heuristic)", row=1, col=1)
    fig.update_yaxes(title_text="prediction error", row=1, col=2)
    fig.update_layout(title="Replay quality: dreamed vs waking layer-0 states",
                      template="plotly_white", height=420, width=1100)
    return fig


def summarise(frame: pd.DataFrame) -> list[str]:
    """Median MMD² per comparison over all checkpoints after the first."""
    late = frame[frame["samples"] > frame["samples"].min()]
    late = frame if late.empty else late
    table = late.groupby("condition")["mmd2"].median()
    return [f"- {name}: median MMD² {value:.4f}" for name, value in table.items()]


PRESETS = {
    "tiny": {"samples": 300, "every": 150, "reps": 1,
             "config": CONFIG.replace(hidden=8, embedding=4, sleep_every=150, sleep_steps=5),
             "tag_every": 10, "dream_steps": 5, "max_points": 100, "workers": 1},
    "quick": {},
    "paper": {"samples": 1_000_000, "every": 10_000, "reps": 10,
              "config": CONFIG.replace(hidden=100, embedding=30, lr=1e-4, sleep_every=20_000,
                                       sleep_steps=16),
              "max_points": 2_000},
}

EXPERIMENT = register(Experiment(
    "replay_quality", 7, "Replay quality: MMD² between dreamed and waking states",
    replay_quality, replay_quality_figure, PRESETS,
    "dreamed layer-0 states are close to waking ones (near the wake split-half level) and "
    "far closer than matched Gaussian noise", summarise))
