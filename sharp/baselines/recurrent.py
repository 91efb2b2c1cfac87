"""Recurrent baselines (SPEC §7): RNN, LSTM and GRU stacks, streamed like SHARP.

:class:`StreamingRecurrent` holds the streaming rules every recurrent baseline shares
(the clockwork RNN reuses it); a model only supplies a :class:`RecurrentCore` that runs a
token sequence from a state.

``tbptt`` mode (default): each token is fed once. Every step feeds the new token to the
carried state without gradient, predicts the target from the output, and buffers the
token; after ``tbptt`` predictions the block is run again from the state it started in,
as one sequence with gradient, and one Adam step is taken on the mean loss of its
predictions. The weights are fixed within a block, so the re-run computes the very
predictions that were reported, and gradients never cross a block boundary. (Re-running
is faster than keeping each step's graph: the sequence's backward batches the weight
gradients over the block.) A checkpoint holds the block's start state and tokens, so
resuming mid-block is exact.

``paper`` mode: every step encodes its stride-1 window of W tokens from the carried,
detached state, predicts the target from the final output and takes one Adam step; the
state after the whole window (``carry="final"``, the authors' code) or after its first
token (``carry="first"``) is carried on.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from sharp.baselines.config import ClockworkConfig, RecurrentConfig
from sharp.config import check_instance
from sharp.engines.optim import FusedAdam
from sharp.engines.runtime import exact_float32, prepare_runtime, small_kernels
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

State = Tensor | tuple[Tensor, ...]

#: Tokens per recurrent call when evaluating a long slice.
EVAL_CHUNK = 4096


def detach_state(state: State) -> State:
    """The state without its autograd history."""
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()


class RecurrentCore(nn.Module):
    """A recurrent model over one token stream: :meth:`run` plus a ``readout`` to V. Its
    input layer is a learned embedding, or a frozen table's vectors through a trained
    linear (:func:`~sharp.model.inputs.input_layer`)."""

    readout: nn.Linear

    def initial_state(self) -> State:
        """The state a stream starts from."""
        raise NotImplementedError

    def run(self, ids: Tensor, state: State, clock: int) -> tuple[Tensor, State]:
        """Feed ``ids`` (T,) from ``state``; the first token is fed at time ``clock``.
        Returns the outputs (T, F) the read-out turns into logits, and the final state."""
        raise NotImplementedError

    def parameter_count(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters())


#: oneDNN's LSTM pays a per-call cost that grows with the weights and saves time per step:
#: on CPU (torch 2.13, batch 1) it is faster only for sequences of at least about one
#: step per this many recurrent weights (measured: ~2 steps for 0.2M weights, ~40 for 10M).
ONEDNN_WEIGHTS_PER_STEP = 250_000


class StackCore(RecurrentCore):
    """Embedding E (or frozen ``table`` vectors -> E) -> ``layers`` x ``hidden``
    RNN/LSTM/GRU (PyTorch's kernels) -> V.

    A single token goes through PyTorch's fused cell functions layer by layer (the same
    arithmetic as the stacked module, at half its fixed cost per call); longer sequences
    go through the stacked module.
    """

    def __init__(self, config: RecurrentConfig, table: Tensor | None = None) -> None:
        super().__init__()
        c = config
        self.embed = input_layer(c.vocab_size, c.embedding, table)
        kinds: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
        self.rnn = kinds[c.cell](c.embedding, c.hidden, c.layers, batch_first=True)
        self.readout = nn.Linear(c.hidden, c.vocab_size)
        self.lstm = c.cell == "lstm"
        self.cell = {"rnn": torch.rnn_tanh_cell, "lstm": torch.lstm_cell,
                     "gru": torch.gru_cell}[c.cell]
        self.shape = (c.layers, 1, c.hidden)
        weights = sum(p.numel() for p in self.rnn.parameters())
        self.onednn_min_steps = max(2, math.ceil(weights / ONEDNN_WEIGHTS_PER_STEP))

    def initial_state(self) -> State:
        zeros = self.readout.weight.new_zeros(self.shape)
        return (zeros, zeros.clone()) if self.lstm else zeros

    @exact_float32()
    def run(self, ids: Tensor, state: State, clock: int) -> tuple[Tensor, State]:
        if ids.shape[0] == 1:
            return self._step(self.embed(ids), state)
        if self.lstm and ids.shape[0] < self.onednn_min_steps:
            with small_kernels():
                outputs, final = self.rnn(self.embed(ids).unsqueeze(0), state)
        else:
            outputs, final = self.rnn(self.embed(ids).unsqueeze(0), state)
        return outputs[0], final

    def _step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        """One token (``x`` is its embedding, (1, E)) through every layer's cell."""
        states, cells = [], []
        for level, weights in enumerate(self.rnn.all_weights):
            if isinstance(state, tuple):
                x, c = self.cell(x, (state[0][level], state[1][level]), *weights)
                cells.append(c)
            else:
                x = self.cell(x, state[level], *weights)
            states.append(x)
        if isinstance(state, tuple):
            return x, (torch.stack(states), torch.stack(cells))
        return x, torch.stack(states)


