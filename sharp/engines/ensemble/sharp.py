"""A SHARP ensemble (SPEC §10): M independent SHARP learners of one configuration in one
process, each on its own stream and seed, their weights stacked along a leading member axis
so that one batched step advances all M.

Member m computes what ``Sharp(config.replace(seed=seeds[m], engine="torch"), table)``
computes on its stream, up to the summation order of batched matrix products: the wake step
of SPEC §3 with its own recall-EMA gate as a mask, its own step counter, waking-up rule, tag
buffer and sleep-pending flag; the sleep of SPEC §4 for every pending member at once, dreams
batched over members × tags (each member's uniform draws taken from its own generator
exactly as a separate learner takes them, every dream step sampling all members at once)
and the sequential replay training batched over members, each member's tags in its own
order.
Read it next to :mod:`sharp.model.learner`, whose structure it follows.

Dense inputs (SPEC §11, ``config.inputs == "dense"``). The members share one frozen (V, D)
table, :attr:`SharpEnsemble.table`, held once on the ensemble's device (never stacked, in no
optimiser): memory 0 of every member reads the table rows of its token ids, through a
stacked linear D → E, and recalls them by squared error, wherever it reads tokens — the
wake windows, the dream steps and the evaluation trajectories. The rows are looked up on
the device inside the step, so the block buffers and CUDA graphs keep holding token ids.

Device-side steps. The wake step and the sleep-replay window step never read a value back
to the host: gates, Adam masks, layer-advance masks, step counters, tag ring buffers and
the per-step losses all live on the device, and every state tensor is updated in place.
(On the CPU, where a read costs no synchronisation, the wake step does read two masks to
skip work they would discard: ``SharpEnsemble._host_reads``.)
:meth:`SharpEnsemble.learn_block` runs B wake steps and reads their losses back once (the
divergence check); on CUDA both steps run as captured CUDA graphs
(:class:`~sharp.engines.ensemble.graphs.StepRunner`). What a graph bakes in: the learning
rates (a change is noticed at the next block and forces a re-capture) and the frozen
config's tau, EMA coefficient, weight decay and betas (fixed for the ensemble's life).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import stack_module_state

from sharp.config import SharpConfig, check_instance
from sharp.engines.ensemble.adam import BatchedAdam
from sharp.engines.ensemble.graphs import StepRunner
from sharp.engines.ensemble.stacked import StackedHead, StackedMemory
from sharp.engines.runtime import load_generator_state, resolve_device, small_kernels
from sharp.model.gate import RecallGate
from sharp.model.inputs import check_table_state, input_table, table_state, token_inputs
from sharp.model.learner import (
    Sharp,
    SleepLayerReport,
    SleepReport,
    Tag,
    check_compatible,
    ensemble_seeds,
    sample_tokens,
)
from sharp.model.memory import tanh_trajectory
from sharp.protocol import (
    DIVERGED_LOSS,
    ENSEMBLE_SUFFIX,
    LN2,
    Diverged,
    EvalResult,
    StepResult,
    TokenIds,
    check_finite,
    check_member,
    check_seeds,
    check_slices,
    check_targets,
    check_weights,
    check_windows,
    token_tensor,
)

KIND = f"sharp{ENSEMBLE_SUFFIX}"
#: Most wake steps per device block (one read-back each): the size of the static buffers.
BLOCK = 256


@dataclass(frozen=True)
class EnsembleStep:
    """What one ensemble wake step reports, member by member: ``logits`` (M, V) on the
    ensemble's device, the prediction made before learning; ``loss`` (M,) its
    cross-entropy p in nats; ``recall`` (M,) memory 0's recall loss r in nats; ``learned``
    (M,) bool, whether memory 0 learned (these three on the CPU: the divergence check read
    them back); ``targets`` (M,) int64."""

    logits: Tensor
    loss: Tensor
    recall: Tensor
    learned: Tensor
    targets: Tensor

    def results(self) -> list[StepResult]:
        """One :class:`~sharp.protocol.StepResult` per member (reads the values back)."""
        rows = zip(self.logits, self.loss.tolist(), self.targets.tolist(),
                   self.recall.tolist(), self.learned.tolist(), strict=True)
        return [StepResult(logits, p, y, r, learned) for logits, p, y, r, learned in rows]


@dataclass(frozen=True)
class EnsembleBlock:
    """What B consecutive wake steps of every member report, read back to the CPU once:
    ``loss`` (B, M) the prediction losses in nats; ``recall`` (B, M) memory 0's recall
    losses in nats; ``learned`` (B, M) bool, the gate decisions; ``correct`` (B, M) bool,
    whether the top-1 prediction was the target; ``logits`` (M, V), the last step's
    predictions, on the ensemble's device."""

    loss: Tensor
    recall: Tensor
    learned: Tensor
    correct: Tensor
    logits: Tensor


