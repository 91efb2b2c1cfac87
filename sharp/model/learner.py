"""The SHARP learner: wake (SPEC §3), sleep (SPEC §4), evaluation (SPEC §5), state.

Read it next to SPEC.md: :meth:`Sharp.learn` is the wake step, numbered as there;
:meth:`Sharp.sleep` is the sleep phase; :meth:`Sharp.evaluate` is evaluation without
learning.
"""

from __future__ import annotations

import copy
import math
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from sharp.config import SharpConfig, check_instance
from sharp.engines.fused import FusedEngine, select_engine
from sharp.engines.optim import FusedAdam
from sharp.engines.runtime import load_generator_state, prepare_runtime, small_kernels
from sharp.model.gate import RecallGate, ReplayOutcome, WakeOutcome
from sharp.model.heads import make_head
from sharp.model.inputs import check_table_state, input_table, table_state, token_inputs
from sharp.model.memory import Memory
from sharp.protocol import (
    EvalResult,
    LiveConfig,
    StepResult,
    TokenIds,
    check_finite,
    check_seeds,
    check_target,
    check_weights,
    check_window,
    evaluate_predictions,
    token_tensor,
)


@dataclass(frozen=True)
class Tag:
    """A context tag stored in wake: the layer-0 state and the context head 1 gave it."""

    state: Tensor
    context: Tensor


@dataclass
class SleepLayerReport:
    """What one target layer's replay did."""

    layer: int
    windows: int
    updates: int
    first_loss: float
    last_loss: float
    seconds: float


@dataclass
class SleepReport:
    """What one sleep call did; ``slept`` is False when nothing was pending."""

    slept: bool
    tags: int = 0
    layers: list[SleepLayerReport] = field(default_factory=list)