class StreamingRecurrent:
    """The learner protocol for a :class:`RecurrentCore` (``tbptt`` and ``paper`` modes).
    ``table``: the frozen input table of a config with ``inputs="dense"`` (None: read from
    its ``input_table``; :func:`~sharp.model.inputs.input_table`)."""

    kind: str
    #: Set when built; afterwards only ``lr`` may change
    #: (:class:`~sharp.protocol.LiveConfig`; :meth:`apply_config`).
    config = LiveConfig("lr")

    def __init__(self, config: RecurrentConfig | ClockworkConfig,
                 table: Tensor | None = None) -> None:
        self.config = config
        self.device = prepare_runtime(config.threads, config.device, "batched")
        #: The frozen input table (V, D), or None for a learned embedding.
        self.table = input_table(config, table, self.device)
        self.vocab_size = config.vocab_size
        self.window = config.window
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.core = self._build_core()
        self.core.to(self.device)
        self.optimiser = FusedAdam([self.core.parameters()], [config.lr],
                                   weight_decay=config.weight_decay)
        self.reset_state()

    def _build_core(self) -> RecurrentCore:
        """The model, built from :attr:`config` and :attr:`table`."""
        raise NotImplementedError

    # -- state ----------------------------------------------------------------------
    def reset_state(self) -> None:
        """Forget the stream position: state, clock and window. An unfinished TBPTT block
        is dropped untrained; the weights and optimiser moments are kept."""
        self.state = self.core.initial_state()
        self.clock = 0
        self.last_window: list[int] | None = None
        self._start_block()

    def _start_block(self) -> None:
        self.block_state = self.state
        self.block_clock = self.clock
        self.block_inputs: list[int] = []
        self.block_targets: list[int] = []

    def apply_config(self, changed: set[str]) -> None:
        """Put a live change of ``config`` into effect: a new ``lr`` is the optimiser's
        from the next update."""
        if "lr" in changed:
            self.optimiser.lrs = [self.config.lr] * len(self.optimiser.lrs)

    def parameter_count(self) -> int:
        """Number of trainable parameters."""
        return self.core.parameter_count()

    # -- learning -------------------------------------------------------------------
    @small_kernels()
    def learn(self, window: TokenIds, target: int) -> StepResult:
        """Predict ``target`` after ``window`` (W ids: a list, array or tensor; consecutive
        stride-1 windows of one stream in ``tbptt`` mode), then learn from it. Raises
        ValueError for a malformed window or target, :class:`~sharp.protocol.Diverged`
        when the loss is not finite."""
        ids = check_window(window, self.window, self.vocab_size).tolist()
        y = check_target(target, self.vocab_size)
        if self.config.mode == "paper":
            result = self._learn_paper(ids, y)
        else:
            result = self._learn_tbptt(ids, y)
        check_finite(self, prediction=result.loss)
        return result

    def _learn_tbptt(self, ids: list[int], y: int) -> StepResult:
        if self.last_window is None:
            feed = ids
        elif ids[:-1] == self.last_window[1:]:
            feed = ids[-1:]
        else:
            raise ValueError(
                "tbptt mode expects consecutive stride-1 windows of one stream (each window "
                "shifted by one token from the last); call reset_state() to start a new stream"
            )
        self.last_window = ids
        core = self.core
        with torch.no_grad():
            outputs, self.state = core.run(torch.tensor(feed, device=self.device),
                                           self.state, self.clock)
            logits = core.readout(outputs[-1])
            loss = nn.functional.cross_entropy(logits, torch.tensor(y, device=self.device))
        self.clock += len(feed)
        self.block_inputs.extend(feed)
        self.block_targets.append(y)
        if len(self.block_targets) == self.config.tbptt:
            self._train_block()
        return StepResult(logits, loss.item(), y)

    def _train_block(self) -> None:
        """Re-run the finished block with gradient from its start state; one Adam step."""
        core = self.core
        inputs = torch.tensor(self.block_inputs, device=self.device)
        targets = torch.tensor(self.block_targets, device=self.device)
        outputs, _ = core.run(inputs, self.block_state, self.block_clock)
        logits = core.readout(outputs[-targets.numel() :])
        self._step(nn.functional.cross_entropy(logits, targets))
        self._start_block()

    def _step(self, loss: Tensor) -> None:
        self.optimiser.zero_grad()
        loss.backward()
        for p in self.optimiser.params:  # e.g. a clockwork module that did not tick
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        self.optimiser.step()

    def _learn_paper(self, ids: list[int], y: int) -> StepResult:
        core = self.core
        x = torch.tensor(ids, device=self.device)
        if self.config.carry == "first":
            outputs, carried = core.run(x[:1], self.state, self.clock)
            if len(ids) > 1:
                outputs, _ = core.run(x[1:], carried, self.clock + 1)
            advance = 1
        else:
            outputs, carried = core.run(x, self.state, self.clock)
            advance = len(ids)
        logits = core.readout(outputs[-1])
        loss = nn.functional.cross_entropy(logits, torch.tensor(y, device=self.device))
        self._step(loss)
        self.state = detach_state(carried)
        self.clock += advance
        return StepResult(logits.detach(), loss.item(), y)

    # -- evaluation -----------------------------------------------------------------
    def predict_stream(self, tokens: TokenIds) -> Tensor:
        """Logits (T - W, V) for every token of ``tokens`` (T ids) after the first W, from
        a fresh state and without learning: :meth:`predict_blocks` joined."""
        return torch.cat(list(self.predict_blocks(tokens)))

    @torch.inference_mode()
    def predict_blocks(self, tokens: TokenIds) -> Iterator[Tensor]:
        """:meth:`predict_stream`'s logits as consecutive blocks of at most
        :data:`EVAL_CHUNK` rows, each computed when it is asked for, by the learner's own
        streaming rule (``tbptt``: every token fed once, in chunks; ``paper``: window by
        window)."""
        ids = token_tensor(tokens, self.window, self.vocab_size, self.device)
        if self.config.mode == "paper":
            yield from self._predict_paper(ids)
            return
        core, w = self.core, self.window
        state, inputs = core.initial_state(), ids[:-1]
        for lo in range(0, inputs.numel(), EVAL_CHUNK):
            outputs, state = core.run(inputs[lo : lo + EVAL_CHUNK], state, lo)
            first = max(0, w - 1 - lo)
            if first < outputs.shape[0]:
                yield core.readout(outputs[first:])

    def _predict_paper(self, ids: Tensor) -> Iterator[Tensor]:
        """``paper`` mode's logits, window by window, in blocks of :data:`EVAL_CHUNK` rows."""
        core, w = self.core, self.window
        state, clock, rows = core.initial_state(), 0, []
        for i in range(ids.numel() - w):
            x = ids[i : i + w]
            if self.config.carry == "first":
                outputs, state_next = core.run(x[:1], state, clock)
                if w > 1:
                    outputs, _ = core.run(x[1:], state_next, clock + 1)
                clock += 1
            else:
                outputs, state_next = core.run(x, state, clock)
                clock += w
            state = state_next
            rows.append(core.readout(outputs[-1]))
            if len(rows) == EVAL_CHUNK:
                yield torch.stack(rows)
                rows = []
        if rows:
            yield torch.stack(rows)

    def evaluate(self, tokens: TokenIds) -> EvalResult:
        """Bits and top-1 correctness for every token after the first W of ``tokens`` (a
        list, array or tensor of more than W ids; ValueError otherwise, as for a stream),
        from a fresh state, without learning, scored block by block (:meth:`predict_blocks`;
        a large vocabulary never holds every logit at once); the learner is left
        untouched."""
        return evaluate_predictions(self, tokens, self.predict_blocks)

    # -- checkpoints ----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Weights, optimiser moments, carried state, clock, last window and the
        unfinished TBPTT block: everything needed to resume the stream bit-exactly."""
        runtime = {
            "state": self.state, "clock": self.clock, "last_window": self.last_window,
            "block_state": self.block_state, "block_clock": self.block_clock,
            "block_inputs": self.block_inputs, "block_targets": self.block_targets,
        }
        state = copy.deepcopy({
            "kind": self.kind, "config": self.config.to_dict(),
            "weights": self.core.state_dict(), "optimiser": self.optimiser.state_dict(),
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
        self.core.load_state_dict(state["weights"])
        self.optimiser.load_state_dict(state["optimiser"])
        runtime = state["runtime"]
        self.state = _to(runtime["state"], self.device)
        self.block_state = _to(runtime["block_state"], self.device)
        self.clock = runtime["clock"]
        self.block_clock = runtime["block_clock"]
        self.last_window = runtime["last_window"]
        self.block_inputs = list(runtime["block_inputs"])
        self.block_targets = list(runtime["block_targets"])


def _to(state: State, device: torch.device) -> State:
    if isinstance(state, tuple):
        return tuple(s.to(device) for s in state)
    return state.to(device)


class RecurrentBaseline(StreamingRecurrent):
    """RNN, LSTM or GRU baseline (``config.cell``) implementing the learner protocol.
    Raises TypeError for a ``config`` that is not a :class:`RecurrentConfig`."""

    def __init__(self, config: RecurrentConfig, table: Tensor | None = None) -> None:
        check_instance(config, RecurrentConfig, "RecurrentBaseline",
                       "sharp.baselines.baseline_preset('lstm')")
        self.kind = config.cell
        super().__init__(config, table)

    def _build_core(self) -> RecurrentCore:
        return StackCore(self.config, self.table)  # type: ignore[arg-type]

