"""SHARP's memories and heads over M stacked learners: the ops of :mod:`sharp.model.memory`
and :mod:`sharp.model.heads` with every weight carrying a leading member axis.

Parameters live in one flat mapping from the names of ``Sharp.net.named_parameters()``
(``memories.0.encoder.weight_hh_l0``, ``heads.1.film.weight``, ...) to tensors of shape
(M, *single shape), as ``torch.func.stack_module_state`` builds them. Activations are
(M, B, ...): member m's B rows only ever meet member m's weights, through batched matmuls
(``torch.baddbmm``), so member m computes what a separate learner computes, up to the
summation order of the batched products (a few float32 ulps).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

Params = Mapping[str, Tensor]


def linear(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """x·Wᵀ + b per member: ``x`` (M, B, in), ``weight`` (M, out, in), ``bias`` (M, out)
    -> (M, B, out). (Under autograd the weight's gradient is a transposed view.)"""
    return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))


def embedding(ids: Tensor, weight: Tensor) -> Tensor:
    """Each member's embedding rows: ``ids`` (M, ...) int64, ``weight`` (M, V, E) ->
    (M, ..., E), as one lookup in the flattened table (its gradient is dense, as
    ``nn.Embedding``'s is)."""
    members, vocab = weight.shape[:2]
    offset = torch.arange(members, device=ids.device).view(-1, *[1] * (ids.dim() - 1))
    return nn.functional.embedding(ids + offset * vocab, weight.flatten(0, 1))


