"""Adam over M stacked learners: per-member step counts and a per-member mask, with the
arithmetic of :class:`sharp.engines.optim.FusedAdam`.

A stacked parameter is (M, *shape); member m's slice is an ordinary contiguous tensor of
the single learner's shape. Each step hands every member's slices to the same fused kernel
``FusedAdam`` uses (``torch._fused_adam_``), each slice with its member's step count, so
every member's update is bit for bit a separate learner's: the kernel's vectorised body and
scalar tail fall on the same elements as for the unstacked tensor, which is why the slices
are passed one by one rather than the stacked tensor whole. The per-member mask is a device
tensor: members outside it are restored with ``torch.where`` rather than left out of the
kernel's list, so a step never reads the mask back and a CUDA graph can capture it (the
fused kernel reads the step counts on the device there).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor


class BatchedAdam:
    """Adam for groups of stacked parameters (M, ...), one learning rate per group and one
    step count per group and member.

    A member that does not learn in a step (mask False) keeps its weights, moments and
    step count. L2 weight decay is added to the gradient, moments are bias-corrected, as
    in ``torch.optim.Adam(fused=True)``.
    """

    def __init__(
        self,
        groups: Sequence[Sequence[Tensor]],
        lrs: Sequence[float],
        *,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.groups = [list(group) for group in groups]
        if len(self.groups) != len(lrs) or not all(self.groups):
            raise ValueError(f"{len(self.groups)} parameter groups (each non-empty) but "
                             f"{len(lrs)} learning rates")
        self.lrs = [float(lr) for lr in lrs]
        self.weight_decay = weight_decay
        self.betas = betas
        self.eps = eps
        self.params = [p for group in self.groups for p in group]
        self.members = self.params[0].shape[0]
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        #: Steps taken, (groups, M) float32: every parameter of a group steps together.
        self.counts = torch.zeros(len(self.groups), self.members, device=self.params[0].device)
        # Member slices of the persistent tensors, taken once: [tensor][member].
        self._slices = [[t.unbind(0) for t in tensors]
                        for tensors in (self.params, self.exp_avg, self.exp_avg_sq)]
        self._counts = [counts.unbind(0) for counts in self.counts]
        self._spans = []
        start = 0
        for group in self.groups:
            self._spans.append(range(start, start + len(group)))
            start += len(group)

    @torch.no_grad()
    def step(self, grads: Sequence[Tensor], learn: Tensor | None = None) -> None:
        """One Adam step of every parameter of the members with ``learn[m]`` True (all
        members when None); ``grads`` are stacked like the parameters, in their order;
        ``learn`` is an (M,) bool tensor on the parameters' device.

        The mask is applied on the device, without reading it back (so a CUDA graph can
        capture the step): every member's slice goes through the fused kernel with its own
        step count, then the weights and moments of the members outside the mask are put
        back from copies taken before, and their step counts grow by 0. Raises ValueError
        for a wrong number of gradients or mask entries."""
        if len(grads) != len(self.params):
            raise ValueError(f"{len(grads)} gradients for {len(self.params)} parameters")
        if learn is not None and tuple(learn.shape) != (self.members,):
            raise ValueError(f"learn mask has shape {tuple(learn.shape)} for {self.members} "
                             "members")
        persistent = [*self.params, *self.exp_avg, *self.exp_avg_sq]
        saved = None if learn is None else [t.clone() for t in persistent]
        # The kernel reads a gradient's memory as if it were contiguous; a batched matmul's
        # weight gradient is a transposed view, so it is laid out afresh.
        grad_slices = [grad.contiguous().unbind(0) for grad in grads]
        params, exp_avg, exp_avg_sq = self._slices
        beta1, beta2 = self.betas
        members = range(self.members)
        for span, lr, counts, steps in zip(self._spans, self.lrs, self.counts, self._counts,
                                           strict=True):
            counts.add_(1.0 if learn is None else learn.to(counts.dtype))
            torch._fused_adam_(
                [params[i][m] for i in span for m in members],
                [grad_slices[i][m] for i in span for m in members],
                [exp_avg[i][m] for i in span for m in members],
                [exp_avg_sq[i][m] for i in span for m in members], [],
                [steps[m] for _ in span for m in members],
                lr=lr, beta1=beta1, beta2=beta2, weight_decay=self.weight_decay,
                eps=self.eps, amsgrad=False, maximize=False,
            )
        if learn is not None and saved is not None:
            for tensor, before in zip(persistent, saved, strict=True):
                keep = learn.view(-1, *[1] * (tensor.dim() - 1))
                tensor.copy_(torch.where(keep, tensor, before))

    def member_state(self, m: int) -> dict[str, Any]:
        """Member ``m``'s slice in :meth:`FusedAdam.state_dict`'s format (copies), so that
        a separate learner's optimiser loads it."""
        return {
            "lrs": list(self.lrs),
            "exp_avg": [t[m].clone() for t in self.exp_avg],
            "exp_avg_sq": [t[m].clone() for t in self.exp_avg_sq],
            "steps": [self.counts[g, m].clone() for g, group in enumerate(self.groups)
                      for _ in group],
        }

    @torch.no_grad()
    def load_member_state(self, m: int, state: dict[str, Any]) -> None:
        """Load a :meth:`FusedAdam.state_dict` into member ``m``'s slice. Raises ValueError
        where its learning rates, its number of tensors or its step counts within a group
        differ from what the ensemble can hold."""
        if list(state["lrs"]) != self.lrs:
            raise ValueError(f"optimiser learning rates {state['lrs']} differ from the "
                             f"ensemble's {self.lrs}")
        if len(state["exp_avg"]) != len(self.params):
            raise ValueError(f"optimiser state has {len(state['exp_avg'])} tensors, expected "
                             f"{len(self.params)}")
        for g, span in enumerate(self._spans):
            steps = {float(state["steps"][i]) for i in span}
            if len(steps) != 1:
                raise ValueError(f"parameter group {g} has unequal step counts {sorted(steps)}")
            self.counts[g, m] = steps.pop()
        for key in ("exp_avg", "exp_avg_sq"):
            for mine, saved in zip(getattr(self, key), state[key], strict=True):
                mine[m].copy_(saved)