class SharpEnsemble:
    """M SHARP learners of ``config``, member m seeded with ``seeds[m]``.

    Member m starts with the weights, optimiser state and generator of
    ``Sharp(config.replace(seed=seeds[m], engine="torch"), table)``; :meth:`member` takes it
    out as such a learner. With ``config.inputs == "dense"``, ``table`` is the frozen (V, D)
    input table every member reads (None: read from ``config.input_table``), kept once as
    :attr:`table`. ``graphs``: run the wake and replay steps as CUDA graphs (None: when the
    device is CUDA; True elsewhere raises ValueError). Raises TypeError for a ``config``
    that is not a :class:`~sharp.config.SharpConfig` and for ``seeds`` that are not a
    sequence of ints, ValueError for an empty or repeated seed list
    (:func:`~sharp.protocol.check_seeds`), and what
    :func:`~sharp.model.inputs.input_table` raises (ValueError, FileNotFoundError) for a
    missing or mis-shaped table or one given to a learned-embedding config.

    Example:
        >>> from sharp.config import SharpConfig
        >>> ensemble = SharpEnsemble(SharpConfig(layers=2, hidden=8, embedding=4,
        ...                                      vocab_size=5, window=2), seeds=[0, 1, 2])
        >>> step = ensemble.learn([[0, 1], [2, 3], [4, 0]], [2, 4, 1])
        >>> tuple(step.logits.shape), tuple(step.loss.shape)
        ((3, 5), (3,))
    """

    def __init__(self, config: SharpConfig, seeds: Sequence[int], *,
                 table: Tensor | None = None, graphs: bool | None = None) -> None:
        check_instance(config, SharpConfig, "SharpEnsemble", "sharp.preset('quick')")
        self.config = config
        self.seeds = check_seeds(seeds)
        #: ``device="auto"`` puts an ensemble on an accelerator when there is one.
        self.device = resolve_device(config.device, "batched")
        #: The frozen input table (V, D) all members share, or None for learned embeddings.
        self.table = input_table(config, table, self.device)
        self.graphs = self.device.type == "cuda" if graphs is None else graphs
        #: On the CPU a device value is read without a synchronisation, so the wake step
        #: skips work its masks would discard (layers no member ticks; memory 0's gradient
        #: and Adam step when no gate is open); elsewhere it never branches on them.
        self._host_reads = self.device.type == "cpu"
        # Only each learner's net and generator are kept (a dense learner holds a copy of the
        # table, dropped with it).
        nets: list[nn.Module] = []
        self.generators: list[torch.Generator] = []
        for index in range(len(self.seeds)):
            learner = Sharp(self.member_config(index), self.table)
            nets.append(learner.net)
            self.generators.append(learner.generator)
        c = config
        self.members = m = len(nets)
        self.vocab_size, self.window, self.strides = c.vocab_size, c.window, c.strides
        params, _ = stack_module_state(nets)
        #: Stacked weights (M, ...) by ``Sharp.net`` parameter name.
        self.params: dict[str, Tensor] = params
        names = list(params)
        self._memory_names = [[n for n in names if n.startswith(f"memories.{level}.")]
                              for level in range(c.layers)]
        head_names = [[n for n in names if n.startswith(f"heads.{level}.")]
                      for level in range(c.layers)]
        self.memories = [StackedMemory(level, tokens=level == 0 and self.table is None)
                         for level in range(c.layers)]
        self.heads = [StackedHead(level, c.head_type, c.head_layers, context=level + 1 < c.layers)
                      for level in range(c.layers)]
        self.memory_opt = BatchedAdam([self._group(self._memory_names[0])], [c.lr],
                                      weight_decay=c.weight_decay)
        self.head_opt = BatchedAdam([self._group(group) for group in head_names],
                                    [c.head_lr(level) for level in range(c.layers)],
                                    weight_decay=c.weight_decay)
        self._head_params = self.head_opt.params
        # Per-member runtime on the device, updated in place (a CUDA graph holds these
        # tensors): states, carry, EMA, step counters, flags, the tag ring; ``awake`` here.
        device = self.device
        self.states = [torch.zeros(m, 1, h, device=device) for h in c.hidden]
        self.carry = torch.zeros(m, 1, c.hidden[0], device=device)
        self.recall_ema = torch.zeros(m, dtype=torch.float64, device=device)
        self.t = torch.zeros(m, dtype=torch.int64, device=device)
        self.sleep_pending = torch.zeros(m, dtype=torch.bool, device=device)
        self.store_tag = torch.zeros(m, dtype=torch.bool, device=device)
        self.awake = np.zeros(m, dtype=bool)
        #: Tag ring per member: slots (M, tag_buffer, 1, H_0) of layer-0 states and
        #: contexts; ``tag_count`` (M,) tags held, ``tag_next`` (M,) the slot written next.
        self.tag_states = torch.zeros(m, c.tag_buffer, 1, c.hidden[0], device=device)
        self.tag_contexts = torch.zeros_like(self.tag_states)
        self.tag_count = torch.zeros(m, dtype=torch.int64, device=device)
        self.tag_next = torch.zeros_like(self.tag_count)
        # Static block buffers: windows (BLOCK, M, 1, W), targets and per-step outputs
        # (BLOCK, M), the last logits (M, V), and the row the next step reads (1,).
        self._block_x = torch.zeros(BLOCK, m, 1, c.window, dtype=torch.int64, device=device)
        self._block_y = torch.zeros(BLOCK, m, dtype=torch.int64, device=device)
        self._out_loss = torch.zeros(BLOCK, m, device=device)
        self._out_recall = torch.zeros(BLOCK, m, device=device)
        self._out_learned = torch.zeros(BLOCK, m, dtype=torch.bool, device=device)
        self._out_correct = torch.zeros(BLOCK, m, dtype=torch.bool, device=device)
        self._last_logits = torch.zeros(m, c.vocab_size, device=device)
        self._cursor = torch.zeros(1, dtype=torch.int64, device=device)
        self._wake = StepRunner(self._block_step, device, graphed=self.graphs)
        self._wake_lrs = self._learning_rates()
        self._replays: dict[int, Replay] = {}

    @classmethod
    def from_learners(cls, learners: Sequence[Sharp]) -> SharpEnsemble:
        """An ensemble whose member m continues ``learners[m]`` (any engine) exactly where it
        is. Raises TypeError unless they are :class:`Sharp` learners, ValueError unless they
        share one configuration apart from the seed and have distinct seeds
        (:func:`~sharp.model.learner.ensemble_seeds`) and, with dense inputs, one frozen
        table (learner 0's)."""
        seeds = ensemble_seeds(learners, Sharp, "sharp.Sharp(sharp.preset('quick'))")
        ensemble = cls(learners[0].config, seeds, table=learners[0].table)
        ensemble._load_members([learner.state_dict() for learner in learners])
        return ensemble

    def member_config(self, m: int) -> SharpConfig:
        """The configuration of member ``m``: the ensemble's, with seed ``seeds[m]``, the
        torch engine (whose arithmetic the ensemble follows) and the ensemble's device."""
        return self.config.replace(seed=self.seeds[m], engine="torch", device=str(self.device))

    def _group(self, names: list[str]) -> list[Tensor]:
        return [self.params[name] for name in names]

    def parameter_count(self) -> int:
        """Number of parameters of one member."""
        return sum(p[0].numel() for p in self.params.values())

    # -- state ----------------------------------------------------------------------
    def reset_state(self, members: Sequence[int] | None = None) -> None:
        """Forget the stream position of ``members`` (all when None), as
        :meth:`Sharp.reset_state`: layer states, step counter, carry, EMA and tags; weights,
        moments and a pending sleep are kept. Raises IndexError for a member out of range
        (:func:`~sharp.protocol.check_member`)."""
        index = np.arange(self.members) if members is None else np.asarray(
            [check_member(m, self.members) for m in members], dtype=int)
        rows = torch.as_tensor(index, device=self.device)
        with torch.no_grad():
            for state in (*self.states, self.carry, self.recall_ema, self.t, self.store_tag,
                          self.tag_count, self.tag_next):
                state[rows] = 0
        self.awake[index] = False

    def _wake_up(self, index: np.ndarray) -> None:
        """SPEC §3 step 0 for the members ``index``: layer states and t reset; carry, EMA
        and optimisers kept."""
        rows = torch.as_tensor(index, device=self.device)
        for state in (*self.states, self.t):
            state[rows] = 0
        self.awake[index] = True

    def member_tags(self, m: int) -> list[Tag]:
        """Member ``m``'s tags, oldest first (copies; what a separate learner's tag deque
        holds). Reads the ring's counters back."""
        count, start = int(self.tag_count[m]), int(self.tag_next[m] - self.tag_count[m])
        slots = [(start + i) % self.config.tag_buffer for i in range(count)]
        return [Tag(self.tag_states[m, s].clone(), self.tag_contexts[m, s].clone())
                for s in slots]

    def _set_tags(self, m: int, tags: Sequence[tuple[Tensor, Tensor]]) -> None:
        """Make ``tags`` ((state, context) pairs, oldest first, at most ``tag_buffer``)
        member ``m``'s tag ring."""
        for slot, (state, context) in enumerate(tags):
            self.tag_states[m, slot].copy_(state)
            self.tag_contexts[m, slot].copy_(context)
        self.tag_count[m] = len(tags)
        self.tag_next[m] = len(tags) % self.config.tag_buffer

    # -- wake -----------------------------------------------------------------------
    def learn(self, windows: Tensor | np.ndarray | Sequence[Sequence[int]],
              targets: Tensor | np.ndarray | Sequence[int]) -> EnsembleStep:
        """One wake step of every member (SPEC §3): member m reads window ``windows[m]``
        (W token ids; ``windows`` is (M, W)) and then learns next token ``targets[m]``
        (``targets`` is (M,)); a block of one (:meth:`learn_block`). Raises ValueError for
        wrong shapes or ids outside the vocabulary (nothing changes then);
        :class:`~sharp.protocol.Diverged` naming the member (its ``member``) when a
        member's prediction or recall loss is not finite, as a separate learner does."""
        x, y = self._windows(windows), self._targets(targets)
        try:
            block = self._learn(x.unsqueeze(0), y.unsqueeze(0))
        except Diverged as error:
            raise error.at_step(None) from None
        return EnsembleStep(block.logits, block.loss[0], block.recall[0], block.learned[0], y)

    def learn_block(self, windows: Tensor | np.ndarray, targets: Tensor | np.ndarray
                    ) -> EnsembleBlock:
        """B wake steps of every member: step b reads ``windows[b]`` (M, W) and learns
        ``targets[b]`` (M,), as B calls of :meth:`learn` do, the losses read back once per
        :data:`BLOCK` steps. ``windows`` is (B, M, W) and ``targets`` (B, M) token ids.
        Raises ValueError for no steps, other shapes, non-integer ids or ids outside the
        vocabulary (nothing changes then); :class:`~sharp.protocol.Diverged` with
        ``step`` the first step (1-based within this call) whose loss is not finite and
        ``member`` the first member whose loss is not finite at that step — every member
        has taken the steps after it in its block of :data:`BLOCK` too."""
        return self._learn(*self._block(windows, targets))

    @small_kernels()
    def _learn(self, x: Tensor, y: Tensor) -> EnsembleBlock:
        """:meth:`learn_block` on checked ids on the device, ``x`` (B, M, 1, W), ``y``
        (B, M)."""
        # 0. Waking up resets the layer states and the step counter, member by member.
        if not self.awake.all():
            self._wake_up(np.flatnonzero(~self.awake))
        lrs = self._learning_rates()
        if lrs != self._wake_lrs:  # a captured graph holds the learning rates it saw
            self._wake.invalidate()
            self._wake_lrs = lrs
        parts = []
        for lo in range(0, len(x), BLOCK):
            n = min(BLOCK, len(x) - lo)
            self._block_x[:n].copy_(x[lo : lo + n])
            self._block_y[:n].copy_(y[lo : lo + n])
            self._cursor.zero_()
            self._wake.run(n)
            # The one read-back of the block (copies: the buffers are reused).
            loss, recall, learned, correct = (out[:n].to("cpu", copy=True) for out in (
                self._out_loss, self._out_recall, self._out_learned, self._out_correct))
            self._check_block(loss, recall, lo)
            parts.append((loss, recall, learned, correct))
        columns = [torch.cat(column) for column in zip(*parts, strict=True)]
        return EnsembleBlock(*columns, self._last_logits.clone())

    def _learning_rates(self) -> tuple[float, ...]:
        """Every learning rate the wake step uses (memory 0's, then each head's)."""
        return (*self.memory_opt.lrs, *self.head_opt.lrs)

    def _check_block(self, loss: Tensor, recall: Tensor, offset: int) -> None:
        """:func:`~sharp.protocol.check_finite` on the first step of ``loss``, ``recall``
        (n, M) that has a non-finite or absurd value, member by member; its Diverged names
        the first such member and is placed at step ``offset`` + its row + 1."""
        bad = (~(torch.stack([loss, recall]) <= DIVERGED_LOSS)).any(0).any(1)
        if not bad.any():
            return
        b = int(bad.nonzero()[0])
        try:
            for m, (p, r) in enumerate(zip(loss[b].tolist(), recall[b].tolist(), strict=True)):
                check_finite(self, member=m, prediction=p, recall=r)
        except Diverged as error:
            raise error.at_step(offset + b + 1) from None

    def _block_step(self) -> None:
        """One wake step of every member on row ``_cursor`` of the block buffers, its
        outputs written to that row of the output buffers; the cursor moves on. Reads
        nothing back (but on the CPU: ``_host_reads``): this is the step a CUDA graph
        captures."""
        row = self._cursor
        x = self._block_x.index_select(0, row).squeeze(0)
        y = self._block_y.index_select(0, row).squeeze(0)
        logits, p, r, learned = self._wake_step(x, y)
        for out, value in ((self._out_loss, p), (self._out_recall, r),
                           (self._out_learned, learned),
                           (self._out_correct, logits.argmax(-1) == y)):
            out.index_copy_(0, row, value.unsqueeze(0))
        self._last_logits.copy_(logits)
        self._cursor.add_(1)

    def _wake_step(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """SPEC §3 steps 1–6 for every member on windows ``x`` (M, 1, W) and targets ``y``
        (M,), in place and on the device. Returns logits (M, V), p (M,), r (M,) and the
        gate mask (M,) bool, detached."""
        c = self.config
        # 1.
        self.t.add_(1)
        # 2. Encode x with memory 0 from each member's carried window state; recall loss r
        # (cross-entropy over the tokens, or squared error over their dense vectors).
        memory0 = self.memories[0]
        inputs = token_inputs(x, self.table)
        recall, _, after_first = memory0.encode(self.params, inputs, self.carry)
        r = memory0.recall_loss(inputs, recall)
        # 3. The recall-EMA gate per member (a device mask): only open members' memory 0
        # learns; the others keep weights, moments and step count (BatchedAdam's mask).
        gate = RecallGate(c.ema, c.tau, self.recall_ema)
        learned = gate.update(r.detach().double())
        if not self._host_reads or bool(learned.any()):  # a step of no member changes nothing
            self.memory_opt.step(torch.autograd.grad(r.sum(), self.memory_opt.params), learned)
        with torch.no_grad():
            self.recall_ema.copy_(gate.value)
            self.carry.copy_(after_first)
        # 4. Bottom-up, no grad: layer l of member m advances when its t is a multiple of a**l.
        self._advance(inputs[:, :, -1])
        # 5. Top-down through the heads; members whose memory 0 learned store a tag.
        context = self._context()
        logits = self.heads[0](self.params, self.states[0], context).squeeze(1)
        with torch.no_grad():
            self.sleep_pending.logical_or_(learned)
            self.store_tag.logical_or_(learned)
            if context is not None:
                self._store_tags(context)
                self.store_tag.zero_()
        # 6. Prediction loss per member, credit-assigned to that member's heads only.
        p = nn.functional.cross_entropy(logits, y, reduction="none")
        self.head_opt.step(torch.autograd.grad(p.sum(), self._head_params))
        return logits.detach(), p.detach(), r.detach(), learned

    @torch.no_grad()
    def _advance(self, token: Tensor) -> None:
        """Advance layer l of every member whose t is a multiple of a**l; layer 0 steps on
        ``token``, what memory 0 reads for the window's last id
        (:func:`~sharp.model.inputs.token_inputs`: (M, 1) ids or (M, 1, D) vectors).
        The mask picks which members' states change (no branch on the device's values),
        except on the CPU, where reading the mask costs no synchronisation: there the
        layers from the first that no member ticks up are skipped (a**l divides a**(l+1),
        so none of them ticks either), as a separate learner skips them."""
        for level, stride in enumerate(self.strides):
            ticking = (self.t % stride == 0).view(-1, 1, 1)
            if self._host_reads and not bool(ticking.any()):
                break
            source = token if level == 0 else self.states[level - 1]
            state = self.memories[level].step(self.params, source, self.states[level])
            self.states[level].copy_(torch.where(ticking, state, self.states[level]))

    @torch.no_grad()
    def _store_tags(self, context: Tensor) -> None:
        """Write (layer-0 state, ``context`` (M, 1, H_0)) into the tag ring of every member
        with ``store_tag``; a full ring drops its oldest tag (a deque of ``tag_buffer``)."""
        size = self.config.tag_buffer
        store = self.store_tag.view(-1, 1, 1)
        slots = torch.arange(self.members, device=self.device) * size + self.tag_next
        for ring, value in ((self.tag_states, self.states[0]), (self.tag_contexts, context)):
            flat = ring.view(-1, *ring.shape[2:])
            flat.index_copy_(0, slots, torch.where(store, value, flat.index_select(0, slots)))
        stored = self.store_tag.long()
        self.tag_next.copy_((self.tag_next + stored) % size)
        self.tag_count.copy_((self.tag_count + stored).clamp(max=size))

    def _context(self) -> Tensor | None:
        """Heads L-1..1 top-down; head 0's context (M, 1, H_0), None if L == 1."""
        context = None
        for level in range(self.config.layers - 1, 0, -1):
            context = self.heads[level](self.params, self.states[level], context)
        return context

    def _windows(self, windows: Tensor | np.ndarray | Sequence[TokenIds]) -> Tensor:
        """(M, 1, W) ids on the device, checked by :func:`~sharp.protocol.check_windows`."""
        ids = check_windows(windows, self.members, self.window, self.vocab_size)
        return torch.as_tensor(ids, device=self.device).unsqueeze(1)

    def _targets(self, targets: Tensor | np.ndarray | Sequence[int]) -> Tensor:
        """(M,) ids on the device, checked by :func:`~sharp.protocol.check_targets`."""
        ids = check_targets(targets, self.members, self.vocab_size)
        return torch.tensor(ids, dtype=torch.long, device=self.device)

    def _block(self, windows: Tensor | np.ndarray, targets: Tensor | np.ndarray
               ) -> tuple[Tensor, Tensor]:
        """``windows`` (B, M, W) and ``targets`` (B, M) as (B, M, 1, W) and (B, M) int64 on
        the device. Raises ValueError for no steps, other shapes, non-integer dtypes or ids
        outside 0..V-1."""
        x, y = torch.as_tensor(windows), torch.as_tensor(targets)
        if x.dim() == 0 or len(x) == 0:
            raise ValueError("a block needs at least one step of windows (B, M, W), B >= 1")
        for name, ids, shape in (("windows", x, (len(x), self.members, self.window)),
                                 ("targets", y, (len(x), self.members))):
            if tuple(ids.shape) != shape:
                raise ValueError(f"{name} have shape {tuple(ids.shape)}, expected {shape} "
                                 "(steps, members, ...)")
            if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
                raise ValueError(f"{name} must be integer token ids, got {ids.dtype}")
            if ids.numel() and not 0 <= int(ids.min()) <= int(ids.max()) < self.vocab_size:
                raise ValueError(f"{name} hold ids outside 0..{self.vocab_size - 1}")
        return (x.to(self.device, torch.int64).unsqueeze(2),
                y.to(self.device, torch.int64))

    # -- sleep ----------------------------------------------------------------------
    @small_kernels()
    def sleep(self) -> list[SleepReport]:
        """The sleep phase (SPEC §4) of every member with a sleep pending, batched over
        members; one report per member (``slept`` False where nothing was pending, and
        such a member is left exactly as it was). Every call ends every member's wake
        period, as :meth:`Sharp.sleep` does. Raises :class:`~sharp.protocol.Diverged`
        naming the first member (its ``member``) whose last replay loss is not finite,
        after every member has slept and before the pending flags and tags are cleared."""
        self.awake[:] = False
        pending = self.sleep_pending.tolist()
        reports = [SleepReport(slept=flag) for flag in pending]
        tags = [self.member_tags(m) if pending[m] else [] for m in range(self.members)]
        for report, member_tags in zip(reports, tags, strict=True):
            report.tags = len(member_tags)
        if any(tags):
            for target in range(1, self.config.layers):
                for report, layer in zip(reports, self._sleep_layer(target, tags), strict=True):
                    if layer is not None:
                        report.layers.append(layer)
        for m, report in enumerate(reports):
            check_finite(self, member=m, **{f"memory-{layer.layer} replay": layer.last_loss
                                            for layer in report.layers})
        rows = self.sleep_pending.nonzero().view(-1)
        self.tag_count[rows] = 0
        self.tag_next[rows] = 0
        self.sleep_pending.zero_()
        return reports

    def _sleep_layer(self, target: int, tags: list[list[Tag]]) -> list[SleepLayerReport | None]:
        """Train memory ``target`` of every member with tags on downsampled dreams of its
        tags, in its order (SPEC §4 steps 1–2); a report per member (None without tags)."""
        start = time.perf_counter()
        counts = [len(member_tags) for member_tags in tags]
        check_weights(self, self.params.values(),  # what the dreams run through (Diverged)
                      torch.tensor(counts, device=self.device) > 0)
        dreams = self._dream(tags, target)  # (M, tags, ticks, H_{k-1})
        replay = self._replays.get(target)
        if replay is None:
            replay = self._replays[target] = Replay(self, target, dreams.shape[2])
        # 1. A fresh Adam on memory k only; a window buffer of W zero vectors per member.
        replay.begin(dreams, counts)
        # 2. Sequential replay training: replay window j of every member together; member
        # m is active while j covers its tags; its target carry restarts at each tag.
        windows = max(counts) * replay.ticks
        replay.runner.run(windows)
        values, opened = (out[:windows].to("cpu", copy=True)
                          for out in (replay.losses, replay.gates))
        seconds = time.perf_counter() - start
        reports: list[SleepLayerReport | None] = []
        for m, count in enumerate(counts):
            n = count * replay.ticks
            reports.append(SleepLayerReport(
                target, n, int(opened[:n, m].sum()), float(values[0, m]),
                float(values[n - 1, m]), seconds) if count else None)
        return reports

    @torch.no_grad()
    def _dream(self, tags: list[list[Tag]], target: int) -> Tensor:
        """Dream every member's tags as one batch (padded to the longest tag list) and return
        what layer ``target`` sees: the layer-(target-1) state at every replay step s with
        s mod a**target == 0, shape (M, tags, ticks, H_{target-1}); padded rows are zero.
        Member m's uniform draws are taken from its own generator in one call, as
        :meth:`Sharp.dream_steps` takes them, and every step samples all members at once
        (memory 0 stepping on the sampled ids' table rows with dense inputs)."""
        c = self.config
        counts = [len(member_tags) for member_tags in tags]
        rows = max(counts)
        start = torch.zeros(self.members, rows, c.hidden[0], device=self.device)
        context = torch.zeros_like(start)
        uniforms = torch.zeros(self.members, c.replay_steps, rows, device=self.device)
        for m, member_tags in enumerate(tags):
            if member_tags:
                start[m, : counts[m]] = torch.cat([tag.state for tag in member_tags])
                context[m, : counts[m]] = torch.cat([tag.context for tag in member_tags])
                uniforms[m, :, : counts[m]] = torch.rand(
                    c.replay_steps, counts[m], generator=self.generators[m], device=self.device)
        head = self.heads[0]
        condition = head.condition(self.params, context)  # constant while dreaming
        states = [start] + [start.new_zeros(self.members, rows, c.hidden[level])
                            for level in range(1, target)]
        seen = []
        for s in range(c.replay_steps):
            logits = head.conditioned(self.params, states[0], condition)
            token = sample_tokens(logits, uniforms[:, s], c.temperature, c.top_k)
            states[0] = self.memories[0].step(self.params, token_inputs(token, self.table),
                                              states[0])
            for level in range(1, target):
                if s % self.strides[level]:
                    break
                states[level] = self.memories[level].step(self.params, states[level - 1],
                                                          states[level])
            if s % self.strides[target] == 0:
                seen.append(states[target - 1])
        padding = torch.tensor([[m < count for m in range(rows)] for count in counts],
                               device=self.device).view(self.members, rows, 1, 1)
        return torch.stack(seen, dim=2) * padding

    # -- evaluation -----------------------------------------------------------------
    def evaluate(self, tokens: Tensor | np.ndarray | Sequence[np.ndarray]) -> list[EvalResult]:
        """Bits and top-1 correctness of every member on its own slice, from a reset state
        and without learning (SPEC §5): ``tokens`` is (M, T) token ids, or M one-dimensional
        token arrays (members with slices of equal length are evaluated together). Member
        m's result is its separate learner's :meth:`Sharp.evaluate`; the ensemble is left
        untouched. Raises ValueError unless there is one slice of more than W valid token
        ids per member."""
        check_slices(tokens, self.members)
        slices = [token_tensor(s, self.window, self.vocab_size, self.device) for s in tokens]
        results: list[EvalResult | None] = [None] * self.members
        for length in sorted({ids.numel() for ids in slices}):
            start = time.perf_counter()
            members = [m for m, ids in enumerate(slices) if ids.numel() == length]
            ids = torch.stack([slices[m] for m in members])
            logits = self.predict_streams(ids, members)
            targets = ids[:, self.window :]
            with torch.inference_mode():
                nats = nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(),
                                                   reduction="none").view(targets.shape)
                correct = logits.argmax(-1) == targets
            seconds = (time.perf_counter() - start) / len(members)
            for row, m in enumerate(members):
                results[m] = EvalResult((nats[row] / LN2).cpu().numpy(),
                                        correct[row].cpu().numpy(), seconds)
        return [result for result in results if result is not None]

    @torch.inference_mode()
    def predict_streams(self, ids: Tensor, members: Sequence[int], chunk: int = 4096
                        ) -> Tensor:
        """Logits (len(members), T - W, V) for every token after the first W of each row of
        ``ids`` (len(members), T), member ``members[i]`` reading row i, from a reset state
        with the wake step's strides and no learning (:meth:`Sharp.predict_stream` per
        member). Each layer's trajectory is one recurrent call per member (torch's RNN
        kernel, as a separate learner runs it); the heads run batched over members."""
        c = self.config
        rows = torch.as_tensor(list(members), device=self.device)
        params = {name: p.detach()[rows] for name, p in self.params.items()}
        steps = ids.shape[1] - c.window
        trajectories: list[Tensor] = []
        for level in range(c.layers):
            if level == 0:
                inputs = token_inputs(ids[:, c.window - 1 : -1], self.table)
            else:
                every = self.strides[level] // self.strides[level - 1]
                inputs = trajectories[-1][:, every - 1 :: every]
            trajectories.append(torch.stack([
                self._trajectory(params, level, i, inputs[i]) for i in range(len(members))
            ]))
        # the state before a layer's first tick is zero: row 0, ahead of its trajectory
        padded = [torch.cat([outputs.new_zeros(len(members), 1, c.hidden[level]), outputs], dim=1)
                  for level, outputs in enumerate(trajectories)]
        t = torch.arange(1, steps + 1, device=self.device)
        logits = []
        for lo in range(0, steps, chunk):
            tt = t[lo : lo + chunk]
            states = [padded[level][:, tt // self.strides[level]] for level in range(c.layers)]
            context = None
            for level in range(c.layers - 1, 0, -1):
                context = self.heads[level](params, states[level], context)
            logits.append(self.heads[0](params, states[0], context))
        return torch.cat(logits, dim=1)

    def _trajectory(self, params: dict[str, Tensor], level: int, row: int, inputs: Tensor
                    ) -> Tensor:
        """States (n, H) of memory ``level`` of the member in ``row`` of ``params`` after each
        of ``inputs`` (n,) ids or (n, inputs) vectors, from zero, as
        :meth:`Memory.trajectory` computes them."""
        prefix = f"memories.{level}."

        def get(name: str) -> Tensor:
            return params[prefix + name][row]

        if level == 0 and self.table is None:
            projected = nn.functional.embedding(inputs, get("project.weight"))
        else:
            projected = nn.functional.linear(inputs, get("project.weight"), get("project.bias"))
        weights = [get(f"encoder.{name}_l0") for name in
                   ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        start = projected.new_zeros(self.config.hidden[level])
        return tanh_trajectory(projected, start, weights)

    # -- members and checkpoints ----------------------------------------------------
    @property
    def captured(self) -> dict[str, bool]:
        """Which device-side steps replay a captured CUDA graph now: ``"wake"``, and
        ``"replay k"`` for each target layer k whose replay step has run (False: eager, as
        on the CPU, before the capture or after a step that could not be captured)."""
        return {"wake": self._wake.captured,
                **{f"replay {k}": replay.runner.captured
                   for k, replay in sorted(self._replays.items())}}

    def member(self, m: int) -> Sharp:
        """Member ``m`` as an ordinary torch-engine learner (a copy: its ``state_dict`` is
        member m's, and it continues alone exactly as the member would). Raises IndexError
        unless ``m`` is in 0..M-1 (:func:`~sharp.protocol.check_member`)."""
        m = check_member(m, self.members)
        learner = Sharp(self.member_config(m), self.table)
        learner.load_state_dict(self._member_state(m, self._table_entry()))
        return learner

    def _table_entry(self) -> dict[str, Any]:
        """The checkpoint entry of the frozen table, ``{"inputs": ...}`` as
        :meth:`Sharp.state_dict` holds it (:func:`~sharp.model.inputs.table_state`), or {}
        with learned embeddings."""
        return {} if self.table is None else {"inputs": table_state(self.table, self.config)}

    def _member_state(self, m: int, table: dict[str, Any]) -> dict[str, Any]:
        """Member ``m``'s state in :meth:`Sharp.state_dict`'s format (copies), with the
        table entry ``table`` (:meth:`_table_entry`)."""
        runtime = {
            "states": [state[m].clone() for state in self.states], "t": int(self.t[m]),
            "carry": self.carry[m].clone(), "recall_ema": float(self.recall_ema[m]),
            "sleep_pending": bool(self.sleep_pending[m]), "store_tag": bool(self.store_tag[m]),
            "awake": bool(self.awake[m]),
            "tags": [(tag.state, tag.context) for tag in self.member_tags(m)],
        }
        return {
            "kind": "sharp", "config": self.member_config(m).to_dict(),
            "weights": {name: p[m].detach().clone() for name, p in self.params.items()},
            "memory_opt": self.memory_opt.member_state(m),
            "head_opt": self.head_opt.member_state(m),
            "runtime": runtime, "rng": self.generators[m].get_state(), **table,
        }

    def _load_members(self, states: Sequence[dict[str, Any]]) -> None:
        """Load one :meth:`Sharp.state_dict` per member. Raises ValueError for a wrong count
        or a state of another configuration, seed or frozen input table."""
        if len(states) != self.members:
            raise ValueError(f"{len(states)} learner states for {self.members} members")
        for m, state in enumerate(states):
            check_compatible(state, "sharp", self.member_config(m))
        if self.table is not None:  # each table named once (a digest of the table per check)
            for saved in {state["inputs"]["sha256"]: state["inputs"] for state in states}.values():
                check_table_state(saved, self.table)
        with torch.no_grad():
            for m, state in enumerate(states):
                for name, p in self.params.items():
                    p[m].copy_(state["weights"][name])
                self.memory_opt.load_member_state(m, state["memory_opt"])
                self.head_opt.load_member_state(m, state["head_opt"])
                runtime = state["runtime"]
                for mine, saved in zip(self.states, runtime["states"], strict=True):
                    mine[m].copy_(saved)
                self.carry[m].copy_(runtime["carry"])
                self.recall_ema[m] = runtime["recall_ema"]
                self.t[m] = runtime["t"]
                self.sleep_pending[m] = runtime["sleep_pending"]
                self.store_tag[m] = runtime["store_tag"]
                self.awake[m] = runtime["awake"]
                self._set_tags(m, runtime["tags"])
                load_generator_state(self.generators[m], state["rng"])

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume every member's stream bit-exactly: the seeds and one
        :meth:`Sharp.state_dict` per member (copies). With dense inputs, also the frozen
        table's ``inputs`` entry, once: the members' entries are that one object, so a saved
        checkpoint holds the table (when it holds one) once."""
        table = self._table_entry()
        return {"kind": KIND, "config": self.config.to_dict(), "seeds": list(self.seeds),
                "members": [self._member_state(m, table) for m in range(self.members)],
                **table}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`. Raises ValueError for another kind, configuration,
        seed list or frozen input table."""
        check_compatible(state, KIND, self.config)
        if list(state["seeds"]) != self.seeds:
            raise ValueError(f"checkpoint has seeds {state['seeds']}, this ensemble {self.seeds}")
        self._load_members(state["members"])



class Replay:
    """The sleep-replay window step (SPEC §4 step 2) of memory ``target`` of every member of
    ``ensemble``, on static buffers so that it runs without host synchronisation (and as a
    CUDA graph on CUDA): dreams (M, tag_buffer × ``ticks``, H_{k-1}), the window
    (M, 1, W, H_{k-1}), the target carry (M, 1, H_k), the gate's EMA (M,) float64, each
    member's tag count (M,), the step's losses (tag_buffer × ticks, M) and gate decisions,
    and the replay's own Adam, made fresh (zeroed in place) by :meth:`begin`."""

    def __init__(self, ensemble: SharpEnsemble, target: int, ticks: int) -> None:
        c, m, device = ensemble.config, ensemble.members, ensemble.device
        self.ensemble, self.ticks = ensemble, ticks
        self.memory = ensemble.memories[target]
        self.params = ensemble._group(ensemble._memory_names[target])
        self.optimiser = BatchedAdam([self.params], [c.lr], weight_decay=c.weight_decay)
        inputs, steps = c.hidden[target - 1], c.tag_buffer * ticks
        self.dreams = torch.zeros(m, steps, inputs, device=device)
        self.window = torch.zeros(m, 1, c.window, inputs, device=device)
        self.carry = torch.zeros(m, 1, c.hidden[target], device=device)
        self.ema = torch.zeros(m, dtype=torch.float64, device=device)
        self.counts = torch.zeros(m, dtype=torch.int64, device=device)
        self.losses = torch.zeros(steps, m, device=device)
        self.gates = torch.zeros(steps, m, dtype=torch.bool, device=device)
        self.cursor = torch.zeros(1, dtype=torch.int64, device=device)
        self.runner = StepRunner(self.step, device, graphed=ensemble.graphs)

    @torch.no_grad()
    def begin(self, dreams: Tensor, counts: Sequence[int]) -> None:
        """Start a replay of ``dreams`` (M, tags, ticks, H_{k-1}), member m's first
        ``counts[m]`` tags: a fresh Adam (moments and step counts zero), a zero window and
        EMA, the cursor at window 0."""
        optimiser = self.optimiser
        for tensor in (self.window, self.ema, self.cursor, optimiser.counts,
                       *optimiser.exp_avg, *optimiser.exp_avg_sq):
            tensor.zero_()
        flat = dreams.flatten(1, 2)
        self.dreams[:, : flat.shape[1]].copy_(flat)
        self.counts.copy_(torch.as_tensor(counts))

    def step(self) -> None:
        """Replay window ``cursor`` (= tag × ticks + s) of every member: slide dream s of
        that tag into the window (the carry restarts at s = 0), encode, and learn where the
        gate is open over the members that still have that tag."""
        c = self.ensemble.config
        j = self.cursor
        with torch.no_grad():
            active = self.counts > j // self.ticks
            self.carry.masked_fill_((j % self.ticks == 0).view(1, 1, 1), 0.0)
            vector = self.dreams.index_select(1, j).unsqueeze(1)
            self.window.copy_(torch.cat([self.window[:, :, 1:], vector], dim=2))
        recall, _, after_first = self.memory.encode(self.ensemble.params, self.window,
                                                    self.carry)
        loss = self.memory.recall_loss(self.window, recall)
        gate = RecallGate(c.ema, c.tau, self.ema)
        learns = gate.update(loss.detach().double(), active)
        self.optimiser.step(torch.autograd.grad(loss.sum(), self.params), learns)
        with torch.no_grad():
            self.ema.copy_(gate.value)
            self.carry.copy_(after_first)
            self.losses.index_copy_(0, j, loss.detach().unsqueeze(0))
            self.gates.index_copy_(0, j, learns.unsqueeze(0))
            self.cursor.add_(1)