class Sharp:
    r"""A SHARP learner over one token stream (batch 1), implementing the learner protocol.

    ``memories`` and ``heads`` are ``nn.ModuleList``\ s; ``net`` holds both. With
    ``config.inputs == "dense"``, ``table`` is the frozen (V, D) input table (None: read
    from ``config.input_table``); it is kept as :attr:`table`, in no optimiser. Raises
    TypeError for a ``config`` that is not a :class:`~sharp.config.SharpConfig`, and what
    :func:`~sharp.model.inputs.input_table` raises (ValueError, FileNotFoundError) for a
    missing or mis-shaped table.
    """

    #: Set when built; afterwards only ``tau`` and ``lr`` may change
    #: (:class:`~sharp.protocol.LiveConfig`; :meth:`apply_config`).
    config = LiveConfig("tau", "lr")

    def __init__(self, config: SharpConfig, table: Tensor | None = None) -> None:
        check_instance(config, SharpConfig, "Sharp", "sharp.preset('quick')")
        self.config = config
        self.device = prepare_runtime(config.threads, config.device, "stream")
        #: The frozen input table (V, D), or None for a learned token embedding.
        self.table = input_table(config, table, self.device)
        self.vocab_size = config.vocab_size
        self.window = config.window
        self.strides = config.strides
        c = config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(c.seed)
            self.memories = nn.ModuleList(
                Memory(
                    self._memory_inputs(level),
                    c.hidden[level],
                    c.embedding,
                    c.window,
                    tokens=level == 0 and self.table is None,
                    reservoir=c.init == "reservoir" and level > 0,
                )
                for level in range(c.layers)
            )
            self.heads = nn.ModuleList(
                make_head(
                    c.head_type,
                    c.hidden[level],
                    c.vocab_size if level == 0 else c.hidden[level - 1],
                    c.head_layers,
                    c.hidden[level] if level + 1 < c.layers else None,
                )
                for level in range(c.layers)
            )
        self.net = nn.ModuleDict({"memories": self.memories, "heads": self.heads})
        self.net.to(self.device)
        self.memory_opt = FusedAdam([self.memories[0].parameters()], [c.lr],
                                    weight_decay=c.weight_decay)
        self.head_opt = FusedAdam([head.parameters() for head in self.heads],
                                  [c.head_lr(level) for level in range(c.layers)],
                                  weight_decay=c.weight_decay)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(c.seed)
        self.tags: deque[Tag] = deque(maxlen=c.tag_buffer)
        self.sleep_pending = False
        self.states = [self._zeros(h) for h in c.hidden]
        self.carry = self._zeros(c.hidden[0])
        self.reset_state()
        self.kernels: FusedEngine | None = select_engine(self)

    @property
    def engine(self) -> str:
        """The engine that runs wake and sleep: ``fused`` or ``torch``."""
        return "torch" if self.kernels is None else "fused"

    def _memory_inputs(self, level: int) -> int:
        """Input size of memory ``level``: V token ids or D dense vectors for layer 0,
        H_{level-1} state vectors above."""
        c = self.config
        if level > 0:
            return c.hidden[level - 1]
        return c.vocab_size if self.table is None else self.table.shape[1]

    def inputs(self, ids: Tensor) -> Tensor:
        """What memory 0 reads for token ``ids`` (any shape, int64): the ids themselves
        (learned embedding) or their rows of the frozen table, shape (*ids.shape, D)
        (dense inputs, SPEC §11): :func:`~sharp.model.inputs.token_inputs`."""
        return token_inputs(ids, self.table)

    # -- state ----------------------------------------------------------------------
    def _zeros(self, size: int, batch: int = 1) -> Tensor:
        return torch.zeros(batch, size, device=self.device)

    def reset_state(self) -> None:
        """Forget the stream position: layer states, step counter, window carry, EMA and
        tags (as at the start of a new book). Weights and optimiser moments are kept, and
        so is a pending sleep owed for memory-0 learning already done."""
        self._zero_states()
        self.t = 0
        self.carry.zero_()
        self.recall_ema = 0.0
        self.tags.clear()
        self.store_tag = False
        self.awake = False

    def _wake_up(self) -> None:
        """SPEC §3 step 0: layer states and t reset; carry, EMA and optimisers kept."""
        self._zero_states()
        self.t = 0
        self.awake = True

    def _zero_states(self) -> None:
        """Zero the layer states in place (the fused engine works on these tensors)."""
        for state in self.states:
            state.zero_()

    def apply_config(self, changed: set[str]) -> None:
        """Put a live change of ``config`` into effect: a new ``lr`` becomes memory 0's
        learning rate and head l's ``lr * lr_slowdown**l`` from the next step (and every
        later sleep's); ``tau`` is read at every step anyway."""
        if "lr" in changed:
            self.memory_opt.lrs = [self.config.lr]
            self.head_opt.lrs = [self.config.head_lr(level)
                                 for level in range(self.config.layers)]

    def parameter_count(self) -> int:
        """Number of parameters (memories and heads)."""
        return sum(p.numel() for p in self.net.parameters())

    # -- wake -----------------------------------------------------------------------
    def learn(self, window: TokenIds, target: int) -> StepResult:
        """One wake step on window ``x`` (W token ids: a list, array or tensor) and next
        token ``y`` (SPEC §3). Raises ValueError for a malformed window or target (nothing
        changes then), :class:`~sharp.protocol.Diverged` when a loss is not finite."""
        x = check_window(window, self.window, self.vocab_size)
        y = check_target(target, self.vocab_size)
        # 0. Waking up resets the layer states and the step counter.
        if not self.awake:
            self._wake_up()
        # 1.
        self.t += 1
        # 2.–6. in :meth:`_wake_torch` (or the fused kernel computing the same); step 3's
        # gate carries the recall EMA from step to step.
        gate = RecallGate(self.config.ema, self.config.tau, self.recall_ema)
        if self.kernels is None:
            outcome = self._wake_torch(
                torch.as_tensor(x, dtype=torch.long, device=self.device).reshape(1, -1),
                torch.tensor([y], device=self.device), gate)
        else:
            outcome = self._wake_fused(x, y, gate)
        self.recall_ema = gate.value
        check_finite(self, prediction=outcome.p, recall=outcome.r)
        # Memory 0 learned (step 3): a sleep is owed, and step 5 stores a tag.
        if outcome.learned:
            self.sleep_pending = True
            self.store_tag = True
        if self.store_tag and outcome.context is not None:
            self.tags.append(Tag(self.states[0].clone(), outcome.context))
            self.store_tag = False
        # 7. Report.
        return StepResult(outcome.logits, outcome.p, y, outcome.r, outcome.learned)

    @small_kernels()
    def _wake_torch(self, x: Tensor, y: Tensor, gate: RecallGate) -> WakeOutcome:
        """SPEC §3 steps 2–6 with torch ops on window ``x`` (1, W) and target ``y`` (1,);
        ``gate`` holds memory 0's recall EMA and is updated."""
        # 2. Encode x with memory 0 from the carried window state; recall loss r
        # (cross-entropy over the tokens, or squared error over their dense vectors).
        memory0 = self.memories[0]
        inputs = self.inputs(x)
        recall, _, after_first = memory0.encode(inputs, self.carry)
        r = memory0.recall_loss(inputs, recall)
        self.carry = after_first.detach()
        # 3. The recall-EMA gate: memory 0 learns only while its recall is poor.
        r_value = r.item()
        learned = gate.update(r_value)
        if learned:
            self.memory_opt.zero_grad()
            r.backward()
            self.memory_opt.step()
        # 4. Bottom-up, no grad: layer l advances when t is a multiple of a**l.
        self.advance(x[:, -1])
        # 5. Top-down through the heads.
        context = self.context()
        logits = self.heads[0](self.states[0], context)
        # 6. Prediction loss, credit-assigned to the heads only (states carry no grad).
        p = nn.functional.cross_entropy(logits, y)
        self.head_opt.zero_grad()
        p.backward()
        self.head_opt.step()
        return WakeOutcome(p.item(), r_value, learned, logits.detach()[0],
                           None if context is None else context.detach())

    def _wake_fused(self, window: np.ndarray, target: int, gate: RecallGate) -> WakeOutcome:
        """SPEC §3 steps 2–6 in one call of the fused kernel on a checked window (same
        result as :meth:`_wake_torch`, states, carry and ``gate`` updated in place)."""
        assert self.kernels is not None
        return self.kernels.wake(np.ascontiguousarray(window, dtype=np.int64), target, self.t,
                                 gate)

    # -- extension points (overridden by ablations, used by explore/ and experiments) ----
    @torch.no_grad()
    def advance(self, token: Tensor) -> None:
        """SPEC §3 step 4: advance every layer whose stride divides the step ``t``, bottom
        up and without gradient; layer 0 steps on ``token`` (1,) (the window's last id,
        read through :meth:`inputs`), layer l > 0 on layer l-1's new state (1, H_{l-1}).
        :attr:`states` are replaced."""
        for level, stride in enumerate(self.strides):
            if self.t % stride:
                break
            source = self.inputs(token) if level == 0 else self.states[level - 1]
            self.states[level] = self.memories[level].step(source, self.states[level])

    def context(self) -> Tensor | None:
        """SPEC §3 step 5 above head 0: run heads L-1..1 top-down on the current states;
        returns head 0's context, shape (1, H_0) (None for a single layer). Keeps the graph
        to the heads' parameters."""
        context = None
        for level in range(self.config.layers - 1, 0, -1):
            context = self.heads[level](self.states[level], context)
        return context

    # -- sleep ----------------------------------------------------------------------
    @small_kernels()
    def sleep(self, *, batched: bool = True) -> SleepReport:
        """The sleep phase (SPEC §4): replay tag-seeded dreams into memories 1..L-1.

        ``batched`` dreams all tags at once per target layer (equal in distribution to the
        sequential form); ``batched=False`` dreams tag by tag in the sequential order.
        Every call, also one that finds nothing pending, ends the wake period.
        """
        self.awake = False
        if self.kernels is not None:
            self.kernels.check(self)
        if not self.sleep_pending:
            return SleepReport(slept=False)
        tags = list(self.tags)
        report = SleepReport(slept=True, tags=len(tags))
        if tags:
            for target in range(1, self.config.layers):
                report.layers.append(self._sleep_layer(target, tags, batched))
        check_finite(self, **{f"memory-{layer.layer} replay": layer.last_loss
                              for layer in report.layers})
        self.tags.clear()
        self.sleep_pending = False
        return report

    def _sleep_layer(self, target: int, tags: list[Tag], batched: bool) -> SleepLayerReport:
        """Train memory ``target`` on downsampled dreams of every tag (SPEC §4 steps 1–2)."""
        c = self.config
        start = time.perf_counter()
        memory = self.memories[target]
        # 1. A fresh Adam on memory k only; a window buffer of W zero vectors.
        optimiser = FusedAdam([memory.parameters()], [c.lr], weight_decay=c.weight_decay)
        window = torch.zeros(c.window, c.hidden[target - 1], device=self.device)
        groups = [tags] if batched else [[tag] for tag in tags]
        check_weights(self, self.net.parameters())  # what the dreams run through
        dreams = torch.cat([self.dream(group, target) for group in groups])
        # 2. Sequential replay training, tag by tag, target carry from zero for each tag,
        # gated by a recall EMA of its own that starts at zero.
        gate = RecallGate(c.ema, c.tau)
        if self.kernels is None:
            replay = self._replay(memory, optimiser, dreams, window, gate)
        else:
            replay = self.kernels.sleep(memory, optimiser, dreams, window, gate)
        return SleepLayerReport(target, len(replay.losses), replay.updates,
                                float(replay.losses[0]), float(replay.losses[-1]),
                                time.perf_counter() - start)

    def _replay(self, memory: Memory, optimiser: FusedAdam, dreams: Tensor, window: Tensor,
                gate: RecallGate) -> ReplayOutcome:
        """SPEC §4 step 2 with torch ops: slide every dreamed vector of ``dreams`` (tags,
        ticks, inputs) into the ``window`` buffer (W, inputs), encode it, and learn while
        ``gate`` (updated) is open."""
        losses, updates = [], 0
        for trajectory in dreams:
            carry = self._zeros(memory.hidden)
            for vector in trajectory:
                window = torch.cat([window[1:], vector.unsqueeze(0)])
                batch = window.unsqueeze(0)
                recall, _, after_first = memory.encode(batch, carry)
                carry = after_first.detach()
                loss = memory.recall_loss(batch, recall)
                value = loss.item()
                losses.append(value)
                if gate.update(value):
                    optimiser.zero_grad()
                    loss.backward()
                    optimiser.step()
                    updates += 1
        return ReplayOutcome(np.asarray(losses), updates)

    @torch.no_grad()
    def dream(self, tags: list[Tag], target: int) -> Tensor:
        """SPEC §4 step 1's dreams for memory ``target`` (1..L-1): dream from ``tags`` (a
        batch, with the learner's RNG) and return what layer ``target`` sees, the
        layer-(target-1) state at every replay step s with s mod a**target == 0; shape
        (len(tags), ticks, H_{target-1}). Raises ValueError for no tags (nothing to dream
        from) or a ``target`` outside 1..L-1."""
        c = self.config
        if not tags or not 1 <= target < c.layers:
            raise ValueError(f"dream needs one or more tags and a target memory in "
                             f"1..{c.layers - 1}, got {len(tags)} tags and target {target}")
        start = torch.cat([tag.state for tag in tags])
        dreaming = self.dream_steps(start, torch.cat([tag.context for tag in tags]),
                                    c.replay_steps)
        states = [start] + [self._zeros(c.hidden[level], len(tags)) for level in range(1, target)]
        seen = []
        for s, (_, state) in enumerate(dreaming):
            states[0] = state
            for level in range(1, target):
                if s % self.strides[level]:
                    break
                states[level] = self.memories[level].step(states[level - 1], states[level])
            if s % self.strides[target] == 0:
                seen.append(states[target - 1])
        return torch.stack(seen, dim=1)

    @torch.no_grad()
    def dream_steps(self, state: Tensor, context: Tensor | None, steps: int,
                    generator: torch.Generator | None = None) -> Iterator[tuple[Tensor, Tensor]]:
        """Sleep's teacher: from layer-0 states (B, H_0), head 0 under the fixed
        ``context`` samples a token (temperature, top-k: :func:`sample_tokens`) and memory 0
        steps on it (on its frozen vector with dense inputs). Yields (tokens (B,), new
        states) ``steps`` times. The dream's uniform draws, (steps, B), are taken from
        ``generator`` (the learner's RNG by default) in one call before its first step."""
        c = self.config
        generator = self.generator if generator is None else generator
        uniforms = torch.rand(steps, state.shape[0], generator=generator, device=self.device)
        head = self.heads[0]
        condition = head.condition(context)  # constant while dreaming: computed once
        for s in range(steps):
            logits = head.conditioned(state, condition)
            token = sample_tokens(logits, uniforms[s], c.temperature, c.top_k)
            state = self.memories[0].step(self.inputs(token), state)
            yield token, state

    # -- evaluation -----------------------------------------------------------------
    def predict_stream(self, tokens: TokenIds, chunk: int = 4096) -> Tensor:
        """Logits (T - W, V) for every token of ``tokens`` (T ids) after the first W, from
        a reset state and with the wake step's state updates (same strides), without
        learning: :meth:`predict_blocks` joined."""
        return torch.cat(list(self.predict_blocks(tokens, chunk)))

    @torch.inference_mode()
    def predict_blocks(self, tokens: TokenIds, chunk: int = 4096) -> Iterator[Tensor]:
        """:meth:`predict_stream`'s logits as consecutive blocks of at most ``chunk`` rows
        (chunk, V), each computed when it is asked for.

        The wake step at step t feeds layer 0 the last token of its window; layer l then
        holds output floor(t / a**l) of its encoder. This computes every layer's
        trajectory with one recurrent call per layer and the heads in batches.
        """
        c = self.config
        ids = token_tensor(tokens, c.window, self.vocab_size, self.device)
        steps = ids.numel() - c.window
        # Layer 0 consumes tokens W-1 .. n-2 (the last token of each window); layer l>0
        # consumes every a-th state of the layer below.
        trajectories: list[Tensor] = []
        for level, memory in enumerate(self.memories):
            if level == 0:
                inputs = self.inputs(ids[c.window - 1 : -1])
            else:
                every = self.strides[level] // self.strides[level - 1]
                inputs = trajectories[-1][every - 1 :: every]
            trajectories.append(memory.trajectory(inputs, self._zeros(c.hidden[level])[0]))
        # the state before a layer's first tick is zero: row 0, ahead of its trajectory
        padded = [torch.cat([self._zeros(c.hidden[level]), outputs])
                  for level, outputs in enumerate(trajectories)]
        t = torch.arange(1, steps + 1, device=self.device)
        for lo in range(0, steps, chunk):
            tt = t[lo : lo + chunk]
            states = [padded[level][tt // self.strides[level]] for level in range(c.layers)]
            context = None
            for level in range(c.layers - 1, 0, -1):
                context = self.heads[level](states[level], context)
            yield self.heads[0](states[0], context)

    def evaluate(self, tokens: TokenIds) -> EvalResult:
        """Bits and top-1 correctness for every token after the first W of ``tokens`` (a
        list, array or tensor of more than W ids; ValueError otherwise, as for a stream),
        from a reset state, without learning (SPEC §5), scored block by block
        (:meth:`predict_blocks`). The learner is left untouched."""
        return evaluate_predictions(self, tokens, self.predict_blocks)

    # -- checkpoints ----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Weights, optimiser moments, states, carry, counters, EMA, tags, flags and RNG:
        everything needed to resume the stream bit-exactly. With dense inputs, also the
        frozen table's ``inputs`` entry (:func:`~sharp.model.inputs.table_state`: its
        digest, and the table itself when the config gives no ``input_table``)."""
        runtime = {
            "states": self.states, "t": self.t, "carry": self.carry,
            "recall_ema": self.recall_ema, "sleep_pending": self.sleep_pending,
            "store_tag": self.store_tag, "awake": self.awake,
            "tags": [(tag.state, tag.context) for tag in self.tags],
        }
        state = copy.deepcopy({
            "kind": "sharp",
            "config": self.config.to_dict(),
            "weights": self.net.state_dict(),
            "memory_opt": self.memory_opt.state_dict(),
            "head_opt": self.head_opt.state_dict(),
            "runtime": runtime,
            "rng": self.generator.get_state(),
        })
        if self.table is not None:
            state["inputs"] = table_state(self.table, self.config)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (saved on any device); a checkpoint of another
        configuration raises ValueError naming the fields that differ. A state saved on
        another device type continues its stream with a generator seeded from the saved
        one (:func:`~sharp.engines.runtime.load_generator_state`): the dreams of the next
        sleep differ from the ones the saving device would have drawn. A learner with
        dense inputs raises ValueError for a checkpoint saved with another table."""
        check_compatible(state, "sharp", self.config)
        if self.table is not None:
            check_table_state(state["inputs"], self.table)
        state = copy.deepcopy(state)
        self.net.load_state_dict(state["weights"])
        self.memory_opt.load_state_dict(state["memory_opt"])
        self.head_opt.load_state_dict(state["head_opt"])
        runtime = state["runtime"]
        with torch.no_grad():
            for mine, saved in zip(self.states, runtime["states"], strict=True):
                mine.copy_(saved)
            self.carry.copy_(runtime["carry"])
        self.t = runtime["t"]
        self.recall_ema = runtime["recall_ema"]
        self.sleep_pending = runtime["sleep_pending"]
        self.store_tag = runtime["store_tag"]
        self.awake = runtime["awake"]
        self.tags.clear()
        self.tags.extend(Tag(s.to(self.device), c.to(self.device)) for s, c in runtime["tags"])
        load_generator_state(self.generator, state["rng"])


#: Config fields that may differ between a checkpoint and the learner loading it.
#: (``input_table`` says where the frozen input table is read from, not which it is: a
#: checkpoint names the table by its digest, :func:`~sharp.model.inputs.check_table_state`.)
RUNTIME_FIELDS = ("device", "threads", "engine", "name", "input_table")


def sample_tokens(logits: Tensor, uniforms: Tensor, temperature: float,
                  top_k: int | None) -> Tensor:
    """Sample one token per row of ``logits`` (..., V) from softmax(logits / temperature),
    restricted to the ``top_k`` largest logits when given, by inverting its cumulative
    distribution at ``uniforms`` (...), draws in [0, 1): token ids (...), int64.

    The draws are taken apart from the sampling so that a dream draws all its uniforms in
    one call and an ensemble samples every member in one batched op, each member reading its
    own generator (:meth:`Sharp.dream_steps`). A token of probability 0 is never chosen."""
    logits = logits / temperature
    index = None
    if top_k is not None:
        logits, index = logits.topk(top_k, dim=-1)
    cdf = logits.softmax(-1).cumsum(-1)
    # The first position whose cumulative probability exceeds u (scaled by the total, 1 up
    # to rounding); the clamp guards u * total rounding up to the total.
    point = (uniforms * cdf[..., -1]).unsqueeze(-1)
    choice = (cdf <= point).sum(-1, keepdim=True).clamp_(max=cdf.shape[-1] - 1)
    if index is not None:
        choice = index.gather(-1, choice)
    return choice.squeeze(-1)


def config_differences(mine: dict[str, Any], theirs: dict[str, Any],
                       ignore: Sequence[str] = RUNTIME_FIELDS) -> list[str]:
    """The config fields (sorted) whose values differ between two ``to_dict()`` forms,
    apart from ``ignore``."""
    return sorted(key for key in set(mine) | set(theirs)
                  if key not in ignore and mine.get(key) != theirs.get(key))


def check_compatible(state: dict[str, Any], kind: str, config: Any) -> None:
    """Raise ValueError unless ``state`` is a checkpoint of a ``kind`` learner whose
    config matches ``config`` (apart from :data:`RUNTIME_FIELDS`)."""
    if not isinstance(state, dict) or state.get("kind") != kind:
        found = state.get("kind") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"this is not a {kind} checkpoint (found {found!r})")
    mine = config.to_dict()
    theirs = state["config"]
    differ = config_differences(mine, theirs)
    if differ:
        details = ", ".join(f"{k}: checkpoint {theirs.get(k)!r} vs learner {mine.get(k)!r}"
                            for k in differ)
        raise ValueError(
            f"checkpoint was saved with another configuration ({details}); build the learner "
            "from the checkpoint's config instead"
        )


