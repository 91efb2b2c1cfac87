"""The recall-EMA gate (SPEC §3 steps 2–3, §4 step 2) and what the gated steps return.

A memory learns from a window only while the exponential moving average of its recall
loss exceeds the threshold tau: wake gates memory 0 with it, sleep replay gates each
upper memory, and the experiments that train a memory on its own use the same rule.
This is its one Python home; the C kernels (``sharp/engines/kernels/sharp_kernels.c``)
keep a copy of the two lines of :meth:`RecallGate.update`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass
class RecallGate:
    """The recall-loss EMA of one memory and the rule that gates its learning.

    ``coefficient`` is the EMA's decay (``SharpConfig.ema``, 0.9), ``tau`` the threshold
    (``SharpConfig.tau``, nats for token memories, mean squared error for vector ones) and
    ``value`` the EMA so far (0 at the start of a stream or a replay).
    """

    coefficient: float
    tau: float
    value: float | Tensor = 0.0

    def update(self, loss: float | Tensor, active: Tensor | None = None) -> bool | Tensor:
        """Fold one window's recall ``loss`` into the EMA; True if the memory learns from
        this window (the EMA now exceeds tau).

        An ensemble keeps one gate per member: ``value`` and ``loss`` are then (M,) float64
        tensors, the result is an (M,) bool mask, and members outside the (M,) bool mask
        ``active`` (e.g. with no window left to replay) keep their EMA and never learn."""
        updated = self.coefficient * self.value + (1.0 - self.coefficient) * loss
        if active is None:
            self.value = updated
            return self.value > self.tau
        self.value = torch.where(active, updated, self.value)
        return active & (self.value > self.tau)


@dataclass(frozen=True)
class WakeOutcome:
    """What one wake step computed (SPEC §3 steps 2–6), whichever engine ran it.

    ``p``: the prediction loss in nats; ``r``: memory 0's recall loss (nats; mean squared
    error with dense inputs);
    ``learned``: whether the gate let memory 0 learn; ``logits``: the prediction made
    before learning, shape (V,); ``context``: head 0's context, shape (1, H_0), None for a
    single layer.
    """

    p: float
    r: float
    learned: bool
    logits: Tensor
    context: Tensor | None


@dataclass(frozen=True)
class ReplayOutcome:
    """What one target memory's replay training did (SPEC §4 step 2), whichever engine ran
    it: ``losses``, the recall loss (mean squared error) of every replayed window in order,
    shape (windows,); ``updates``, how many of them the gate let it learn from."""

    losses: np.ndarray
    updates: int
