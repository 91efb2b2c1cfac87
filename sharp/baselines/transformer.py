"""Transformer baseline (SPEC §7): a small pre-norm decoder streamed token by token.

Model: token embedding; ``layers`` blocks of RMSNorm -> causal multi-head self-attention
with rotary positions -> residual, RMSNorm -> SwiGLU MLP -> residual; final RMSNorm and a
linear read-out. No biases anywhere.

Streaming (context C, refresh stride S, see :class:`TransformerConfig`): target p lies in
block k = (p-1) // S, which covers targets kS+1 .. (k+1)S, and is predicted from the
tokens ``t[max(0, (k+1)S - C) : p]`` — a fresh causal pass over at most C tokens. Within
a block the context start is fixed, so the first prediction fills a key/value cache and
every further one costs one token's pass. Once C new tokens have arrived (p a multiple
of C) one Adam step is taken on the chunk ``t[p-C : p]`` -> ``t[p-C+1 : p+1]``; S divides
C, so the weights change only between blocks and the cache never mixes weights.
Evaluation with ``eval_mode="full"`` computes exactly this rule, batched over the slice;
``eval_mode="paper"`` predicts every token from only its W-token window.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from sharp.baselines.config import TransformerConfig
from sharp.config import check_instance
from sharp.engines.optim import FusedAdam
from sharp.engines.runtime import prepare_runtime, small_kernels
from sharp.model.inputs import check_table_state, input_layer, input_table, table_state
from sharp.model.learner import check_compatible
from sharp.protocol import (
    EvalResult,
    LiveConfig,
    StepResult,
    TokenIds,
    check_finite,
    check_target,
    check_window,
    evaluate_predictions,
    token_tensor,
)

#: Tokens per batched forward pass in evaluation.
EVAL_TOKENS = 8192


def rotary_table(length: int, head_dim: int, base: float) -> Tensor:
    """Unit complex numbers e^{i·pos·base^(-2j/head_dim)}, (length, head_dim/2) complex64
    (angles computed in float64)."""
    inverse = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.arange(length, dtype=torch.float64)[:, None] * inverse[None, :]
    return torch.polar(torch.ones_like(angles), angles).to(torch.complex64)


def rotate(x: Tensor, rotation: Tensor) -> Tensor:
    """Rotary positions: rotate the pairs (x_2j, x_2j+1) of the last axis of ``x``
    (B, T, ..., head_dim) by ``rotation`` (T, head_dim/2), one complex product."""
    pairs = torch.view_as_complex(x.unflatten(-1, (-1, 2)))
    shape = (rotation.shape[0],) + (1,) * (x.dim() - 3) + (rotation.shape[1],)
    return torch.view_as_real(pairs * rotation.view(shape)).flatten(-2)


class DecoderBlock(nn.Module):
    """RMSNorm -> rotary causal self-attention -> +, RMSNorm -> SwiGLU -> +."""

    def __init__(self, d_model: int, heads: int, ff: int) -> None:
        super().__init__()
        self.heads = heads
        self.attn_norm = nn.RMSNorm(d_model, eps=1e-6)
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.attn_out = nn.Linear(d_model, d_model, bias=False)
        self.mlp_norm = nn.RMSNorm(d_model, eps=1e-6)
        self.gate_up = nn.Linear(d_model, 2 * ff, bias=False)
        self.mlp_out = nn.Linear(ff, d_model, bias=False)

    def forward(self, x: Tensor, rotation: Tensor,
                cache: Tensor | None = None, length: int = 0) -> Tensor:
        """``x`` (B, T, d); ``rotation`` for the T positions. With ``cache`` (2, heads,
        C, d/heads; batch 1) the new keys/values are written at ``length`` and the
        queries attend to everything cached so far (T > 1 only into an empty cache)."""
        f = nn.functional
        batch, steps, d = x.shape
        shape, eps = self.attn_norm.normalized_shape, self.attn_norm.eps
        h = f.rms_norm(x, shape, self.attn_norm.weight, eps)
        qkv = f.linear(h, self.qkv.weight).view(batch, steps, 3, self.heads, -1)
        q, k = rotate(qkv[:, :, :2], rotation).transpose(1, 3).unbind(2)
        v = qkv[:, :, 2].transpose(1, 2)  # q, k, v: (B, heads, T, head_dim)
        causal = steps > 1
        if cache is not None:
            end = length + steps
            cache[0, :, length:end] = k[0]
            cache[1, :, length:end] = v[0]
            k, v = cache[0, None, :, :end], cache[1, None, :, :end]
            causal = length == 0 and steps > 1
        attended = f.scaled_dot_product_attention(q, k, v, is_causal=causal)
        x = x + f.linear(attended.transpose(1, 2).reshape(batch, steps, d), self.attn_out.weight)
        h = f.rms_norm(x, shape, self.mlp_norm.weight, eps)
        gate, up = f.linear(h, self.gate_up.weight).chunk(2, dim=-1)
        return x + f.linear(f.silu(gate) * up, self.mlp_out.weight)


class Decoder(nn.Module):
    """Embedding (or frozen ``table`` vectors through a linear) -> decoder blocks ->
    RMSNorm -> read-out to V (no biases)."""

    def __init__(self, config: TransformerConfig, table: Tensor | None = None) -> None:
        super().__init__()
        c = config
        self.embed = input_layer(c.vocab_size, c.d_model, table)
        self.blocks = nn.ModuleList(DecoderBlock(c.d_model, c.heads, c.ff)
                                    for _ in range(c.layers))
        self.norm = nn.RMSNorm(c.d_model, eps=1e-6)
        self.readout = nn.Linear(c.d_model, c.vocab_size, bias=False)
        rotation = rotary_table(c.context, c.d_model // c.heads, c.rope_base)
        self.register_buffer("rotation", rotation, persistent=False)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if p.dim() == 2:
                    residual = name.endswith(("attn_out.weight", "mlp_out.weight"))
                    std = 0.02 / math.sqrt(2 * c.layers) if residual else 0.02
                    nn.init.normal_(p, std=std)

    def forward(self, ids: Tensor, cache: Tensor | None = None, length: int = 0) -> Tensor:
        """Logits (B, T, V) for ``ids`` (B, T) at positions ``length``.. ; ``cache``
        (layers, 2, heads, C, head_dim) is read and written when given (batch 1)."""
        rotation = self.rotation[length : length + ids.shape[1]]
        x = self.embed(ids)
        for level, block in enumerate(self.blocks):
            x = block(x, rotation, None if cache is None else cache[level], length)
        return self.readout(self.norm(x))


class TransformerBaseline:
    """Transformer baseline implementing the learner protocol (see the module docstring).
    ``table``: the frozen input table of a config with ``inputs="dense"`` (None: read from
    its ``input_table``). Raises TypeError for a ``config`` that is not a
    :class:`TransformerConfig`, what :func:`~sharp.model.inputs.input_table` raises for a
    missing or mis-shaped table."""

    kind = "transformer"
    #: Set when built; afterwards only ``lr`` may change
    #: (:class:`~sharp.protocol.LiveConfig`; :meth:`apply_config`).
    config = LiveConfig("lr")

    def __init__(self, config: TransformerConfig, table: Tensor | None = None) -> None:
        check_instance(config, TransformerConfig, "TransformerBaseline",
                       "sharp.baselines.baseline_preset('transformer')")
        self.config = config
        self.device = prepare_runtime(config.threads, config.device, "batched")
        #: The frozen input table (V, D), or None for a learned embedding.
        self.table = input_table(config, table, self.device)
        self.vocab_size = config.vocab_size
        self.window = config.window
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.model = Decoder(config, self.table)
        self.model.to(self.device)
        self.optimiser = FusedAdam([self.model.parameters()], [config.lr],
                                   weight_decay=config.weight_decay)
        c = config
        self.cache = torch.zeros(c.layers, 2, c.heads, c.context, c.d_model // c.heads,
                                 device=self.device)
        self.reset_state()

    # -- state ----------------------------------------------------------------------
    def reset_state(self) -> None:
        """Forget the stream: history, position and cache. An unfinished chunk is dropped
        untrained; the weights and optimiser moments are kept."""
        self.history: list[int] = []
        self.seen = 0
        self.cache_len = 0
        self.cache_block = -1

    def apply_config(self, changed: set[str]) -> None:
        """Put a live change of ``config`` into effect: a new ``lr`` is the optimiser's
        from the next update."""
        if "lr" in changed:
            self.optimiser.lrs = [self.config.lr] * len(self.optimiser.lrs)

    def parameter_count(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.model.parameters())

    def _tokens(self, start: int, stop: int) -> list[int]:
        """Stream tokens [start, stop) from the kept history."""
        offset = self.seen - len(self.history)
        return self.history[start - offset : stop - offset]

    # -- learning -------------------------------------------------------------------
    @small_kernels()
    def learn(self, window: TokenIds, target: int) -> StepResult:
        """Predict ``target`` from the context the stream gives (consecutive stride-1
        windows of one stream, each W ids: a list, array or tensor), then learn from it
        once its chunk is complete. Raises ValueError for a malformed window or target,
        :class:`~sharp.protocol.Diverged` when the loss is not finite."""
        ids = check_window(window, self.window, self.vocab_size).tolist()
        y = check_target(target, self.vocab_size)
        if not self.history:
            self.history, self.seen = list(ids), len(ids)
        elif ids != self.history[-self.window :]:
            raise ValueError(
                "the transformer expects consecutive stride-1 windows of one stream (each "
                "window shifted by one token from the last); call reset_state() to start a "
                "new stream"
            )
        with torch.no_grad():
            logits = self._predict_next()
            loss = nn.functional.cross_entropy(logits, torch.tensor(y, device=self.device))
        nats, p, context = loss.item(), self.seen, self.config.context
        check_finite(self, prediction=nats)
        self.history.append(y)
        self.seen += 1
        if p % context == 0:
            self._train_chunk()
        if len(self.history) > 2 * (context + 1):
            self.history = self.history[-(context + 1) :]
        return StepResult(logits, nats, y)

    def _predict_next(self) -> Tensor:
        """Logits for stream token ``seen`` by the block/context rule, through the cache."""
        c, p = self.config, self.seen
        block = (p - 1) // c.block
        if block != self.cache_block:
            start = max(0, (block + 1) * c.block - c.context)
            inputs = torch.tensor([self._tokens(start, p)], device=self.device)
            logits = self.model(inputs, self.cache, 0)[0, -1]
            self.cache_len, self.cache_block = inputs.shape[1], block
        else:
            inputs = torch.tensor([self.history[-1:]], device=self.device)
            logits = self.model(inputs, self.cache, self.cache_len)[0, -1]
            self.cache_len += 1
        return logits

    def _train_chunk(self) -> None:
        """One Adam step on the last C inputs and their next tokens."""
        chunk = torch.tensor(self.history[-(self.config.context + 1) :], device=self.device)
        logits = self.model(chunk[None, :-1])[0]
        loss = nn.functional.cross_entropy(logits, chunk[1:])
        self.optimiser.zero_grad()
        loss.backward()
        self.optimiser.step()
        self.cache_block = -1  # the weights changed: the next prediction refills the cache

    # -- evaluation -----------------------------------------------------------------
    def predict_stream(self, tokens: TokenIds) -> Tensor:
        """Logits (T - W, V) for every token of ``tokens`` (T ids) after the first W,
        without learning: :meth:`predict_blocks` joined."""
        return torch.cat(list(self.predict_blocks(tokens)))

    @torch.inference_mode()
    def predict_blocks(self, tokens: TokenIds) -> Iterator[Tensor]:
        """:meth:`predict_stream`'s logits as consecutive blocks of rows (a batch of about
        :data:`EVAL_TOKENS` positions each), each computed when it is asked for: by the
        streaming context rule (``eval_mode="full"``) or from each token's W-token window
        (``"paper"``), batched over the slice."""
        ids = token_tensor(tokens, self.window, self.vocab_size, self.device)
        if self.config.eval_mode == "paper":
            rows = ids.unfold(0, self.window, 1)[:-1]
            for logits in self._batched(rows, 1):
                yield logits[:, 0]
            return
        yield from self._predict_full(ids)

    def _batched(self, rows: Tensor, last: int) -> Iterator[Tensor]:
        """Logits (batch, last, V) of the last ``last`` positions of equal-length rows
        (N, T), batch by batch."""
        per_batch = max(1, EVAL_TOKENS // rows.shape[1])
        for lo in range(0, rows.shape[0], per_batch):
            yield self.model(rows[lo : lo + per_batch])[:, -last:]

    def _predict_full(self, ids: Tensor) -> Iterator[Tensor]:
        """Logits of rows p = W..n-1 (row p predicts token p) by the context rule, in
        consecutive blocks.

        Blocks whose context starts at 0 are prefixes of one row ``t[0:C]`` (causal
        attention makes a prefix's outputs those of the longer row); every later block k
        is the last S outputs of the row ``t[(k+1)S - C : (k+1)S]``, and a block cut by
        the slice's end is a prefix of such a row.
        """
        c, n = self.config, ids.numel()
        size, stride = c.context, c.block
        head = min(size, n - 1)  # >= W: the context holds a window, the slice more
        yield self.model(ids[None, :head])[0, self.window - 1 :]  # rows W..head
        # ends (k+1)S <= n-1 of the blocks after the first row: none if n <= C+S
        ends = torch.arange(size + stride, max(n, size + stride), stride, device=self.device)
        if ends.numel():  # rows C+1..ends[-1]
            rows = ids[(ends - size)[:, None] + torch.arange(size, device=self.device)]
            for block in self._batched(rows, stride):
                yield block.reshape(-1, self.vocab_size)
        done = int(ends[-1]) if ends.numel() else head
        if done < n - 1:  # the last block, cut short by the slice's end: rows done+1..n-1
            block_end = (done // stride + 1) * stride
            start = block_end - size
            yield self.model(ids[None, start : n - 1])[0, done - start :]

    def evaluate(self, tokens: TokenIds) -> EvalResult:
        """Bits and top-1 correctness for every token after the first W of ``tokens`` (a
        list, array or tensor of more than W ids; ValueError otherwise, as for a stream),
        without learning, scored block by block (:meth:`predict_blocks`; a large
        vocabulary never holds every logit at once); the learner is left untouched."""
        return evaluate_predictions(self, tokens, self.predict_blocks)

    # -- checkpoints ----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Weights, optimiser moments, token history, position and key/value cache:
        everything needed to resume the stream bit-exactly."""
        runtime = {
            "history": self.history, "seen": self.seen, "cache_len": self.cache_len,
            "cache_block": self.cache_block,
            "cache": self.cache[:, :, :, : self.cache_len],
        }
        state = copy.deepcopy({
            "kind": self.kind, "config": self.config.to_dict(),
            "weights": self.model.state_dict(), "optimiser": self.optimiser.state_dict(),
            "runtime": runtime,
        })
        if self.table is not None:
            state["inputs"] = table_state(self.table, self.config)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; a checkpoint of another kind or configuration
        raises ValueError naming what differs (also another frozen input table)."""
        check_compatible(state, self.kind, self.config)
        if self.table is not None:
            check_table_state(state["inputs"], self.table)
        state = copy.deepcopy(state)
        self.model.load_state_dict(state["weights"])
        self.optimiser.load_state_dict(state["optimiser"])
        runtime = state["runtime"]
        self.history = list(runtime["history"])
        self.seen = runtime["seen"]
        self.cache_len = runtime["cache_len"]
        self.cache_block = runtime["cache_block"]
        self.cache.zero_()
        self.cache[:, :, :, : self.cache_len] = runtime["cache"].to(self.device)