def ensemble_seeds(learners: Sequence[Any], kind: type | tuple[type, ...], example: str
                   ) -> list[int]:
    """The seeds of ``learners`` to gather into one ensemble (``from_learners``): raises
    TypeError unless every one is a ``kind`` (``example`` shows one) and all of one class,
    ValueError for none, for two of different configurations (apart from the seed and
    :data:`RUNTIME_FIELDS`) or for two sharing a seed — each naming the learners."""
    if not learners:
        raise ValueError("from_learners needs at least one learner")
    for learner in learners:
        check_instance(learner, kind, "from_learners", example)
    first = learners[0]
    for i, learner in enumerate(learners[1:], start=1):
        if type(learner) is not type(first):
            raise TypeError(f"from_learners needs learners of one kind: learners 0 and {i} "
                            f"are a {type(first).__name__} and a {type(learner).__name__}")
        mine, theirs = first.config.to_dict(), learner.config.to_dict()
        differ = config_differences(mine, theirs, (*RUNTIME_FIELDS, "seed"))
        if differ:
            details = ", ".join(f"{k} {mine.get(k)!r} vs {theirs.get(k)!r}" for k in differ)
            raise ValueError(f"from_learners needs learners of one configuration: learners 0 "
                             f"and {i} differ in {details}")
    return check_seeds([learner.config.seed for learner in learners], owner="learners")


def bits_clip(vocab_size: int) -> float:
    """The authors' per-token clip, log2(V) (4.755 bits for V = 27)."""
    return math.log2(vocab_size)
