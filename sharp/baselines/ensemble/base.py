"""What every baseline ensemble shares: building M learners and stacking their weights,
the learner protocol over M streams, members, checkpoints (see :mod:`sharp.baselines.ensemble`)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from sharp.baselines.config import BaselineConfig
from sharp.baselines.recurrent import StreamingRecurrent
from sharp.baselines.transformer import TransformerBaseline
from sharp.config import check_instance
from sharp.engines.ensemble import EnsembleStep
from sharp.engines.ensemble.adam import BatchedAdam
from sharp.engines.ensemble.stacked import Params
from sharp.engines.runtime import small_kernels
from sharp.model.inputs import check_table_state, table_state
from sharp.model.learner import check_compatible, ensemble_seeds
from sharp.protocol import (
    ENSEMBLE_SUFFIX,
    EvalResult,
    TokenIds,
    check_finite,
    check_member,
    check_seeds,
    check_slices,
    check_targets,
    check_windows,
)

#: A separate baseline learner of any kind.
Learner = StreamingRecurrent | TransformerBaseline


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
    ``config.replace(seed=seeds[m])`` (built with ``table``); :meth:`member` takes it out as
    such a learner. ``table``: the frozen (V, D) input table of a config with
    ``inputs="dense"`` (None: read from its ``input_table``), held once on the ensemble's
    device and read by every member through its own input projection; it is neither
    stacked nor trained. Raises TypeError for a ``config`` that is not a baseline's and for
    ``seeds`` that are not a sequence of ints, ValueError for an empty or repeated seed
    list (:func:`~sharp.protocol.check_seeds`) and what
    :func:`~sharp.model.inputs.input_table` raises for a missing or mis-shaped table.
    """

    kind: str

    def __init__(self, config: BaselineConfig, seeds: Sequence[int],
                 table: Tensor | None = None) -> None:
        check_instance(config, BaselineConfig, type(self).__name__,
                       "sharp.baselines.baseline_preset('lstm')")
        self.config = config
        self.seeds = check_seeds(seeds)
        #: Evaluation loads a member's weights into this learner and runs its own code.
        self._scratch = self._learner(self.member_config(0), table)
        #: The frozen input table (V, D) all members read (the scratch learner's), or None
        #: for learned embeddings.
        self.table = self._scratch.table
        self.kind = self._scratch.kind
        self.members = len(self.seeds)
        self.device = self._scratch.device
        self.vocab_size, self.window = config.vocab_size, config.window
        weights, states = [], []
        for m in range(self.members):  # one learner (and table copy) alive at a time
            learner = self._learner(self.member_config(m), self.table) if m else self._scratch
            weights.append(dict(self._module(learner).named_parameters()))
            states.append(learner.state_dict())
        #: Stacked weights (M, ...) by the separate learner's parameter names.
        self.params: dict[str, Tensor] = {
            name: torch.stack([w[name] for w in weights]).detach().requires_grad_()
            for name in weights[0]
        }
        self.optimiser = BatchedAdam([list(self.params.values())], [config.lr],
                                     weight_decay=config.weight_decay)
        self._allocate()
        self._load_members(states)

    # -- what each kind supplies ----------------------------------------------------
    def _learner(self, config: BaselineConfig, table: Tensor | None) -> Learner:
        """A separate learner of ``config`` reading the frozen input ``table`` (None: a
        learned embedding, or the table read from ``config.input_table``)."""
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
        stream position). Raises TypeError unless they are baselines of one kind, ValueError
        unless they share one configuration apart from the seed and have distinct seeds
        (:func:`~sharp.model.learner.ensemble_seeds`) and, with dense inputs, one frozen
        input table."""
        from sharp.baselines.ensemble import baseline_ensemble  # the factory picks the kind

        seeds = ensemble_seeds(learners, (StreamingRecurrent, TransformerBaseline),
                               "sharp.baselines.RecurrentBaseline(baseline_preset('lstm'))")
        first = learners[0].table
        for i, learner in enumerate(learners[1:], start=1):
            if first is not None and not torch.equal(learner.table, first):
                raise ValueError(f"from_learners needs learners of one frozen input table: "
                                 f"learners 0 and {i} read different ones")
        ensemble = baseline_ensemble(learners[0].config, seeds, first)
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
        loss is not finite, its ``member`` the first such member (every member has taken
        the step by then; the others' updates are their own, unaffected by it)."""
        x = check_windows(windows, self.members, self.window, self.vocab_size)
        y = check_targets(targets, self.members, self.vocab_size)
        logits = self._learn(x, y)
        target = torch.tensor(y, device=self.device)
        loss = nn.functional.cross_entropy(logits, target, reduction="none")
        for m, value in enumerate(loss.tolist()):
            check_finite(self, member=m, prediction=value)
        return EnsembleStep(logits, loss,
                            torch.full((self.members,), float("nan"), device=self.device),
                            torch.zeros(self.members, dtype=torch.bool, device=self.device),
                            target)

    def _step(self, loss: Tensor, members: Sequence[int]) -> None:
        """One Adam step of ``members`` on ``loss`` (the sum of their losses); a weight
        that took no part (a clockwork module that did not tick) steps on a zero gradient,
        as in the separate learner."""
        grads = torch.autograd.grad(loss, self.optimiser.params, materialize_grads=True)
        mask = None if len(members) == self.members else torch.tensor(
            [m in members for m in range(self.members)], device=self.device)
        self.optimiser.step(grads, mask)

    def reset_state(self, members: Sequence[int] | None = None) -> None:
        """Forget the stream position of ``members`` (all when None), as the learner's
        ``reset_state``; weights and optimiser moments are kept. Raises IndexError for a
        member out of range (:func:`~sharp.protocol.check_member`)."""
        for m in range(self.members) if members is None else members:
            self._reset(check_member(m, self.members))

    # -- evaluation -----------------------------------------------------------------
    def evaluate(self, tokens: Tensor | np.ndarray | Sequence[TokenIds]) -> list[EvalResult]:
        """Member m's separate learner's ``evaluate(tokens[m])`` for every member (from a
        reset state, without learning; the ensemble is left untouched): ``tokens`` is (M, T)
        ids or M one-dimensional slices. Raises ValueError unless there is one slice of
        more than W valid ids per member."""
        check_slices(tokens, self.members)
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
        and it continues alone exactly as the member would). Raises IndexError unless ``m``
        is in 0..M-1 (:func:`~sharp.protocol.check_member`)."""
        m = check_member(m, self.members)
        learner = self._learner(self.member_config(m), self.table)
        state = self._member_state(m)
        if self.table is not None:
            state["inputs"] = table_state(self.table, learner.config)
        learner.load_state_dict(state)
        return learner

    def _member_state(self, m: int) -> dict[str, Any]:
        """Member ``m``'s state in its learner's ``state_dict`` format (copies), without the
        frozen table's entry (the ensemble's checkpoint holds that once)."""
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
        """Everything needed to resume every member's stream bit-exactly: the seeds, one
        learner ``state_dict`` per member (copies) and, with dense inputs, the frozen
        table's entry once (``inputs``: :func:`~sharp.model.inputs.table_state`)."""
        state = {"kind": f"{self.kind}{ENSEMBLE_SUFFIX}", "config": self.config.to_dict(),
                 "seeds": list(self.seeds),
                 "members": [self._member_state(m) for m in range(self.members)]}
        if self.table is not None:
            state["inputs"] = table_state(self.table, self.config)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`. Raises ValueError for another kind, configuration,
        seed list or frozen input table."""
        check_compatible(state, f"{self.kind}{ENSEMBLE_SUFFIX}", self.config)
        if self.table is not None:
            check_table_state(state["inputs"], self.table)
        if list(state["seeds"]) != self.seeds:
            raise ValueError(f"checkpoint has seeds {state['seeds']}, this ensemble {self.seeds}")
        self._load_members(state["members"])
