"""Ensembles of baselines (SPEC §10): M independent baseline learners of one kind and one
configuration in one process, each on its own stream and seed, their weights stacked along a
leading member axis so that one batched step advances all M.

Member m computes what the separate learner of ``config.replace(seed=seeds[m])`` computes on
its stream: the same streaming rule (the recurrent baselines' TBPTT blocks or the authors'
stride-1 windows, the transformer's context blocks and training chunks), the same Adam
(:class:`~sharp.engines.optim.FusedAdam`'s kernel, per member, through
:class:`~sharp.engines.ensemble.adam.BatchedAdam`), up to the summation order of batched
matrix products. Members at the same stream position (always, for members started together)
step as one batch; members at different positions (e.g. gathered by
:meth:`BaselineEnsemble.from_learners`) step in groups of equal position.

* Recurrent baselines (RNN, LSTM, GRU, clockwork): torch's recurrent modules have no
  ``vmap`` batching rule, so their cells are written here over stacked weights with batched
  matrix products (:class:`StackedStack`, :class:`StackedClockwork`), in torch's gate order
  and formulas.
* Transformer: its own :class:`~sharp.baselines.transformer.Decoder`, called per member
  through ``torch.func.functional_call`` under ``torch.func.vmap``.

Evaluation runs every member's slice through that member's weights with the separate
learner's own code (in one scratch learner), so it is the member's evaluation exactly.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from sharp.baselines.clockwork import ClockworkCore, ClockworkRNN, active_modules
from sharp.baselines.config import (
    BaselineConfig,
    ClockworkConfig,
    RecurrentConfig,
    TransformerConfig,
)
from sharp.baselines.recurrent import RecurrentBaseline, StackCore, State, StreamingRecurrent
from sharp.baselines.transformer import TransformerBaseline
from sharp.engines.ensemble import EnsembleStep
from sharp.engines.ensemble.adam import BatchedAdam
from sharp.engines.ensemble.stacked import Params, embedding, linear
from sharp.engines.runtime import small_kernels
from sharp.model.learner import check_compatible
from sharp.protocol import (
    EvalResult,
    TokenIds,
    check_finite,
    check_targets,
    check_windows,
)

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


Learner = StreamingRecurrent | TransformerBaseline
#: A stacked recurrent state: (h,) or (h, c) for the LSTM, each with a leading member axis.
States = tuple[Tensor, ...]


def groups(keys: Sequence[Hashable]) -> list[list[int]]:
    """Indices with equal keys, grouped in order of first appearance."""
    found: dict[Hashable, list[int]] = {}
    for i, key in enumerate(keys):
        found.setdefault(key, []).append(i)
    return list(found.values())


class BaselineEnsemble:
    """M baseline learners of ``config``, member m seeded with ``seeds[m]``; build one with
    :func:`baseline_ensemble` (which picks the subclass for the configuration).

    Member m starts with the weights and optimiser of the separate learner of
    ``config.replace(seed=seeds[m])``; :meth:`member` takes it out as such a learner.
    Raises ValueError for an empty or repeated seed list.
    """

    kind: str

    def __init__(self, config: BaselineConfig, seeds: Sequence[int]) -> None:
        self.config = config
        self.seeds = [int(seed) for seed in seeds]
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"an ensemble needs one distinct seed per member, got {seeds!r}")
        learners = [self._learner(self.member_config(m)) for m in range(len(self.seeds))]
        self.kind = learners[0].kind
        self.members = len(learners)
        self.device = learners[0].device
        self.vocab_size, self.window = config.vocab_size, config.window
        #: Evaluation loads a member's weights into this learner and runs its own code.
        self._scratch = learners[0]
        params, _ = stack_module_state([self._module(learner) for learner in learners])
        #: Stacked weights (M, ...) by the separate learner's parameter names.
        self.params: dict[str, Tensor] = params
        self.optimiser = BatchedAdam([list(params.values())], [config.lr],
                                     weight_decay=config.weight_decay)
        self._allocate()
        self._load_members([learner.state_dict() for learner in learners])

    # -- what each kind supplies ----------------------------------------------------
    def _learner(self, config: BaselineConfig) -> Learner:
        """A separate learner of ``config``."""
        raise NotImplementedError

    def _module(self, learner: Learner) -> nn.Module:
        """The module holding ``learner``'s weights."""
        raise NotImplementedError

    def _allocate(self) -> None:
        """Create the per-member runtime (zeros; :meth:`_load_members` fills it)."""
        raise NotImplementedError

    def _runtime(self, m: int) -> dict[str, Any]:
        """Member ``m``'s runtime in its learner's ``state_dict()["runtime"]`` format."""
        raise NotImplementedError

    def _load_runtime(self, m: int, runtime: dict[str, Any]) -> None:
        """Load a learner's ``state_dict()["runtime"]`` into member ``m``."""
        raise NotImplementedError

    def _reset(self, m: int) -> None:
        """Member ``m``'s part of :meth:`reset_state`."""
        raise NotImplementedError

    def _learn(self, windows: np.ndarray, targets: list[int]) -> Tensor:
        """Predict and learn one step of every member (checked inputs); logits (M, V)."""
        raise NotImplementedError

    # -- construction ---------------------------------------------------------------
    @classmethod
    def from_learners(cls, learners: Sequence[Learner]) -> BaselineEnsemble:
        """An ensemble whose member m continues ``learners[m]`` exactly where it is (any
        stream position). Raises ValueError unless they are of one kind and share one
        configuration apart from the seed."""
        if not learners:
            raise ValueError("from_learners needs at least one learner")
        ensemble = baseline_ensemble(learners[0].config,
                                     [learner.config.seed for learner in learners])
        ensemble._load_members([learner.state_dict() for learner in learners])
        return ensemble

    def member_config(self, m: int) -> BaselineConfig:
        """The configuration of member ``m``: the ensemble's, with seed ``seeds[m]``."""
        return self.config.replace(seed=self.seeds[m])

    def parameter_count(self) -> int:
        """Number of parameters of one member."""
        return sum(p[0].numel() for p in self.params.values())

    def _rows(self, members: Sequence[int]) -> Tensor | None:
        """Index of ``members`` into the member axis; None for all members in order."""
        if list(members) == list(range(self.members)):
            return None
        return torch.tensor(members, device=self.device)

    def _params(self, rows: Tensor | None) -> Params:
        """The stacked weights of ``rows`` (all when None; gradients reach ``params``)."""
        if rows is None:
            return self.params
        return {name: p[rows] for name, p in self.params.items()}

    # -- learning -------------------------------------------------------------------
    @small_kernels()
    def learn(self, windows: Tensor | np.ndarray | Sequence[TokenIds],
              targets: Tensor | np.ndarray | Sequence[int]) -> EnsembleStep:
        """One streaming step of every member: member m predicts ``targets[m]`` after its
        window ``windows[m]`` (``windows`` (M, W) ids, ``targets`` (M,)) and then learns
        from it by its learner's rule. ``recall`` is NaN and ``learned`` False in the result,
        as in a baseline's :class:`~sharp.protocol.StepResult`. Raises ValueError for wrong
        shapes, ids outside the vocabulary or a window that does not continue its member's
        stream (nothing changes then); :class:`~sharp.protocol.Diverged` when a member's
        loss is not finite."""
        x = check_windows(windows, self.members, self.window, self.vocab_size)
        y = check_targets(targets, self.members, self.vocab_size)
        logits = self._learn(x, y)
        target = torch.tensor(y, device=self.device)
        loss = nn.functional.cross_entropy(logits, target, reduction="none")
        check_finite(self, **{f"prediction (member {m})": value
                              for m, value in enumerate(loss.tolist())})
        return EnsembleStep(logits, loss,
                            torch.full((self.members,), float("nan"), device=self.device),
                            torch.zeros(self.members, dtype=torch.bool, device=self.device),
                            target)

    def _step(self, loss: Tensor, members: Sequence[int]) -> None:
        """One Adam step of ``members`` on ``loss`` (the sum of their losses); a weight
        that took no part (a clockwork module that did not tick) steps on a zero gradient,
        as in the separate learner."""
        grads = torch.autograd.grad(loss, self.optimiser.params, materialize_grads=True)
        mask = None if len(members) == self.members else [m in members
                                                           for m in range(self.members)]
        self.optimiser.step(grads, mask)

    def reset_state(self, members: Sequence[int] | None = None) -> None:
        """Forget the stream position of ``members`` (all when None), as the learner's
        ``reset_state``; weights and optimiser moments are kept."""
        for m in range(self.members) if members is None else members:
            self._reset(m)

    # -- evaluation -----------------------------------------------------------------
    def evaluate(self, tokens: Tensor | np.ndarray | Sequence[TokenIds]) -> list[EvalResult]:
        """Member m's separate learner's ``evaluate(tokens[m])`` for every member (from a
        reset state, without learning; the ensemble is left untouched): ``tokens`` is (M, T)
        ids or M one-dimensional slices. Raises ValueError unless there is one slice of
        more than W valid ids per member."""
        if len(tokens) != self.members:
            raise ValueError(f"{len(tokens)} token sequences for {self.members} members")
        results = []
        module = self._module(self._scratch)
        for m, ids in enumerate(tokens):
            with torch.no_grad():
                for name, p in module.named_parameters():
                    p.copy_(self.params[name][m])
            results.append(self._scratch.evaluate(ids))
        return results

    # -- members and checkpoints ----------------------------------------------------
    def member(self, m: int) -> Learner:
        """Member ``m`` as an ordinary learner (a copy: its ``state_dict`` is member m's,
        and it continues alone exactly as the member would)."""
        learner = self._learner(self.member_config(m))
        learner.load_state_dict(self._member_state(m))
        return learner

    def _member_state(self, m: int) -> dict[str, Any]:
        """Member ``m``'s state in its learner's ``state_dict`` format (copies)."""
        return {
            "kind": self.kind, "config": self.member_config(m).to_dict(),
            "weights": {name: p[m].detach().clone() for name, p in self.params.items()},
            "optimiser": self.optimiser.member_state(m), "runtime": self._runtime(m),
        }

    def _load_members(self, states: Sequence[dict[str, Any]]) -> None:
        """Load one learner ``state_dict`` per member. Raises ValueError for a wrong count
        or a state of another kind, configuration or seed."""
        if len(states) != self.members:
            raise ValueError(f"{len(states)} learner states for {self.members} members")
        for m, state in enumerate(states):
            check_compatible(state, self.kind, self.member_config(m))
        with torch.no_grad():
            for m, state in enumerate(states):
                for name, p in self.params.items():
                    p[m].copy_(state["weights"][name])
                self.optimiser.load_member_state(m, state["optimiser"])
                self._load_runtime(m, state["runtime"])

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume every member's stream bit-exactly: the seeds and one
        learner ``state_dict`` per member (copies)."""
        return {"kind": f"{self.kind}-ensemble", "config": self.config.to_dict(),
                "seeds": list(self.seeds),
                "members": [self._member_state(m) for m in range(self.members)]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`. Raises ValueError for another kind, configuration or
        seed list."""
        check_compatible(state, f"{self.kind}-ensemble", self.config)
        if list(state["seeds"]) != self.seeds:
            raise ValueError(f"checkpoint has seeds {state['seeds']}, this ensemble {self.seeds}")
        self._load_members(state["members"])


