"""Experiment 8 (SPEC §8): sleep ablations on text (bundled ``wiki`` by default).

One stream of ``train_tokens`` characters is learned once by a SHARP learner per
condition; every ``every`` steps the learner is evaluated without learning (curve mode)
on three slices, each from a reset state:

* ``backward`` — the first ``eval_tokens`` tokens of the stream (retention),
* ``current`` — the last ``eval_tokens`` tokens seen so far (adaptation),
* ``forward`` — the corpus's last ``eval_tokens`` tokens, never trained on.

Conditions (one change each from ``sleep``, all on the same seeds and stream):

* ``sleep`` — the configuration as given, sleeping every ``sleep_every`` steps;
* ``no sleep`` — never sleeps (upper memories keep their initialisation);
* ``no sleep, reservoir init (authors')`` — the authors' no-sleep run, which also used the
  all-ones reservoir initialisation of the upper encoders;
* ``constant head lr`` — ``lr_slowdown = 1``: every head learns at ``lr``;
* ``wake-only, all memories online`` — :class:`WakeAllMemories`: never sleeps, and
  memories 1..L-1 learn online in wake from the waking trajectory (see there).

The paper's claim: sleep gives the best forward/backward BPC; without sleep (upper
memories never trained) or with upper memories trained online in wake, BPC is worse;
slowing the upper heads' learning rate helps.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from torch import Tensor

from sharp.config import SharpConfig, preset
from sharp.data.corpus import load_corpus
from sharp.experiments.common import (
    Experiment,
    Job,
    band_figure,
    register,
    rep_seeds,
    run_jobs,
)
from sharp.learner import Sharp
from sharp.optim import FusedAdam
from sharp.runner import evaluate_slices, run_stream

SLICES = ("forward", "current", "backward")
SLEEP = "sleep"
NO_SLEEP = "no sleep"
NO_SLEEP_RESERVOIR = "no sleep, reservoir init (authors')"
CONSTANT_LR = "constant head lr"
WAKE_ALL = "wake-only, all memories online"
CONDITIONS = (SLEEP, NO_SLEEP, NO_SLEEP_RESERVOIR, CONSTANT_LR, WAKE_ALL)
COLUMNS = ("condition", "rep", "seed", "samples", "slice", "bits", "accuracy",
           "memory_update_rate", "sleeps")


class WakeAllMemories(Sharp):
    """The wake-only ablation: a SHARP learner whose memories 1..L-1 also learn online in
    wake, and which is meant never to sleep.

    Whenever layer l ≥ 1 ticks in the wake step (after its state has advanced), the last
    W states of layer l-1 at its ticks form a window; memory l encodes it from its carried
    state (the state after the window's first element is carried on, as in sleep),
    computes the MSE recall loss, updates its own recall EMA and takes one Adam step (lr)
    when that EMA exceeds tau — the rule sleep uses, applied to the waking trajectory
    instead of dreams. Windows start as W zero vectors. Memory 0 and the heads learn as in
    :class:`Sharp`. (The authors' variant stepped on every tick, encoding each window from
    a zero state.)
    """

    def __init__(self, config: SharpConfig) -> None:
        super().__init__(config)
        c = config
        self.upper_opts = {
            level: FusedAdam([self.memories[level].parameters()], [c.lr],
                             weight_decay=c.weight_decay)
            for level in range(1, c.layers)
        }
        self._reset_upper()

    def _reset_upper(self) -> None:
        c = self.config
        self.upper_windows: dict[int, deque[Tensor]] = {
            level: deque((self._zeros(c.hidden[level - 1]) for _ in range(c.window)),
                         maxlen=c.window)
            for level in range(1, c.layers)
        }
        self.upper_carry = {level: self._zeros(c.hidden[level]) for level in range(1, c.layers)}
        self.upper_ema = dict.fromkeys(range(1, c.layers), 0.0)
        self.upper_updates = 0

    def reset_state(self) -> None:
        """Also forget the upper memories' windows, carries and EMAs."""
        super().reset_state()
        if hasattr(self, "upper_opts"):
            self._reset_upper()

    def _advance(self, token: Tensor) -> None:
        super()._advance(token)
        c = self.config
        for level in range(1, c.layers):
            if self.t % self.strides[level]:
                break
            memory = self.memories[level]
            self.upper_windows[level].append(self.states[level - 1].detach())
            window = torch.stack(tuple(self.upper_windows[level]), dim=1)
            recall, _, after_first = memory.encode(window, self.upper_carry[level])
            self.upper_carry[level] = after_first.detach()
            loss = memory.recall_loss(window, recall)
            self.upper_ema[level] = c.ema * self.upper_ema[level] + (1 - c.ema) * loss.item()
            if self.upper_ema[level] > c.tau:
                optimiser = self.upper_opts[level]
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                self.upper_updates += 1


def text_curve_job(config: dict, corpus: str, train_tokens: int, eval_tokens: int, every: int,
                   sleep: bool, wake_all: bool = False) -> pd.DataFrame:
    """Stream the first ``train_tokens`` tokens of ``corpus`` through a fresh learner
    once, evaluating the three slices every ``every`` steps. One row per checkpoint ×
    slice; ``memory_update_rate`` is memory 0's over the interval."""
    tokens = load_corpus(corpus).tokens.astype(np.int64)
    if train_tokens + eval_tokens > len(tokens):
        raise ValueError(f"corpus {corpus!r} has {len(tokens)} tokens, fewer than "
                         f"train_tokens + eval_tokens = {train_tokens + eval_tokens}")
    learner = (WakeAllMemories if wake_all else Sharp)(SharpConfig.from_dict(config))
    window = learner.window
    train = tokens[:train_tokens]
    forward = tokens[-eval_tokens:]
    backward = train[:eval_tokens]
    total = len(train) - window
    rows = []
    for start in range(0, total, every):
        stop = min(start + every, total)
        records = run_stream(learner, train[start : stop + window],
                             sleep_every=None if sleep else 0, offset=start, progress=False)
        seen = stop + window
        current = train[max(0, seen - eval_tokens) : seen]
        evaluation = evaluate_slices(learner, {"forward": forward, "current": current,
                                               "backward": backward})
        for row in evaluation.itertuples(index=False):
            rows.append({"samples": stop, "slice": row.slice, "bits": row.bits,
                         "accuracy": row.accuracy,
                         "memory_update_rate": float(records["memory_learned"].mean()),
                         "sleeps": int(records["slept"].sum())})
    return pd.DataFrame(rows)


def text_config(*, layers: int, hidden: int, embedding: int, lr: float, tau: float,
                sleep_every: int, sleep_steps: int | None, tag_buffer: int, seed: int,
                **changes: object) -> SharpConfig:
    """The text8-small configuration at the given scale (W = 4, FiLM heads)."""
    return preset("text8-small", layers=layers, hidden=hidden, embedding=embedding, lr=lr,
                  tau=tau, sleep_every=sleep_every, sleep_steps=sleep_steps,
                  tag_buffer=tag_buffer, seed=seed, **changes)


def sleep_ablation(
    *,
    conditions: Sequence[str] = CONDITIONS,
    corpus: str = "wiki",
    train_tokens: int = 3_000,
    eval_tokens: int = 500,
    every: int = 1_000,
    reps: int = 2,
    layers: int = 3,
    hidden: int = 32,
    embedding: int = 16,
    lr: float = 3e-3,
    tau: float = 1e-2,
    sleep_every: int = 1_000,
    sleep_steps: int | None = 17,
    tag_buffer: int = 5,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """BPC of every slice at every checkpoint per condition and repetition (curve mode).
    Columns: :data:`COLUMNS`."""
    unknown = sorted(set(conditions) - set(CONDITIONS))
    if unknown:
        raise ValueError(f"unknown conditions {unknown}; choose from {list(CONDITIONS)}")
    scale = {"layers": layers, "hidden": hidden, "embedding": embedding, "lr": lr, "tau": tau,
             "sleep_every": sleep_every, "sleep_steps": sleep_steps, "tag_buffer": tag_buffer}
    changes = {SLEEP: {}, NO_SLEEP: {}, NO_SLEEP_RESERVOIR: {"init": "reservoir"},
               CONSTANT_LR: {"lr_slowdown": 1.0}, WAKE_ALL: {}}
    jobs = []
    for rep, rep_seed in enumerate(rep_seeds(seed, reps)):
        for name in conditions:
            config = text_config(seed=rep_seed, **scale, **changes[name])
            jobs.append(Job(text_curve_job, {
                "config": config.to_dict(), "corpus": corpus, "train_tokens": train_tokens,
                "eval_tokens": eval_tokens, "every": every,
                "sleep": name in (SLEEP, CONSTANT_LR), "wake_all": name == WAKE_ALL,
            }, {"condition": name, "rep": rep, "seed": rep_seed}))
    frame = run_jobs(jobs, workers, progress=progress, description="sleep ablation")
    return frame[list(COLUMNS)]


def sleep_ablation_figure(frame: pd.DataFrame) -> go.Figure:
    """Forward / current / backward panels: BPC vs samples, median and IQR."""
    return band_figure(frame, x="samples", y="bits", panel="slice",
                       panel_order=[s for s in SLICES if s in set(frame["slice"])],
                       title="Sleep ablations on text (curve mode)",
                       x_title="samples seen", y_title="bits per character")


def summarise(frame: pd.DataFrame) -> list[str]:
    """Final median BPC per condition and slice."""
    last = frame[frame["samples"] == frame["samples"].max()]
    table = last.pivot_table(index="condition", columns="slice", values="bits",
                             aggfunc="median")
    return [f"- {name}: " + ", ".join(f"{s} {row[s]:.3f}" for s in SLICES if s in row)
            for name, row in table.iterrows()]


PRESETS = {
    "tiny": {"conditions": (SLEEP, WAKE_ALL), "train_tokens": 300, "eval_tokens": 100,
             "every": 150, "reps": 1, "layers": 2, "hidden": 8, "embedding": 4,
             "sleep_every": 150, "sleep_steps": 5, "tag_buffer": 2, "workers": 1},
    "quick": {},
    "paper": {"corpus": "text8", "train_tokens": 99_000_000, "eval_tokens": 100_000,
              "every": 1_000_000, "reps": 1, "layers": 5, "hidden": 128, "embedding": 30,
              "lr": 1e-4, "tau": 1e-2, "sleep_every": 20_000, "sleep_steps": None,
              "tag_buffer": 20},
}

EXPERIMENT = register(Experiment(
    "sleep_ablation", 8, "Sleep ablations on text: sleep, no sleep, constant head lr, "
    "wake-only with all memories online", sleep_ablation, sleep_ablation_figure, PRESETS,
    "sleep gives the lowest forward/backward BPC; no sleep and wake-only training of the "
    "upper memories are worse; constant head learning rates are worse", summarise))