def layer_norm(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """LayerNorm over the last axis with per-member affine ``weight``, ``bias`` (M, N):
    ``x`` (M, B, N) -> (M, B, N). The affine part is one fused multiply-add, as inside
    ``layer_norm``'s own kernel (a separate multiply and add round twice)."""
    normed = nn.functional.layer_norm(x, x.shape[-1:])
    return torch.addcmul(bias.unsqueeze(1), normed, weight.unsqueeze(1))


class StackedMemory:
    """Memory layer ``level`` (SPEC §2) of M stacked learners; weights read from ``params``
    under the prefix ``memories.{level}.`` on every call (so in-place updates are seen)."""

    def __init__(self, level: int, *, tokens: bool) -> None:
        self.prefix = f"memories.{level}."
        self.tokens = tokens

    def _get(self, params: Params, name: str) -> Tensor:
        return params[self.prefix + name]

    def project(self, params: Params, x: Tensor) -> Tensor:
        """Input projection: token ids (M, B, ...) -> (M, B, ..., E) by each member's
        embedding, or vectors (M, B, ..., inputs) -> (M, B, ..., E) by its linear."""
        weight = self._get(params, "project.weight")
        if self.tokens:
            return embedding(x, weight)
        flat = x.flatten(1, -2)
        out = linear(flat, weight, self._get(params, "project.bias"))
        return out.view(*x.shape[:-1], -1)

    def drive(self, params: Params, projected: Tensor) -> Tensor:
        """W_ih·x + b_ih + b_hh for projected inputs (M, B, ..., E) -> (M, B, ..., H)."""
        flat = projected.flatten(1, -2)
        driven = linear(flat, self._get(params, "encoder.weight_ih_l0"),
                        self._get(params, "encoder.bias_ih_l0"))
        driven = driven + self._get(params, "encoder.bias_hh_l0").unsqueeze(1)
        return driven.view(*projected.shape[:-1], -1)

    def cell(self, params: Params, driven: Tensor, state: Tensor) -> Tensor:
        """tanh(driven + h·W_hhᵀ): ``driven``, ``state`` (M, B, H) -> (M, B, H)."""
        recurrent = self._get(params, "encoder.weight_hh_l0").transpose(1, 2)
        return torch.tanh(torch.baddbmm(driven, state, recurrent))

    def encode(self, params: Params, window: Tensor, start: Tensor
               ) -> tuple[Tensor, Tensor, Tensor]:
        """Encode windows (M, B, W) ids or (M, B, W, inputs) vectors from ``start``
        (M, B, H). Returns the recall (M, B, W, inputs), the final state and the state
        after the first element (both (M, B, H)), as :meth:`Memory.encode` per member."""
        first, *rest = self.drive(params, self.project(params, window)).unbind(2)
        state = after_first = self.cell(params, first, start)
        for driven in rest:
            state = self.cell(params, driven, state)
        weight, bias = self._get(params, "recall_weight"), self._get(params, "recall_bias")
        recall = linear(state, weight.flatten(1, 2), bias.flatten(1))
        return recall.view(*state.shape[:2], *bias.shape[1:]), state, after_first

    def recall_loss(self, window: Tensor, recall: Tensor) -> Tensor:
        """Per-member mean cross-entropy (token memory) or mean squared error (vector
        memory) of ``recall`` against ``window``: (M,)."""
        members = recall.shape[0]
        if self.tokens:
            losses = nn.functional.cross_entropy(recall.flatten(0, -2), window.flatten(),
                                                 reduction="none")
        else:
            losses = nn.functional.mse_loss(recall, window, reduction="none")
        return losses.view(members, -1).mean(1)

    def step(self, params: Params, x: Tensor, state: Tensor) -> Tensor:
        """Advance the encoder one element: ``x`` (M, B) ids or (M, B, inputs), ``state``
        (M, B, H) -> (M, B, H)."""
        return self.cell(params, self.drive(params, self.project(params, x)), state)


class StackedHead:
    """Head ``level`` (SPEC §2, ``film`` or ``concat``) of M stacked learners, as
    :class:`sharp.model.heads.FiLMHead` / :class:`~sharp.model.heads.ConcatHead`."""

    def __init__(self, level: int, kind: str, layers: int, *, context: bool) -> None:
        if kind not in ("film", "concat"):
            raise ValueError(f"head_type must be 'film' or 'concat', got {kind!r}")
        self.prefix = f"heads.{level}."
        self.kind = kind
        self.layers = layers
        self.context = context

    def _linear(self, params: Params, name: str, x: Tensor) -> Tensor:
        return linear(x, params[f"{self.prefix}{name}.weight"], params[f"{self.prefix}{name}.bias"])

    def _norm(self, params: Params, name: str, x: Tensor) -> Tensor:
        return layer_norm(x, params[f"{self.prefix}{name}.weight"],
                          params[f"{self.prefix}{name}.bias"])

    def __call__(self, params: Params, h: Tensor, context: Tensor | None = None) -> Tensor:
        """Logits (head 0) or the context for the head below, from states ``h``
        (M, B, H) and the context from above (M, B, C) or None: (M, B, out)."""
        return self.conditioned(params, h, self.condition(params, context))

    def condition(self, params: Params, context: Tensor | None) -> Tensor | None:
        """The part that depends on the context alone (FiLM: tanh(Linear(c)); concat:
        Linear(c)); None for the top head or without a context."""
        if not self.context or context is None:
            return None
        if self.kind == "film":
            return torch.tanh(self._linear(params, "film", context))
        return self._linear(params, "context", context)

    def conditioned(self, params: Params, h: Tensor, condition: Tensor | None) -> Tensor:
        """:meth:`__call__` given :meth:`condition`'s result."""
        z = self._norm(params, "norm", h)
        if condition is not None:
            if self.kind == "film":
                gamma, beta = condition.chunk(2, dim=-1)
                z, norm = (1 + gamma) * z + beta, "film_norm"
            else:
                z, norm = torch.cat([z, condition], dim=-1), "joint_norm"
            z = self._norm(params, norm, z)
        last = self.layers - 1
        for i in range(self.layers):
            z = self._linear(params, f"mlp.{i}", nn.functional.gelu(z) if i < last else z)
        return z
