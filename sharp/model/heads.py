"""Prediction heads: the credit-assigned part of SHARP (SPEC §2).

Head l reads its layer's memory state; if a context from head l+1 exists it modulates
the state (FiLM, or concatenation); then ``head_layers`` linear layers with GELU before
every linear except the last. Head 0 outputs vocabulary logits, head l>0 outputs the
context of head l-1.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _mlp(width: int, out: int, layers: int) -> nn.ModuleList:
    return nn.ModuleList(
        nn.Linear(width, out if i == layers - 1 else width) for i in range(layers)
    )


def _run_mlp(linears: nn.ModuleList, z: Tensor) -> Tensor:
    last = len(linears) - 1
    for i, linear in enumerate(linears):
        z = linear(nn.functional.gelu(z) if i < last else z)
    return z


class FiLMHead(nn.Module):
    """LayerNorm(h); (γ, β) = tanh(Linear(c)); z = (1+γ)·z + β; LayerNorm; MLP."""

    def __init__(self, hidden: int, out: int, layers: int, context: int | None) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.film = nn.Linear(context, 2 * hidden) if context else None
        self.film_norm = nn.LayerNorm(hidden) if context else None
        self.mlp = _mlp(hidden, out, layers)

    def forward(self, h: Tensor, context: Tensor | None = None) -> Tensor:
        """Logits (head 0) or the context for the head below, from state ``h`` (B, H)."""
        return self.conditioned(h, self.condition(context))

    def condition(self, context: Tensor | None) -> Tensor | None:
        """The part that depends on the context alone, (γ, β) = tanh(Linear(c)); None
        without a context. Constant while a tag is dreamed, so computed once there."""
        if self.film is None or context is None:
            return None
        return torch.tanh(self.film(context))

    def conditioned(self, h: Tensor, condition: Tensor | None) -> Tensor:
        """:meth:`forward` given :meth:`condition`'s result."""
        z = self.norm(h)
        if condition is not None:
            gamma, beta = condition.chunk(2, dim=-1)
            z = self.film_norm((1 + gamma) * z + beta)
        return _run_mlp(self.mlp, z)


class ConcatHead(nn.Module):
    """LayerNorm(h); concatenate with Linear(c) (size H); LayerNorm; MLP."""

    def __init__(self, hidden: int, out: int, layers: int, context: int | None) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.context = nn.Linear(context, hidden) if context else None
        width = 2 * hidden if context else hidden
        self.joint_norm = nn.LayerNorm(width) if context else None
        self.mlp = _mlp(width, out, layers)

    def forward(self, h: Tensor, context: Tensor | None = None) -> Tensor:
        """Logits (head 0) or the context for the head below, from state ``h`` (B, H)."""
        return self.conditioned(h, self.condition(context))

    def condition(self, context: Tensor | None) -> Tensor | None:
        """The part that depends on the context alone, Linear(c); None without one."""
        if self.context is None or context is None:
            return None
        return self.context(context)

    def conditioned(self, h: Tensor, condition: Tensor | None) -> Tensor:
        """:meth:`forward` given :meth:`condition`'s result."""
        z = self.norm(h)
        if condition is not None:
            z = self.joint_norm(torch.cat([z, condition], dim=-1))
        return _run_mlp(self.mlp, z)


def make_head(kind: str, hidden: int, out: int, layers: int, context: int | None) -> nn.Module:
    """A ``film`` or ``concat`` head; ``context`` is the context size (None: top head)."""
    heads = {"film": FiLMHead, "concat": ConcatHead}
    return heads[kind](hidden, out, layers, context)
