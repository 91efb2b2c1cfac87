"""The one learner protocol every model (SHARP and each baseline) implements, and the
sleep phase only SHARP adds to it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
from torch import Tensor

if TYPE_CHECKING:
    from sharp.config import SharpConfig

LN2 = math.log(2.0)


@dataclass(frozen=True)
class StepResult:
    """What one learning step reports. ``logits`` is the prediction made *before*
    learning from ``target``; ``loss`` is its cross-entropy in nats."""

    logits: Tensor
    loss: float
    target: int
    recall: float = math.nan
    memory_learned: bool = False

    @property
    def bits(self) -> float:
        """Cross-entropy of the prediction in bits."""
        return self.loss / LN2

    @property
    def correct(self) -> bool:
        """Whether the top-1 prediction was the target."""
        return int(self.logits.argmax()) == self.target


@dataclass(frozen=True)
class EvalResult:
    """Metrics of an evaluation without learning. ``bits`` holds one value per predicted
    token (unclipped); :meth:`mean_bits` applies the table's bits rule."""

    bits: np.ndarray
    correct: np.ndarray
    seconds: float

    @property
    def tokens(self) -> int:
        """Number of predicted tokens."""
        return int(self.bits.size)

    @property
    def accuracy(self) -> float:
        """Top-1 accuracy."""
        return float(self.correct.mean()) if self.tokens else math.nan

    def mean_bits(self, clip: float | None = None) -> float:
        """Mean bits per token; ``clip`` caps each token's bits (the authors' rule used
        ``clip = log2(V)``), None reports unclipped values."""
        bits = self.bits if clip is None else np.minimum(self.bits, clip)
        return float(bits.mean()) if self.tokens else math.nan


@runtime_checkable
class Learner(Protocol):
    """A streaming learner: each token pair is seen once, prediction before learning."""

    vocab_size: int
    window: int

    def learn(self, window: Tensor | np.ndarray, target: int) -> StepResult:
        """Predict ``target`` from the stream so far, then learn from it."""
        ...

    def evaluate(self, tokens: np.ndarray) -> EvalResult:
        """Predict every token of ``tokens`` after the first ``window`` ones, from a reset
        state and without learning; the learner's own state is left untouched."""
        ...

    def reset_state(self) -> None:
        """Forget the stream position (recurrent states, counters); keep the weights."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume the stream bit-exactly."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; raises ValueError for another configuration."""
        ...

    def parameter_count(self) -> int:
        """Number of trainable parameters."""
        ...


@runtime_checkable
class Sleeper(Protocol):
    """A learner with a sleep phase (SHARP; the baselines have none): test with
    ``isinstance(learner, Sleeper)``. ``config.sleep_every`` is its default schedule
    (wake steps between sleeps; None: never on its own)."""

    config: SharpConfig

    def sleep(self) -> Any:
        """Run the sleep phase now and return a report of what it did (SHARP:
        :class:`~sharp.model.learner.SleepReport`)."""
        ...