# -- recurrent baselines ------------------------------------------------------------------
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


class StackedStack:
    """:class:`~sharp.baselines.recurrent.StackCore` over stacked weights: embedding ->
    ``layers`` RNN/LSTM/GRU layers -> outputs, layer by layer over the sequence as
    ``nn.RNN`` runs it."""

    def __init__(self, core: StackCore, cell: str) -> None:
        self.layers = core.rnn.num_layers
        self.cell = CELLS[cell]
        self.lstm = core.lstm

    def run(self, params: Params, ids: Tensor, state: States, clock: int
            ) -> tuple[Tensor, States]:
        """Feed ``ids`` (G, T) from ``state`` ((G, layers, 1, H), twice for the LSTM):
        the outputs (G, T, H) of the top layer and the final state."""
        x = embedding(ids, params["embed.weight"])
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
    """:class:`~sharp.baselines.clockwork.ClockworkCore` over stacked weights: every
    member's active modules (the same for members at one clock) update per step."""

    def __init__(self, core: ClockworkCore) -> None:
        self.modules, self.hidden, self.columns = core.modules_count, core.hidden, core.columns

    def run(self, params: Params, ids: Tensor, state: States, clock: int
            ) -> tuple[Tensor, States]:
        """Feed ``ids`` (G, T) from ``state`` ((G, modules·H),), the first at time
        ``clock``: the states (G, T, modules·H) after each token and the final state."""
        members, steps = ids.shape
        drive = linear(embedding(ids, params["embed.weight"]), params["w_in"], params["bias"])
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

    def _learner(self, config: BaselineConfig) -> Learner:
        if isinstance(config, ClockworkConfig):
            return ClockworkRNN(config)
        return RecurrentBaseline(cast(RecurrentConfig, config))

    def _module(self, learner: Learner) -> nn.Module:
        return cast(StreamingRecurrent, learner).core

    def _allocate(self) -> None:
        core = cast(StreamingRecurrent, self._scratch).core
        self.core: StackedStack | StackedClockwork = (
            StackedClockwork(core) if isinstance(core, ClockworkCore)
            else StackedStack(cast(StackCore, core), self.kind)
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


# -- transformer ------------------------------------------------------------------------
class TransformerEnsemble(BaselineEnsemble):
    """Transformer members (:class:`TransformerBaseline`'s context blocks, key/value cache
    and training chunks), the decoder vmapped over members."""

    config: TransformerConfig

    def _learner(self, config: BaselineConfig) -> Learner:
        return TransformerBaseline(cast(TransformerConfig, config))

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


def baseline_ensemble(config: BaselineConfig, seeds: Sequence[int]) -> BaselineEnsemble:
    """An ensemble of ``len(seeds)`` baselines of ``config`` (any baseline kind), member m
    seeded with ``seeds[m]``. Raises TypeError for a configuration that is no baseline's,
    ValueError for an empty or repeated seed list.

    Example:
        >>> from sharp.baselines.config import baseline_preset
        >>> ensemble = baseline_ensemble(baseline_preset("gru", "quick", hidden=8,
        ...                              embedding=4, vocab_size=5, window=2), [0, 1, 2])
        >>> step = ensemble.learn([[0, 1], [2, 3], [4, 0]], [2, 4, 1])
        >>> tuple(step.logits.shape), tuple(step.loss.shape)
        ((3, 5), (3,))
    """
    if isinstance(config, RecurrentConfig | ClockworkConfig):
        return RecurrentEnsemble(config, seeds)
    if isinstance(config, TransformerConfig):
        return TransformerEnsemble(config, seeds)
    raise TypeError(f"no baseline ensemble for a {type(config).__name__}")
