"""The transformer baseline's ensemble: its own decoder, called per member through
``torch.func.functional_call`` under ``torch.func.vmap``."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from sharp.baselines.config import (
    BaselineConfig,
    TransformerConfig,
)
from sharp.baselines.ensemble.base import BaselineEnsemble, Learner, groups
from sharp.baselines.transformer import TransformerBaseline
from sharp.engines.ensemble.stacked import Params

#: torch 2.13 has no vmap batching rule for CPU attention: it loops over the members inside
#: the one attention call (its cost is in the measured figures) and says so with this
#: warning, which the ensemble does not pass on to its users.
ATTENTION_FALLBACK = ("There is a performance drop because we have not yet implemented the "
                      "batching rule for aten::_scaled_dot_product")


@contextmanager
def quiet_attention_fallback() -> Iterator[None]:
    """Run the enclosed code without :data:`ATTENTION_FALLBACK`'s warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ATTENTION_FALLBACK, UserWarning)
        yield


class TransformerEnsemble(BaselineEnsemble):
    """Transformer members (:class:`TransformerBaseline`'s context blocks, key/value cache
    and training chunks), the decoder vmapped over members."""

    config: TransformerConfig

    def _learner(self, config: BaselineConfig, table: Tensor | None) -> Learner:
        return TransformerBaseline(cast(TransformerConfig, config), table)

    def _module(self, learner: Learner) -> nn.Module:
        return cast(TransformerBaseline, learner).model

    def _allocate(self) -> None:
        c = self.config
        model = self._module(self._scratch)
        self.cache = torch.zeros(self.members, c.layers, 2, c.heads, c.context,
                                 c.d_model // c.heads, device=self.device)
        self.history: list[list[int]] = [[] for _ in range(self.members)]
        self.seen = [0] * self.members
        self.cache_len = [0] * self.members
        self.cache_block = [-1] * self.members
        #: Unstacked, shared by all members: rotary table and any frozen input table.
        buffers = dict(model.named_buffers())

        def forward(params: Params, ids: Tensor, cache: Tensor, length: int) -> Tensor:
            with quiet_attention_fallback():
                return functional_call(model, (params, buffers), (ids, cache, length))

        def chunk_loss(params: Params, chunk: Tensor) -> Tensor:
            with quiet_attention_fallback():
                logits = functional_call(model, (params, buffers), (chunk[None, :-1],))[0]
            return nn.functional.cross_entropy(logits, chunk[1:])

        #: Logits (G, 1, T, V) of ids (G, 1, T) per member, through caches (G, ...).
        self._forward = vmap(forward, in_dims=(0, 0, 0, None))
        #: Training loss (G,) of chunks (G, C + 1) per member.
        self._chunk_loss = vmap(chunk_loss)

    def _reset(self, m: int) -> None:
        self.history[m], self.seen[m], self.cache_len[m], self.cache_block[m] = [], 0, 0, -1

    def _tokens(self, m: int, start: int, stop: int) -> list[int]:
        """Member ``m``'s stream tokens [start, stop) from its kept history."""
        offset = self.seen[m] - len(self.history[m])
        return self.history[m][start - offset : stop - offset]

    def _learn(self, windows: np.ndarray, targets: list[int]) -> Tensor:
        """Predict through each member's cache by the block/context rule, then train the
        members whose chunk is complete (:meth:`TransformerBaseline.learn`)."""
        rows_ids = windows.tolist()
        for m, ids in enumerate(rows_ids):
            if self.history[m] and ids != self.history[m][-self.window :]:
                raise ValueError(
                    f"the transformer expects consecutive stride-1 windows of one stream for "
                    f"every member, but member {m}'s window does not continue its stream; "
                    "call reset_state([m]) to start a new stream"
                )
        for m, ids in enumerate(rows_ids):
            if not self.history[m]:
                self.history[m], self.seen[m] = list(ids), len(ids)
        logits = torch.empty(self.members, self.vocab_size, device=self.device)
        keys = [(self.seen[m], self.cache_block[m], self.cache_len[m])
                for m in range(self.members)]
        with torch.no_grad():
            for members in groups(keys):
                logits[members] = self._predict_next(members)
        c = self.config
        train = [m for m in range(self.members) if self.seen[m] % c.context == 0]
        for m in range(self.members):
            self.history[m].append(targets[m])
            self.seen[m] += 1
        if train:
            self._train_chunks(train)
        for m in range(self.members):
            if len(self.history[m]) > 2 * (c.context + 1):
                self.history[m] = self.history[m][-(c.context + 1) :]
        return logits

    def _predict_next(self, members: list[int]) -> Tensor:
        """Logits (G, V) for the next token of ``members`` (all at one position)."""
        c, m0 = self.config, members[0]
        p = self.seen[m0]
        block = (p - 1) // c.block
        rows = self._rows(members)
        params = self._params(rows)
        cache = self.cache if rows is None else self.cache[rows]
        if block != self.cache_block[m0]:
            start = max(0, (block + 1) * c.block - c.context)
            ids = [self._tokens(m, start, p) for m in members]
            length, new_length = 0, p - start
        else:
            ids = [self.history[m][-1:] for m in members]
            length, new_length = self.cache_len[m0], self.cache_len[m0] + 1
        inputs = torch.tensor(ids, device=self.device).unsqueeze(1)
        logits = self._forward(params, inputs, cache, length)[:, 0, -1]
        if rows is not None:
            self.cache[rows] = cache
        for m in members:
            self.cache_len[m], self.cache_block[m] = new_length, block
        return logits

    def _train_chunks(self, members: list[int]) -> None:
        """One Adam step per member on its last C inputs and their next tokens."""
        rows = self._rows(members)
        chunks = torch.tensor([self.history[m][-(self.config.context + 1) :] for m in members],
                              device=self.device)
        self._step(self._chunk_loss(self._params(rows), chunks).sum(), members)
        for m in members:
            self.cache_block[m] = -1

    def _runtime(self, m: int) -> dict[str, Any]:
        return {
            "history": list(self.history[m]), "seen": self.seen[m],
            "cache_len": self.cache_len[m], "cache_block": self.cache_block[m],
            "cache": self.cache[m, :, :, :, : self.cache_len[m]].clone(),
        }

    def _load_runtime(self, m: int, runtime: dict[str, Any]) -> None:
        self.history[m] = list(runtime["history"])
        self.seen[m] = runtime["seen"]
        self.cache_len[m] = runtime["cache_len"]
        self.cache_block[m] = runtime["cache_block"]
        self.cache[m].zero_()
        self.cache[m, :, :, :, : self.cache_len[m]] = runtime["cache"].to(self.device)
