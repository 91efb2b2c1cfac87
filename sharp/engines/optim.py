"""Adam for the per-token hot path: one fused kernel call per learning-rate group and
none of ``torch.optim``'s per-step Python bookkeeping.

The update is the one ``torch.optim.Adam(fused=True)`` computes (L2 weight decay added to
the gradient, bias-corrected moments), with the same kernel, so results are identical.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn


class FusedAdam:
    """Adam over fixed groups of parameters, each group with its own learning rate."""

    def __init__(
        self,
        groups: Sequence[Iterable[nn.Parameter]],
        lrs: Sequence[float],
        *,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.groups = [list(group) for group in groups]
        if len(self.groups) != len(lrs):
            raise ValueError(f"{len(self.groups)} parameter groups but {len(lrs)} learning rates")
        # Kept in one float64 array, written in place, so that the fused engine, which reads
        # it by address, sees learning rates changed while a stream runs.
        self.lr_array = np.array(lrs, dtype=np.float64)
        self.weight_decay = weight_decay
        self.betas = betas
        self.eps = eps
        self.params = [p for group in self.groups for p in group]
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        # One step-count vector per group; the per-parameter counts the kernel reads are
        # views into it, so a step of a whole group is one increment, not one per tensor.
        device = self.params[0].device if self.params else None
        self._counts = [torch.zeros(len(group), device=device) for group in self.groups]
        self.steps = [step for counts in self._counts for step in counts.unbind()]
        bounds, start = [], 0
        for group in self.groups:
            bounds.append((start, start + len(group)))
            start += len(group)
        self._bounds = bounds
        self._index = {id(p): i for i, p in enumerate(self.params)}

    @property
    def lrs(self) -> list[float]:
        """The learning rate of every group."""
        return self.lr_array.tolist()

    @lrs.setter
    def lrs(self, lrs: Sequence[float]) -> None:
        if len(lrs) != self.lr_array.size:
            raise ValueError(f"{self.lr_array.size} parameter groups but {len(lrs)} learning rates")
        self.lr_array[:] = lrs

    def moments(self, param: nn.Parameter) -> tuple[torch.Tensor, torch.Tensor]:
        """The first and second moment tensors of ``param`` (updated in place by steps)."""
        i = self._index[id(param)]
        return self.exp_avg[i], self.exp_avg_sq[i]

    def group_counts(self, group: int) -> torch.Tensor:
        """The step counts of ``group``'s parameters, one float each (views of them are
        what :meth:`state_dict` saves)."""
        return self._counts[group]

    def zero_grad(self) -> None:
        """Drop the gradients (the next backward allocates fresh ones)."""
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """One Adam step for every parameter that has a gradient (a parameter without one,
        e.g. a clockwork module that did not tick, keeps its moments and step count)."""
        beta1, beta2 = self.betas
        for (lo, hi), lr, counts in zip(self._bounds, self.lrs, self._counts, strict=True):
            index = [i for i in range(lo, hi) if self.params[i].grad is not None]
            if not index:
                continue
            if len(index) == hi - lo:
                counts.add_(1.0)
                params, exp_avg, exp_avg_sq, steps = (
                    self.params[lo:hi], self.exp_avg[lo:hi], self.exp_avg_sq[lo:hi],
                    self.steps[lo:hi],
                )
            else:
                counts[[i - lo for i in index]] += 1.0
                params, exp_avg, exp_avg_sq, steps = (
                    [items[i] for i in index]
                    for items in (self.params, self.exp_avg, self.exp_avg_sq, self.steps)
                )
            torch._fused_adam_(
                params, [p.grad for p in params], exp_avg, exp_avg_sq, [], steps,
                lr=lr, beta1=beta1, beta2=beta2, weight_decay=self.weight_decay,
                eps=self.eps, amsgrad=False, maximize=False,
            )

    def state_dict(self) -> dict[str, Any]:
        """Moments and step counts (copies)."""
        return {
            "lrs": list(self.lrs),
            "exp_avg": [t.clone() for t in self.exp_avg],
            "exp_avg_sq": [t.clone() for t in self.exp_avg_sq],
            "steps": [t.clone() for t in self.steps],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` in place."""
        if len(state["exp_avg"]) != len(self.params):
            raise ValueError(
                f"optimiser state has {len(state['exp_avg'])} tensors, expected {len(self.params)}"
            )
        self.lrs = list(state["lrs"])
        with torch.no_grad():
            for key in ("exp_avg", "exp_avg_sq", "steps"):
                for mine, saved in zip(getattr(self, key), state[key], strict=True):
                    mine.copy_(saved)

