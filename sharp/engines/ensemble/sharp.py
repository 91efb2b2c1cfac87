"""A SHARP ensemble (SPEC §10): M independent SHARP learners of one configuration in one
process, each on its own stream and seed, their weights stacked along a leading member axis
so that one batched step advances all M.

Member m computes what ``Sharp(config.replace(seed=seeds[m], engine="torch"))`` computes on
its stream, up to the summation order of batched matrix products: the wake step of SPEC §3
with its own recall-EMA gate as a mask, its own step counter, waking-up rule, tag buffer and
sleep-pending flag; the sleep of SPEC §4 for every pending member at once, dreams batched
over members × tags (each member drawing from its own generator exactly as a separate learner
does) and the sequential replay training batched over members, each member's tags in its own
order. Read it next to :mod:`sharp.model.learner`, whose structure it follows.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import stack_module_state

from sharp.config import SharpConfig, check_instance
from sharp.engines.ensemble.adam import BatchedAdam
from sharp.engines.ensemble.stacked import StackedHead, StackedMemory
from sharp.engines.runtime import load_generator_state, resolve_device, small_kernels
from sharp.model.gate import RecallGate
from sharp.model.inputs import check_learned_inputs
from sharp.model.learner import (
    Sharp,
    SleepLayerReport,
    SleepReport,
    Tag,
    check_compatible,
    ensemble_seeds,
)
from sharp.model.memory import tanh_trajectory
from sharp.protocol import (
    ENSEMBLE_SUFFIX,
    LN2,
    EvalResult,
    StepResult,
    TokenIds,
    check_finite,
    check_member,
    check_seeds,
    check_slices,
    check_targets,
    check_windows,
    token_tensor,
)

KIND = f"sharp{ENSEMBLE_SUFFIX}"


@dataclass(frozen=True)
class EnsembleStep:
    """What one ensemble wake step reports, member by member (tensors, so that nothing
    forces a read-back): ``logits`` (M, V), the prediction made before learning;
    ``loss`` (M,) its cross-entropy p in nats; ``recall`` (M,) memory 0's recall loss r in
    nats; ``learned`` (M,) bool, whether memory 0 learned; ``targets`` (M,) int64."""

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


class SharpEnsemble:
    """M SHARP learners of ``config``, member m seeded with ``seeds[m]``.

    Member m starts with the weights, optimiser state and generator of
    ``Sharp(config.replace(seed=seeds[m], engine="torch"))``; :meth:`member` takes it out as
    such a learner. Raises TypeError for a ``config`` that is not a
    :class:`~sharp.config.SharpConfig` and for ``seeds`` that are not a sequence of ints,
    ValueError for an empty or repeated seed list (:func:`~sharp.protocol.check_seeds`).

    Example:
        >>> from sharp.config import SharpConfig
        >>> ensemble = SharpEnsemble(SharpConfig(layers=2, hidden=8, embedding=4,
        ...                                      vocab_size=5, window=2), seeds=[0, 1, 2])
        >>> step = ensemble.learn([[0, 1], [2, 3], [4, 0]], [2, 4, 1])
        >>> tuple(step.logits.shape), tuple(step.loss.shape)
        ((3, 5), (3,))
    """

    def __init__(self, config: SharpConfig, seeds: Sequence[int]) -> None:
        check_instance(config, SharpConfig, "SharpEnsemble", "sharp.preset('quick')")
        check_learned_inputs(config, "SharpEnsemble")
        self.config = config
        self.seeds = check_seeds(seeds)
        #: ``device="auto"`` puts an ensemble on an accelerator when there is one.
        self.device = resolve_device(config.device, "batched")
        learners = [Sharp(self.member_config(m)) for m in range(len(self.seeds))]
        c = config
        self.members = len(learners)
        self.vocab_size, self.window, self.strides = c.vocab_size, c.window, c.strides
        params, _ = stack_module_state([learner.net for learner in learners])
        #: Stacked weights (M, ...) by ``Sharp.net`` parameter name.
        self.params: dict[str, Tensor] = params
        names = list(params)
        self._memory_names = [[n for n in names if n.startswith(f"memories.{level}.")]
                              for level in range(c.layers)]
        head_names = [[n for n in names if n.startswith(f"heads.{level}.")]
                      for level in range(c.layers)]
        self.memories = [StackedMemory(level, tokens=level == 0) for level in range(c.layers)]
        self.heads = [StackedHead(level, c.head_type, c.head_layers, context=level + 1 < c.layers)
                      for level in range(c.layers)]
        self.memory_opt = BatchedAdam([self._group(self._memory_names[0])], [c.lr],
                                      weight_decay=c.weight_decay)
        self.head_opt = BatchedAdam([self._group(group) for group in head_names],
                                    [c.head_lr(level) for level in range(c.layers)],
                                    weight_decay=c.weight_decay)
        self._head_params = self.head_opt.params
        self.generators = [learner.generator for learner in learners]
        # Per-member runtime: states, carry and EMA on the device; counters and flags here.
        self.states = [torch.zeros(self.members, 1, h, device=self.device) for h in c.hidden]
        self.carry = torch.zeros(self.members, 1, c.hidden[0], device=self.device)
        self.recall_ema = torch.zeros(self.members, dtype=torch.float64, device=self.device)
        self.t = np.zeros(self.members, dtype=np.int64)
        self.awake = np.zeros(self.members, dtype=bool)
        self.sleep_pending = np.zeros(self.members, dtype=bool)
        self.store_tag = np.zeros(self.members, dtype=bool)
        self.tags: list[deque[Tag]] = [deque(maxlen=c.tag_buffer) for _ in learners]

    @classmethod
    def from_learners(cls, learners: Sequence[Sharp]) -> SharpEnsemble:
        """An ensemble whose member m continues ``learners[m]`` (any engine) exactly where it
        is. Raises TypeError unless they are :class:`Sharp` learners, ValueError unless they
        share one configuration apart from the seed and have distinct seeds
        (:func:`~sharp.model.learner.ensemble_seeds`)."""
        seeds = ensemble_seeds(learners, Sharp, "sharp.Sharp(sharp.preset('quick'))")
        ensemble = cls(learners[0].config, seeds)
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
            for state in (*self.states, self.carry):
                state[rows] = 0.0
            self.recall_ema[rows] = 0.0
        self.t[index] = 0
        self.store_tag[index] = False
        self.awake[index] = False
        for m in index:
            self.tags[m].clear()

    def _wake_up(self, index: np.ndarray) -> None:
        """SPEC §3 step 0 for the members ``index``: layer states and t reset; carry, EMA
        and optimisers kept."""
        rows = torch.as_tensor(index, device=self.device)
        for state in self.states:
            state[rows] = 0.0
        self.t[index] = 0
        self.awake[index] = True

    # -- wake -----------------------------------------------------------------------
    @small_kernels()
    def learn(self, windows: Tensor | np.ndarray | Sequence[Sequence[int]],
              targets: Tensor | np.ndarray | Sequence[int]) -> EnsembleStep:
        """One wake step of every member (SPEC §3): member m reads window ``windows[m]``
        (W token ids; ``windows`` is (M, W)) and then learns next token ``targets[m]``
        (``targets`` is (M,)). Raises ValueError for wrong shapes or ids outside the
        vocabulary (nothing changes then); :class:`~sharp.protocol.Diverged` naming the
        member when a member's prediction or recall loss is not finite, as a separate
        learner does."""
        x, y = self._windows(windows), self._targets(targets)
        c = self.config
        # 0. Waking up resets the layer states and the step counter, member by member.
        if not self.awake.all():
            self._wake_up(np.flatnonzero(~self.awake))
        # 1.
        self.t += 1
        # 2. Encode x with memory 0 from each member's carried window state; recall loss r.
        memory0 = self.memories[0]
        recall, _, after_first = memory0.encode(self.params, x, self.carry)
        r = memory0.recall_loss(x, recall)
        self.carry = after_first.detach()
        # 3. The recall-EMA gate per member (a mask): only open members' memory 0 learns.
        gate = RecallGate(c.ema, c.tau, self.recall_ema)
        learned = gate.update(r.detach().double())
        self.recall_ema = gate.value
        opened = learned.tolist()
        if any(opened):
            grads = torch.autograd.grad(r.sum(), self.memory_opt.params)
            self.memory_opt.step(grads, opened)
        # 4. Bottom-up, no grad: layer l of member m advances when its t is a multiple of a**l.
        self._advance(x[:, :, -1])
        # 5. Top-down through the heads; members whose memory 0 learned store a tag.
        context = self._context()
        logits = self.heads[0](self.params, self.states[0], context).squeeze(1)
        self.sleep_pending |= opened
        self.store_tag |= opened
        if context is not None:
            for m in np.flatnonzero(self.store_tag):
                self.tags[m].append(Tag(self.states[0][m].clone(), context[m].detach().clone()))
            self.store_tag[:] = False
        # 6. Prediction loss per member, credit-assigned to that member's heads only.
        p = nn.functional.cross_entropy(logits, y, reduction="none")
        self.head_opt.step(torch.autograd.grad(p.sum(), self._head_params))
        check_finite(self, **{f"{name} (member {m})": value
                              for name, losses in (("prediction", p), ("recall", r))
                              for m, value in enumerate(losses.tolist())})
        # 7. Report.
        return EnsembleStep(logits.detach(), p.detach(), r.detach(), learned, y)

    @torch.no_grad()
    def _advance(self, token: Tensor) -> None:
        """Advance layer l of every member whose t is a multiple of a**l; ``token`` (M, 1)."""
        for level, stride in enumerate(self.strides):
            ticking = self.t % stride == 0
            if not ticking.any():
                break
            source = token if level == 0 else self.states[level - 1]
            state = self.memories[level].step(self.params, source, self.states[level])
            if not ticking.all():
                mask = torch.as_tensor(ticking, device=self.device).view(-1, 1, 1)
                state = torch.where(mask, state, self.states[level])
            self.states[level] = state

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

    # -- sleep ----------------------------------------------------------------------
    @small_kernels()
    def sleep(self) -> list[SleepReport]:
        """The sleep phase (SPEC §4) of every member with a sleep pending, batched over
        members; one report per member (``slept`` False where nothing was pending, and
        such a member is left exactly as it was). Every call ends every member's wake
        period, as :meth:`Sharp.sleep` does."""
        self.awake[:] = False
        reports = [SleepReport(slept=bool(pending)) for pending in self.sleep_pending]
        tags = [list(self.tags[m]) if self.sleep_pending[m] else [] for m in range(self.members)]
        for report, member_tags in zip(reports, tags, strict=True):
            report.tags = len(member_tags)
        if any(tags):
            for target in range(1, self.config.layers):
                for report, layer in zip(reports, self._sleep_layer(target, tags), strict=True):
                    if layer is not None:
                        report.layers.append(layer)
        check_finite(self, **{f"memory-{layer.layer} replay (member {m})": layer.last_loss
                              for m, report in enumerate(reports) for layer in report.layers})
        for m in np.flatnonzero(self.sleep_pending):
            self.tags[m].clear()
        self.sleep_pending[:] = False
        return reports

    def _sleep_layer(self, target: int, tags: list[list[Tag]]) -> list[SleepLayerReport | None]:
        """Train memory ``target`` of every member with tags on downsampled dreams of its
        tags, in its order (SPEC §4 steps 1–2); a report per member (None without tags)."""
        c = self.config
        start = time.perf_counter()
        memory, params = self.memories[target], self._group(self._memory_names[target])
        # 1. A fresh Adam on memory k only; a window buffer of W zero vectors per member.
        optimiser = BatchedAdam([params], [c.lr], weight_decay=c.weight_decay)
        counts = [len(member_tags) for member_tags in tags]
        dreams = self._dream(tags, target)  # (M, tags, ticks, H_{k-1})
        ticks = dreams.shape[2]
        window = dreams.new_zeros(self.members, 1, c.window, dreams.shape[-1])
        gate = RecallGate(c.ema, c.tau,
                          torch.zeros(self.members, dtype=torch.float64, device=self.device))
        losses, gates = [], []
        # 2. Sequential replay training: replay window j of every member together; member
        # m is active while j covers its tags; its target carry restarts at each tag.
        for j in range(max(counts) * ticks):
            tag, s = divmod(j, ticks)
            if s == 0:
                carry = dreams.new_zeros(self.members, 1, c.hidden[target])
            active = torch.tensor([count > tag for count in counts], device=self.device)
            window = torch.cat([window[:, :, 1:], dreams[:, tag, s].view(self.members, 1, 1, -1)],
                               dim=2)
            recall, _, after_first = memory.encode(self.params, window, carry)
            carry = after_first.detach()
            loss = memory.recall_loss(window, recall)
            learns = gate.update(loss.detach().double(), active).tolist()
            losses.append(loss.detach())
            gates.append(learns)
            if any(learns):
                optimiser.step(torch.autograd.grad(loss.sum(), params), learns)
        seconds = time.perf_counter() - start
        values, opened = torch.stack(losses).tolist(), np.array(gates)
        reports: list[SleepLayerReport | None] = []
        for m, count in enumerate(counts):
            windows = count * ticks
            reports.append(SleepLayerReport(
                target, windows, int(opened[:windows, m].sum()), float(values[0][m]),
                float(values[windows - 1][m]), seconds) if count else None)
        return reports

    @torch.no_grad()
    def _dream(self, tags: list[list[Tag]], target: int) -> Tensor:
        """Dream every member's tags as one batch (padded to the longest tag list) and return
        what layer ``target`` sees: the layer-(target-1) state at every replay step s with
        s mod a**target == 0, shape (M, tags, ticks, H_{target-1}); padded rows are zero."""
        c = self.config
        counts = [len(member_tags) for member_tags in tags]
        rows = max(counts)
        start = torch.zeros(self.members, rows, c.hidden[0], device=self.device)
        context = torch.zeros_like(start)
        for m, member_tags in enumerate(tags):
            if member_tags:
                start[m, : counts[m]] = torch.cat([tag.state for tag in member_tags])
                context[m, : counts[m]] = torch.cat([tag.context for tag in member_tags])
        head = self.heads[0]
        condition = head.condition(self.params, context)  # constant while dreaming
        states = [start] + [start.new_zeros(self.members, rows, c.hidden[level])
                            for level in range(1, target)]
        seen = []
        for s in range(c.replay_steps):
            token = self._sample(head.conditioned(self.params, states[0], condition), counts)
            states[0] = self.memories[0].step(self.params, token, states[0])
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

    def _sample(self, logits: Tensor, counts: list[int]) -> Tensor:
        """Sample one token for each of member m's first ``counts[m]`` rows of ``logits``
        (M, rows, V) from member m's generator, as :meth:`Sharp.dream_steps` does for a
        separate learner (temperature, optional top-k); padded rows get token 0."""
        logits = logits / self.config.temperature
        if self.config.top_k is not None:
            top, index = logits.topk(self.config.top_k, dim=-1)
            probs = top.softmax(-1)
        else:
            probs = logits.softmax(-1)
        tokens = torch.zeros(logits.shape[:2], dtype=torch.long, device=self.device)
        for m, count in enumerate(counts):
            if count:
                choice = torch.multinomial(probs[m, :count], 1, generator=self.generators[m])
                if self.config.top_k is not None:
                    choice = index[m, :count].gather(-1, choice)
                tokens[m, :count] = choice.squeeze(-1)
        return tokens

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
                inputs = ids[:, c.window - 1 : -1]
            else:
                every = self.strides[level] // self.strides[level - 1]
                inputs = trajectories[-1][:, every - 1 :: every]
            trajectories.append(torch.stack([
                self._trajectory(params, level, i, inputs[i]) for i in range(len(members))
            ]))
        t = torch.arange(1, steps + 1, device=self.device)
        logits = []
        for lo in range(0, steps, chunk):
            tt = t[lo : lo + chunk]
            states = []
            for level, outputs in enumerate(trajectories):
                padded = torch.cat([outputs.new_zeros(len(members), 1, c.hidden[level]), outputs],
                                   dim=1)
                states.append(padded[:, tt // self.strides[level]])
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

        if level == 0:
            projected = nn.functional.embedding(inputs, get("project.weight"))
        else:
            projected = nn.functional.linear(inputs, get("project.weight"), get("project.bias"))
        weights = [get(f"encoder.{name}_l0") for name in
                   ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        start = projected.new_zeros(self.config.hidden[level])
        return tanh_trajectory(projected, start, weights)

    # -- members and checkpoints ----------------------------------------------------
    def member(self, m: int) -> Sharp:
        """Member ``m`` as an ordinary torch-engine learner (a copy: its ``state_dict`` is
        member m's, and it continues alone exactly as the member would). Raises IndexError
        unless ``m`` is in 0..M-1 (:func:`~sharp.protocol.check_member`)."""
        m = check_member(m, self.members)
        learner = Sharp(self.member_config(m))
        learner.load_state_dict(self._member_state(m))
        return learner

    def _member_state(self, m: int) -> dict[str, Any]:
        """Member ``m``'s state in :meth:`Sharp.state_dict`'s format (copies)."""
        runtime = {
            "states": [state[m].clone() for state in self.states], "t": int(self.t[m]),
            "carry": self.carry[m].clone(), "recall_ema": float(self.recall_ema[m]),
            "sleep_pending": bool(self.sleep_pending[m]), "store_tag": bool(self.store_tag[m]),
            "awake": bool(self.awake[m]),
            "tags": [(tag.state.clone(), tag.context.clone()) for tag in self.tags[m]],
        }
        return {
            "kind": "sharp", "config": self.member_config(m).to_dict(),
            "weights": {name: p[m].detach().clone() for name, p in self.params.items()},
            "memory_opt": self.memory_opt.member_state(m),
            "head_opt": self.head_opt.member_state(m),
            "runtime": runtime, "rng": self.generators[m].get_state(),
        }

    def _load_members(self, states: Sequence[dict[str, Any]]) -> None:
        """Load one :meth:`Sharp.state_dict` per member. Raises ValueError for a wrong count
        or a state of another configuration or seed."""
        if len(states) != self.members:
            raise ValueError(f"{len(states)} learner states for {self.members} members")
        for m, state in enumerate(states):
            check_compatible(state, "sharp", self.member_config(m))
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
                self.tags[m].clear()
                self.tags[m].extend(Tag(s.to(self.device).clone(), c.to(self.device).clone())
                                    for s, c in runtime["tags"])
                load_generator_state(self.generators[m], state["rng"])

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume every member's stream bit-exactly: the seeds and one
        :meth:`Sharp.state_dict` per member (copies)."""
        return {"kind": KIND, "config": self.config.to_dict(), "seeds": list(self.seeds),
                "members": [self._member_state(m) for m in range(self.members)]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`. Raises ValueError for another kind, configuration or
        seed list."""
        check_compatible(state, KIND, self.config)
        if list(state["seeds"]) != self.seeds:
            raise ValueError(f"checkpoint has seeds {state['seeds']}, this ensemble {self.seeds}")
        self._load_members(state["members"])

