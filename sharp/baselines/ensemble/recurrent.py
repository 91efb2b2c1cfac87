"""Ensembles of the recurrent baselines (RNN, LSTM, GRU, clockwork): their cells over stacked
weights with batched matrix products, in torch's gate order and formulas (torch's recurrent
modules have no ``vmap`` batching rule)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn

from sharp.baselines.clockwork import ClockworkCore, ClockworkRNN, active_modules
from sharp.baselines.config import (
    BaselineConfig,
    ClockworkConfig,
    RecurrentConfig,
)
from sharp.baselines.ensemble.base import BaselineEnsemble, Learner, groups
from sharp.baselines.recurrent import RecurrentBaseline, StackCore, State, StreamingRecurrent
from sharp.engines.ensemble.stacked import Params, embedding, linear

#: A stacked recurrent state: (h,) or (h, c) for the LSTM, each with a leading member axis.
States = tuple[Tensor, ...]


def tanh_cell(driven: Tensor, recurrent: Tensor, h: Tensor, c: Tensor | None
              ) -> tuple[Tensor, Tensor | None]:
    """``torch.rnn_tanh_cell`` on precomputed W_ih·x + b_ih (``driven``) and W_hh·h + b_hh
    (``recurrent``), (M, B, H) each."""
    return torch.tanh(driven + recurrent), None


def lstm_cell(driven: Tensor, recurrent: Tensor, h: Tensor, c: Tensor | None
              ) -> tuple[Tensor, Tensor | None]:
    """``torch.lstm_cell`` (gate order i, f, g, o) on precomputed products (M, B, 4H)."""
    i, f, g, o = (driven + recurrent).chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def gru_cell(driven: Tensor, recurrent: Tensor, h: Tensor, c: Tensor | None
             ) -> tuple[Tensor, Tensor | None]:
    """``torch.gru_cell`` (gate order r, z, n; n = tanh(x_n + r·(W_hn·h + b_hn)),
    h' = (h − n)·z + n) on precomputed products (M, B, 3H)."""
    x_r, x_z, x_n = driven.chunk(3, dim=-1)
    h_r, h_z, h_n = recurrent.chunk(3, dim=-1)
    r = torch.sigmoid(x_r + h_r)
    z = torch.sigmoid(x_z + h_z)
    n = torch.tanh(x_n + r * h_n)
    return (h - n) * z + n, None


#: The cell of each recurrent kind.
CELLS = {"rnn": tanh_cell, "lstm": lstm_cell, "gru": gru_cell}


def stacked_inputs(params: Params, ids: Tensor, table: Tensor | None) -> Tensor:
    """Every member's input layer on its ids (G, T) -> (G, T, E): its learned embedding
    (``embed.weight``), or the rows of the shared frozen ``table`` (V, D) through its own
    linear (``embed.linear``, as :class:`~sharp.model.inputs.DenseInput`)."""
    if table is None:
        return embedding(ids, params["embed.weight"])
    return linear(table[ids], params["embed.linear.weight"], params["embed.linear.bias"])


class StackedStack:
    """:class:`~sharp.baselines.recurrent.StackCore` over stacked weights: input layer
    (:func:`stacked_inputs` over the frozen ``table``, if any) -> ``layers`` RNN/LSTM/GRU
    layers -> outputs, layer by layer over the sequence as ``nn.RNN`` runs it."""

    def __init__(self, core: StackCore, cell: str, table: Tensor | None) -> None:
        self.layers = core.rnn.num_layers
        self.cell = CELLS[cell]
        self.lstm = core.lstm
        self.table = table

    def run(self, params: Params, ids: Tensor, state: States, clock: int
            ) -> tuple[Tensor, States]:
        """Feed ``ids`` (G, T) from ``state`` ((G, layers, 1, H), twice for the LSTM):
        the outputs (G, T, H) of the top layer and the final state."""
        x = stacked_inputs(params, ids, self.table)
        finals: list[list[Tensor]] = [[] for _ in state]
        for level in range(self.layers):
            w_ih, w_hh, b_ih, b_hh = (params[f"rnn.{name}_l{level}"] for name in
                                      ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
            driven = linear(x, w_ih, b_ih)
            h = state[0][:, level]
            c = state[1][:, level] if self.lstm else None
            outputs = []
            for t in range(ids.shape[1]):
                h, c = self.cell(driven[:, t : t + 1], linear(h, w_hh, b_hh), h, c)
                outputs.append(h)
            x = torch.cat(outputs, dim=1)
            finals[0].append(h)
            if c is not None:
                finals[1].append(c)
        return x, tuple(torch.stack(final, dim=1) for final in finals)


class StackedClockwork:
    """:class:`~sharp.baselines.clockwork.ClockworkCore` over stacked weights (its input
    layer :func:`stacked_inputs` over the frozen ``table``, if any): every member's active
    modules (the same for members at one clock) update per step."""

    def __init__(self, core: ClockworkCore, table: Tensor | None) -> None:
        self.modules, self.hidden, self.columns = core.modules_count, core.hidden, core.columns
        self.table = table

    def run(self, params: Params, ids: Tensor, state: States, clock: int
            ) -> tuple[Tensor, States]:
        """Feed ``ids`` (G, T) from ``state`` ((G, modules·H),), the first at time
        ``clock``: the states (G, T, modules·H) after each token and the final state."""
        members, steps = ids.shape
        drive = linear(stacked_inputs(params, ids, self.table), params["w_in"], params["bias"])
        drive = drive.view(members, steps, self.modules, 1, self.hidden)
        blocks = [params[f"recurrent.{i}"].transpose(1, 2) for i in range(self.modules)]
        h, outputs = state[0], []
        for s in range(steps):
            active = active_modules(clock + s, self.modules)
            parts = [
                torch.tanh(torch.baddbmm(drive[:, s, i], h[:, None, lo:hi], blocks[i]))[:, 0]
                for i, (lo, hi) in enumerate(self.columns[:active])
            ]
            if active < self.modules:
                parts.append(h[:, active * self.hidden :])
            h = torch.cat(parts, dim=1)
            outputs.append(h)
        return torch.stack(outputs, dim=1), (h,)


def _take(state: States, rows: Tensor | None) -> States:
    return state if rows is None else tuple(s[rows] for s in state)


def _put(state: States, rows: Tensor | None, new: States) -> States:
    """``state`` with ``rows`` replaced by ``new`` (detached)."""
    if rows is None:
        return tuple(s.detach() for s in new)
    for mine, value in zip(state, new, strict=True):
        mine[rows] = value.detach()
    return state


def _as_states(state: State) -> States:
    return tuple(state) if isinstance(state, tuple) else (state,)


def _as_state(states: States) -> State:
    return states if len(states) > 1 else states[0]


class RecurrentEnsemble(BaselineEnsemble):
    """RNN, LSTM, GRU or clockwork RNN members (:class:`StreamingRecurrent`'s ``tbptt`` and
    ``paper`` modes)."""

    config: RecurrentConfig | ClockworkConfig

    def _learner(self, config: BaselineConfig, table: Tensor | None) -> Learner:
        if isinstance(config, ClockworkConfig):
            return ClockworkRNN(config, table)
        return RecurrentBaseline(cast(RecurrentConfig, config), table)

    def _module(self, learner: Learner) -> nn.Module:
        return cast(StreamingRecurrent, learner).core

    def _allocate(self) -> None:
        core = cast(StreamingRecurrent, self._scratch).core
        self.core: StackedStack | StackedClockwork = (
            StackedClockwork(core, self.table) if isinstance(core, ClockworkCore)
            else StackedStack(cast(StackCore, core), self.kind, self.table)
        )
        zeros = _as_states(core.initial_state())
        self.state = tuple(s.new_zeros(self.members, *s.shape) for s in zeros)
        self.block_state = tuple(s.clone() for s in self.state)
        self.clock = [0] * self.members
        self.last_window: list[list[int] | None] = [None] * self.members
        self.block_clock = [0] * self.members
        self.block_inputs: list[list[int]] = [[] for _ in range(self.members)]
        self.block_targets: list[list[int]] = [[] for _ in range(self.members)]

    def _readout(self, params: Params, outputs: Tensor) -> Tensor:
        return linear(outputs, params["readout.weight"], params["readout.bias"])

    def _reset(self, m: int) -> None:
        for s in self.state:
            s[m] = 0.0
        self.clock[m] = 0
        self.last_window[m] = None
        self._start_block([m])

    def _start_block(self, members: Sequence[int]) -> None:
        rows = self._rows(members)
        for mine, state in zip(self.block_state, self.state, strict=True):
            if rows is None:
                mine.copy_(state)
            else:
                mine[rows] = state[rows]
        for m in members:
            self.block_clock[m] = self.clock[m]
            self.block_inputs[m] = []
            self.block_targets[m] = []

    def _learn(self, windows: np.ndarray, targets: list[int]) -> Tensor:
        if self.config.mode == "paper":
            return self._learn_paper(windows, targets)
        return self._learn_tbptt(windows.tolist(), targets)

    def _learn_tbptt(self, windows: list[list[int]], targets: list[int]) -> Tensor:
        """Feed each member's new token(s) without gradient and predict; train the members
        whose TBPTT block is complete (:meth:`StreamingRecurrent._learn_tbptt`)."""
        feeds = []
        for m, ids in enumerate(windows):
            last = self.last_window[m]
            if last is not None and ids[:-1] != last[1:]:
                raise ValueError(
                    f"tbptt mode expects consecutive stride-1 windows of one stream for every "
                    f"member, but member {m}'s window does not continue its last one; call "
                    "reset_state([m]) to start a new stream"
                )
            feeds.append(ids if last is None else ids[-1:])
        logits = torch.empty(self.members, self.vocab_size, device=self.device)
        with torch.no_grad():
            for members in groups([(len(feed), self.clock[m]) for m, feed in enumerate(feeds)]):
                rows = self._rows(members)
                params = self._params(rows)
                ids = torch.tensor([feeds[m] for m in members], device=self.device)
                outputs, state = self.core.run(params, ids, _take(self.state, rows),
                                               self.clock[members[0]])
                logits[members] = self._readout(params, outputs[:, -1:])[:, 0]
                self.state = _put(self.state, rows, state)
        for m, (ids, feed) in enumerate(zip(windows, feeds, strict=True)):
            self.clock[m] += len(feed)
            self.last_window[m] = ids
            self.block_inputs[m].extend(feed)
            self.block_targets[m].append(targets[m])
        done = [m for m in range(self.members)
                if len(self.block_targets[m]) == self.config.tbptt]
        if done:
            self._train_blocks(done)
        return logits

    def _train_blocks(self, done: list[int]) -> None:
        """Re-run each finished block with gradient from its start state; one Adam step
        per member on the mean loss of its block's predictions."""
        keys = [(len(self.block_inputs[m]), self.block_clock[m]) for m in done]
        for group in groups(keys):
            members = [done[i] for i in group]
            rows = self._rows(members)
            params = self._params(rows)
            inputs = torch.tensor([self.block_inputs[m] for m in members], device=self.device)
            targets = torch.tensor([self.block_targets[m] for m in members], device=self.device)
            outputs, _ = self.core.run(params, inputs, _take(self.block_state, rows),
                                       self.block_clock[members[0]])
            logits = self._readout(params, outputs[:, -targets.shape[1] :])
            loss = nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(),
                                               reduction="none")
            self._step(loss.view(targets.shape).mean(1).sum(), members)
        self._start_block(done)

    def _learn_paper(self, windows: np.ndarray, targets: list[int]) -> Tensor:
        """Every member encodes its window from its carried state and takes one Adam step
        (:meth:`StreamingRecurrent._learn_paper`)."""
        logits = torch.empty(self.members, self.vocab_size, device=self.device)
        x = torch.as_tensor(windows, device=self.device)
        y = torch.tensor(targets, device=self.device)
        first = self.config.carry == "first"
        for members in groups(self.clock):
            rows = self._rows(members)
            params, clock = self._params(rows), self.clock[members[0]]
            ids = x if rows is None else x[rows]
            start = _take(self.state, rows)
            if first:
                outputs, carried = self.core.run(params, ids[:, :1], start, clock)
                if self.window > 1:
                    outputs, _ = self.core.run(params, ids[:, 1:], carried, clock + 1)
            else:
                outputs, carried = self.core.run(params, ids, start, clock)
            member_logits = self._readout(params, outputs[:, -1:])[:, 0]
            loss = nn.functional.cross_entropy(member_logits, y[members], reduction="none")
            self._step(loss.sum(), members)
            self.state = _put(self.state, rows, carried)
            logits[members] = member_logits.detach()
            for m in members:
                self.clock[m] += 1 if first else self.window
        return logits

    def _runtime(self, m: int) -> dict[str, Any]:
        return {
            "state": _as_state(tuple(s[m].clone() for s in self.state)), "clock": self.clock[m],
            "last_window": None if self.last_window[m] is None else list(self.last_window[m]),
            "block_state": _as_state(tuple(s[m].clone() for s in self.block_state)),
            "block_clock": self.block_clock[m], "block_inputs": list(self.block_inputs[m]),
            "block_targets": list(self.block_targets[m]),
        }

    def _load_runtime(self, m: int, runtime: dict[str, Any]) -> None:
        for stacked, key in ((self.state, "state"), (self.block_state, "block_state")):
            for mine, saved in zip(stacked, _as_states(runtime[key]), strict=True):
                mine[m] = saved
        self.clock[m] = runtime["clock"]
        self.block_clock[m] = runtime["block_clock"]
        window = runtime["last_window"]
        self.last_window[m] = None if window is None else list(window)
        self.block_inputs[m] = list(runtime["block_inputs"])
        self.block_targets[m] = list(runtime["block_targets"])
