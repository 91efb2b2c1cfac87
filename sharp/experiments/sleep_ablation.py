"""Experiment 8 (SPEC §8): sleep ablations on text (bundled ``wiki`` by default).

The text-stream protocol of :mod:`sharp.experiments.text_stream`: one stream learned once
per condition, evaluated every ``every`` steps (curve mode) on the forward, current and
backward slices.

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

import copy
from collections import deque
from collections.abc import Sequence
from typing import Any, Unpack

import pandas as pd
import plotly.graph_objects as go
import torch
from torch import Tensor

from sharp.config import SharpConfig
from sharp.engines.optim import FusedAdam
from sharp.experiments.common import Experiment, band_figure, register
from sharp.experiments.text_stream import (
    CONFIG,
    PAPER,
    SLICES,
    TINY,
    TextCondition,
    TextStream,
    text_curves,
)
from sharp.model.gate import RecallGate
from sharp.model.learner import Sharp

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
        # The upper memories learn in advance(), a step of the torch engine only.
        super().__init__(config.replace(engine="torch"))
        c = self.config
        self.upper_opts = {
            level: FusedAdam([self.memories[level].parameters()], [c.lr],
                             weight_decay=c.weight_decay)
            for level in range(1, c.layers)
        }
        self._reset_upper()

    def apply_config(self, changed: set[str]) -> None:
        """Also give the upper memories' optimisers a new ``lr`` and their gates a new
        ``tau``."""
        super().apply_config(changed)
        if "lr" in changed:
            for optimiser in self.upper_opts.values():
                optimiser.lrs = [self.config.lr]
        if "tau" in changed:
            for gate in self.upper_gates.values():
                gate.tau = self.config.tau

    def _reset_upper(self) -> None:
        c = self.config
        self.upper_windows: dict[int, deque[Tensor]] = {
            level: deque((self._zeros(c.hidden[level - 1]) for _ in range(c.window)),
                         maxlen=c.window)
            for level in range(1, c.layers)
        }
        self.upper_carry = {level: self._zeros(c.hidden[level]) for level in range(1, c.layers)}
        self.upper_gates = {level: RecallGate(c.ema, c.tau) for level in range(1, c.layers)}
        self.upper_updates = 0

    def reset_state(self) -> None:
        """Also forget the upper memories' windows, carries and EMAs."""
        super().reset_state()
        if hasattr(self, "upper_opts"):
            self._reset_upper()

    def state_dict(self) -> dict[str, Any]:
        """:meth:`Sharp.state_dict` plus the upper memories' optimisers, windows, carries,
        recall EMAs and update count (``upper``), so a resumed stream continues exactly."""
        state = super().state_dict()
        state["upper"] = copy.deepcopy({
            "opts": [self.upper_opts[level].state_dict() for level in self._levels],
            "windows": [list(self.upper_windows[level]) for level in self._levels],
            "carry": [self.upper_carry[level] for level in self._levels],
            "ema": [float(self.upper_gates[level].value) for level in self._levels],
            "updates": self.upper_updates,
        })
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; a state without ``upper`` (a plain SHARP learner's)
        raises KeyError."""
        super().load_state_dict(state)
        upper = copy.deepcopy(state["upper"])
        for i, level in enumerate(self._levels):
            self.upper_opts[level].load_state_dict(upper["opts"][i])
            self.upper_windows[level].clear()
            self.upper_windows[level].extend(t.to(self.device) for t in upper["windows"][i])
            self.upper_carry[level] = upper["carry"][i].to(self.device)
            self.upper_gates[level].value = float(upper["ema"][i])
        self.upper_updates = int(upper["updates"])

    @property
    def _levels(self) -> range:
        """The upper memories' levels, 1..L-1."""
        return range(1, self.config.layers)

    def advance(self, token: Tensor) -> None:
        """Advance the layers as :meth:`Sharp.advance`, then let every upper memory that
        ticked learn from its window of the waking trajectory."""
        super().advance(token)
        for level in range(1, self.config.layers):
            if self.t % self.strides[level]:
                break
            memory = self.memories[level]
            self.upper_windows[level].append(self.states[level - 1].detach())
            window = torch.stack(tuple(self.upper_windows[level]), dim=1)
            recall, _, after_first = memory.encode(window, self.upper_carry[level])
            self.upper_carry[level] = after_first.detach()
            loss = memory.recall_loss(window, recall)
            if self.upper_gates[level].update(loss.item()):
                optimiser = self.upper_opts[level]
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                self.upper_updates += 1


def sleep_ablation(*, conditions: Sequence[str] = CONDITIONS, config: SharpConfig = CONFIG,
                   **stream: Unpack[TextStream]) -> pd.DataFrame:
    """BPC of every slice at every checkpoint per condition and repetition (curve mode),
    each condition ``config`` with its one change; ``stream``: the corpus, repetitions,
    seed and ``ensemble`` (:class:`TextStream`, defaults
    :data:`~sharp.experiments.text_stream.DEFAULTS`; the wake-only condition's repetitions
    never run as an ensemble). Columns: :data:`COLUMNS`."""
    unknown = sorted(set(conditions) - set(CONDITIONS))
    if unknown:
        raise ValueError(f"unknown conditions {unknown}; choose from {list(CONDITIONS)}")
    settings = {  # name: (config changes, sleeps, learner class)
        SLEEP: ({}, True, Sharp),
        NO_SLEEP: ({}, False, Sharp),
        NO_SLEEP_RESERVOIR: ({"init": "reservoir"}, False, Sharp),
        CONSTANT_LR: ({"lr_slowdown": 1.0}, True, Sharp),
        WAKE_ALL: ({}, False, WakeAllMemories),
    }
    runs = [TextCondition({"condition": name}, *settings[name]) for name in conditions]
    frame = text_curves(runs, description="sleep ablation", config=config, **stream)
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
             "every": 150, "reps": 1, "config": TINY, "workers": 1},
    "quick": {"train_tokens": 5_000, "config": CONFIG.replace(hidden=64)},
    "paper": {"corpus": "text8", "train_tokens": 99_000_000, "eval_tokens": 100_000,
              "every": 1_000_000, "reps": 1, "config": PAPER},
}

EXPERIMENT = register(Experiment(
    "sleep_ablation", 8, "Sleep ablations on text: sleep, no sleep, constant head lr, "
    "wake-only with all memories online", sleep_ablation, sleep_ablation_figure, PRESETS,
    "sleep gives the lowest forward/backward BPC; no sleep and wake-only training of the "
    "upper memories are worse; constant head learning rates are worse", summarise,
    ensembles=True))
