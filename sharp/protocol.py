"""The one learner protocol every model (SHARP and each baseline) implements, the checks
of its token input (one set of messages for every learner and runner), and the sleep
phase only SHARP adds to it."""

from __future__ import annotations

import dataclasses
import math
import operator
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor, nn

from sharp.config import seed_check

if TYPE_CHECKING:
    from sharp.config import SharpConfig

LN2 = math.log(2.0)

#: What the kind of an ensemble's ``state_dict`` adds to its members' kind
#: (``sharp-ensemble``, ``lstm-ensemble``).
ENSEMBLE_SUFFIX = "-ensemble"


#: What a learner accepts as tokens: a list of ids, a numpy array or a tensor.
TokenIds = Sequence[int] | np.ndarray | torch.Tensor


def token_array(tokens: TokenIds) -> np.ndarray:
    """``tokens`` (a list, numpy array or tensor on any device) as a numpy array, without
    copying where it can."""
    if isinstance(tokens, torch.Tensor):
        return tokens.numpy(force=True)
    return np.asarray(tokens)


def check_stream(tokens: TokenIds, window: int, vocab_size: int) -> np.ndarray:
    """Return ``tokens`` as a 1-D integer numpy array after checking it can feed a learner:
    one dimension, more than ``window`` tokens, integer ids (not floats or booleans), every
    id in 0..vocab_size-1. Raises ValueError saying what to fix.

    Every runner and every learner's ``evaluate`` check their input with this (and every
    ``learn`` with :func:`check_window` and :func:`check_target`): one set of messages."""
    ids = token_array(tokens)
    if ids.ndim != 1:
        check_not_text(tokens, "stream")
        raise ValueError(f"a stream is a 1-D token sequence, got shape {ids.shape}")
    if ids.size <= window:
        raise ValueError(
            f"the stream has {ids.size} tokens but a window of W={window} needs at least "
            f"{window + 1} (W tokens and one target); give a longer stream"
        )
    _check_dtype(ids)
    if int(ids.min()) < 0 or int(ids.max()) >= vocab_size:
        _outside(ids, vocab_size)
    return ids


def check_window(window: TokenIds, size: int, vocab_size: int) -> np.ndarray:
    """One learning step's window as a 1-D integer numpy array of ``size`` ids, checked as
    :func:`check_stream` checks a stream (cheaply: about a microsecond for W = 4)."""
    ids = token_array(window)
    if ids.shape != (size,):
        check_not_text(window, "window")
        got = f"shape {ids.shape}" if ids.ndim != 1 else f"{ids.size} tokens"
        raise ValueError(f"window has {got} but this learner's window W is {size}")
    _check_dtype(ids)
    values = ids.tolist()
    if min(values) < 0 or max(values) >= vocab_size:
        _outside(ids, vocab_size)
    return ids


def check_target(target: object, vocab_size: int) -> int:
    """One learning step's target as an int: an integer id (a Python or numpy integer or a
    one-element integer tensor, not a bool) in 0..vocab_size-1, else ValueError."""
    try:
        if isinstance(target, bool) or (isinstance(target, torch.Tensor)
                                        and target.dtype == torch.bool):
            raise TypeError
        y = operator.index(target)  # type: ignore[arg-type]
    except TypeError:
        check_not_text(target, "target")
        raise ValueError(
            f"the target must be an integer token id, got {target!r} "
            f"({type(target).__name__}); encode text first"
        ) from None
    if not 0 <= y < vocab_size:
        raise ValueError(
            f"target token {y} is outside the vocabulary 0..{vocab_size - 1}; encode the "
            "text with the learner's vocabulary"
        )
    return y


def check_not_text(tokens: object, what: str) -> None:
    """Raise ValueError if ``tokens`` (a learner's ``what``: stream, window, target) is
    text or None instead of token ids, saying how to encode text, or an iterator (a
    generator, ``iter(...)``), which is not a sequence; else return. Called on the error
    paths of a learner's token checks, so its valid step never pays for it; an ensemble's
    per-member checks (:func:`check_windows`, :func:`check_targets`, :func:`check_slices`)
    call it first, before taking ``len`` (three isinstance tests)."""
    if tokens is None or isinstance(tokens, str | bytes):
        got = "None" if tokens is None else f"a {type(tokens).__name__}"
        raise ValueError(f"got {got} for the {what}: token ids are needed; encode text first "
                         "(e.g. sharp.data.TEXT8.encode(text))")
    if isinstance(tokens, Iterator):
        raise ValueError(f"got an iterator ({type(tokens).__name__}) for the {what}, which is "
                         "not a sequence: give a list, a numpy array or a tensor of token ids "
                         "(e.g. list(...))")


def check_windows(windows: Sequence[TokenIds] | np.ndarray | torch.Tensor, members: int,
                  size: int, vocab_size: int) -> np.ndarray:
    """One ensemble step's windows, one per member, as an (M, W) int64 array, each row
    checked by :func:`check_window`; ValueError for another number of rows
    (:func:`check_per_member`)."""
    check_not_text(windows, "windows")
    check_per_member(windows, members, "learns", "window", "W")
    return np.stack([check_window(row, size, vocab_size) for row in windows]).astype(np.int64)


def check_targets(targets: TokenIds, members: int, vocab_size: int) -> list[int]:
    """One ensemble step's targets, one per member, each checked by :func:`check_target`;
    ValueError for another number of targets (:func:`check_per_member`)."""
    check_not_text(targets, "targets")
    check_per_member(targets, members, "learns", "target", None)
    return [check_target(target, vocab_size) for target in targets]


def check_slices(tokens: Sequence[TokenIds] | np.ndarray | torch.Tensor, members: int) -> None:
    """Raise ValueError unless ``tokens`` holds one slice per member (an ensemble's
    ``evaluate`` input; each slice is then checked by :func:`check_stream`)."""
    check_not_text(tokens, "slices")
    check_per_member(tokens, members, "evaluates", "token sequence", "T")


def check_per_member(given: object, members: int, verb: str, noun: str,
                     width: str | None) -> None:
    """Raise ValueError unless ``given`` holds one ``noun`` per member: ``members`` token
    sequences of length ``width`` (``"W"``, ``"T"``; a 1-D array or a list of ids is one
    of them, not M), or with ``width`` None ``members`` single ids. The message says what
    an ensemble of M members ``verb`` (e.g. "a list of 3, or a (3, W) array") and what was
    given."""
    if width is None:
        one = not hasattr(given, "__len__") or getattr(given, "ndim", 1) == 0
    else:
        one = getattr(given, "ndim", None) == 1 or (  # token ids, not sequences of them
            isinstance(given, Sequence) and len(given) > 0
            and not hasattr(given[0], "__len__"))
    count = None if one and width is None else len(given)  # type: ignore[arg-type]
    if one or count != members:
        shape = f"({members},)" if width is None else f"({members}, {width})"
        got = (f"one {noun} {given!r}" if count is None else
               f"one {noun} of {count} tokens" if one else f"{count} {noun}s")
        raise ValueError(f"an ensemble of {members} members {verb} {members} {noun}s, one per "
                         f"member (a list of {members}, or a {shape} array); got {got}")


def check_seeds(seeds: object, owner: str = "members") -> list[int]:
    """An ensemble's seeds as a list of ints: a non-empty sequence (list, tuple, range,
    1-D integer array) of distinct integers in 0..2**63-1, bools and floats refused. Raises
    TypeError for anything else (an int, a string, a float seed) and ValueError for a seed out
    of range (:func:`~sharp.config.seed_check`) or an empty or repeated list, naming the
    two ``owner`` entries (``members`` or ``learners``) that share a seed."""
    if isinstance(seeds, str | bytes) or not isinstance(seeds, Sequence | np.ndarray):
        raise TypeError(f"seeds must be a sequence of distinct ints, one per member (e.g. "
                        f"[0, 1, 2]), got {seeds!r} ({type(seeds).__name__})")
    values = []
    for seed in seeds:
        if isinstance(seed, bool | np.bool_) or not isinstance(seed, int | np.integer):
            raise TypeError(f"seeds must be ints, got {seed!r} ({type(seed).__name__}) in "
                            f"{seeds!r}")
        ok, message = seed_check(int(seed), "seeds")
        if not ok:
            raise ValueError(f"{message} in {seeds!r}")
        values.append(int(seed))
    if not values:
        raise ValueError("an ensemble needs at least one member: give one seed per member")
    first: dict[int, int] = {}
    for i, seed in enumerate(values):
        if seed in first:
            raise ValueError(f"{owner} {first[seed]} and {i} share seed {seed}: an ensemble "
                             "needs one distinct seed per member")
        first[seed] = i
    return values


def check_member(m: object, members: int) -> int:
    """Member index ``m`` of an ensemble of ``members`` as an int; IndexError unless it is
    an int in 0..members-1 (a negative index is refused, not counted from the end)."""
    if isinstance(m, bool) or not isinstance(m, int | np.integer):
        raise TypeError(f"a member index is an int, got {m!r} ({type(m).__name__})")
    if not 0 <= m < members:
        raise IndexError(f"member {m} is out of range 0..{members - 1}")
    return int(m)


def token_tensor(tokens: TokenIds, window: int, vocab_size: int,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """A slice to evaluate or stream, checked as :func:`check_stream` checks it
    (ValueError), as a 1-D int64 tensor on ``device``.

    A valid tensor is checked where it lives (one read-back: its smallest and largest id)
    and moved at most once, so a slice already on ``device`` never makes a round trip
    through the host; anything else, and every invalid input (for the message), is checked
    on the host."""
    if (isinstance(tokens, torch.Tensor) and tokens.ndim == 1 and tokens.numel() > window
            and not (tokens.is_floating_point() or tokens.is_complex()
                     or tokens.dtype == torch.bool)):
        low, high = torch.stack([tokens.min(), tokens.max()]).tolist()
        if low >= 0 and high < vocab_size:
            return tokens.to(device=device, dtype=torch.long)
    ids = check_stream(tokens, window, vocab_size)
    return torch.tensor(ids, dtype=torch.long, device=device)


def _check_dtype(ids: np.ndarray) -> None:
    if ids.dtype.kind not in "iu":
        raise ValueError(f"tokens must be integer ids, got dtype {ids.dtype}; encode text first")


def _outside(ids: np.ndarray, vocab_size: int) -> NoReturn:
    position = int(np.flatnonzero((ids < 0) | (ids >= vocab_size))[0])
    bad = int(ids[position])
    raise ValueError(
        f"token id {bad} at position {position} is outside the vocabulary "
        f"0..{vocab_size - 1}; encode the text with the learner's vocabulary"
    )


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
        ``clip = log2(V)``), None reports unclipped values. Raises ValueError unless
        ``clip`` is None or a number > 0."""
        if clip is not None and not clip > 0:
            raise ValueError(f"clip (bits per token) must be > 0, got {clip}")
        bits = self.bits if clip is None else np.minimum(self.bits, clip)
        return float(bits.mean()) if self.tokens else math.nan


def evaluate_predictions(learner: Any, tokens: TokenIds,
                         blocks: Callable[[Tensor], Iterable[Tensor]] | None = None
                         ) -> EvalResult:
    """SPEC §5 for a learner with ``predict_stream(ids (T,)) -> logits (T - W, V)`` (from a
    reset state, without learning) and a ``device``: bits and top-1 correctness of every
    token after the first W of ``tokens``, checked by :func:`token_tensor` (ValueError).

    ``blocks`` (ids -> the same logits as consecutive blocks of rows) scores block by
    block instead, so that a large vocabulary never holds every logit at once (50,257
    floats are 0.2 MB a token: 20 GB for a 100,000-token book)."""
    start = time.perf_counter()
    ids = token_tensor(tokens, learner.window, learner.vocab_size, learner.device)
    targets = ids[learner.window :]
    bits, correct, done = [], [], 0
    with torch.inference_mode():
        for logits in [learner.predict_stream(ids)] if blocks is None else blocks(ids):
            wanted = targets[done : done + logits.shape[0]]
            nats = nn.functional.cross_entropy(logits, wanted, reduction="none")
            bits.append((nats / LN2).cpu())
            correct.append((logits.argmax(-1) == wanted).cpu())
            done += logits.shape[0]
    return EvalResult(torch.cat(bits).numpy(), torch.cat(correct).numpy(),
                      time.perf_counter() - start)


#: A loss (nats per token) above this only comes from exploding weights: the model gave
#: the token a probability below e**-10000. Such a learner is as diverged as one with a
#: NaN loss; which of the two a run shows depends on rounding (the torch engine's float32
#: logits overflow to NaN where the fused kernels' stay finite), so both count.
DIVERGED_LOSS = 1e4


#: The ``loss`` of a :class:`Diverged` found in the weights themselves (:func:`check_weights`).
WEIGHTS = "weights"


class Diverged(FloatingPointError):
    """A learner's loss is NaN, infinite or above :data:`DIVERGED_LOSS`: its weights have
    diverged (a NaN weight shows as a NaN loss on the next step), so nothing it predicts
    means anything.

    ``learner`` names it (kind, engine), ``lr`` is its base learning rate, ``loss`` says
    which loss and ``value`` what it was (nats); ``step`` is the stream step (1-based)
    where the runner saw it, None when the learner was driven directly; ``member`` is the
    diverged member of an ensemble (every ensemble's check sets it; the other members may
    be sound), None for a separate learner."""

    def __init__(self, learner: str, lr: float, loss: str, value: float,
                 step: int | None = None, member: int | None = None) -> None:
        super().__init__(learner, lr, loss, value, step, member)
        self.learner, self.lr, self.loss, self.value = learner, lr, loss, value
        self.step, self.member = step, member

    def at_step(self, step: int | None) -> Diverged:
        """The same report, placed at stream step ``step`` (None: no step)."""
        return Diverged(self.learner, self.lr, self.loss, self.value, step, self.member)

    def as_member(self, member: int) -> Diverged:
        """The same report, naming ``member`` (e.g. the member's number in a job whose
        ensemble has lost members, rather than its place in that ensemble)."""
        return Diverged(self.learner, self.lr, self.loss, self.value, self.step, member)

    def __str__(self) -> str:
        who = self.learner if self.member is None else f"{self.learner} member {self.member}"
        where = "" if self.step is None else f" at stream step {self.step}"
        what = ("a weight is NaN or infinite" if self.loss == WEIGHTS
                else f"its {self.loss} loss is {self.value:.4g} nats")
        return (
            f"{who} diverged{where}: {what} "
            f"with learning rate lr={self.lr:g}, so its weights have blown up and nothing "
            f"it predicts from here on means anything. Lower the learning rate (e.g. "
            f"lr={self.lr / 10:g}) and run again from the start, or from a checkpoint saved "
            "before this step"
        )


def check_finite(learner: Any, *, member: int | None = None, **losses: float) -> None:
    """Raise :class:`Diverged` for ``learner`` (any learner or ensemble with a ``config``)
    if one of ``losses`` (name -> nats, e.g. ``prediction=p``) is NaN, infinite or above
    :data:`DIVERGED_LOSS`; ``member``: the ensemble member the losses are of (named in the
    report). Costs well under a microsecond, so every ``learn`` step calls it."""
    for name, value in losses.items():
        if not value <= DIVERGED_LOSS:
            raise Diverged(learner_label(learner), learner.config.lr, name, value,
                           member=member)


def check_weights(learner: Any, weights: Iterable[Tensor],
                  members: Tensor | None = None) -> None:
    """Raise :class:`Diverged` for ``learner`` if one of ``weights`` holds a NaN or an
    infinity. A sleep calls it before it dreams: a weight that blew up in the wake step just
    before (whose loss, computed before the update, was still finite) gives NaN sampling
    probabilities, from which the dream sampler (:func:`~sharp.model.learner.sample_tokens`,
    which inverts the cumulative distribution) would silently draw token 0 at every step.
    For an ensemble, every tensor's leading axis is the member and ``members`` (M,) bool
    says which members to check; the first of them with a bad weight is named. One device
    synchronisation per call."""
    finite: Tensor | None = None
    for weight in weights:
        ok = (torch.isfinite(weight).all() if members is None
              else torch.isfinite(weight).flatten(1).all(1))
        finite = ok if finite is None else finite & ok
    if finite is None:
        return
    if members is not None:
        finite = finite | ~members
    if not bool(finite.all()):
        member = None if members is None else int((~finite).nonzero()[0, 0])
        raise Diverged(learner_label(learner), learner.config.lr, WEIGHTS, math.nan,
                       member=member)


def learner_label(learner: Any) -> str:
    """A learner's display name: its config's ``label`` (baselines) or its class name,
    with its engine where it has one (``Sharp (fused engine)``, ``LSTM (tbptt)``)."""
    label = getattr(learner.config, "label", None) or type(learner).__name__
    engine = getattr(learner, "engine", None)
    return label if engine is None else f"{label} ({engine} engine)"


@runtime_checkable
class Learner(Protocol):
    """A streaming learner: each token pair is seen once, prediction before learning."""

    vocab_size: int
    window: int

    def learn(self, window: TokenIds, target: int) -> StepResult:
        """Predict ``target`` from the stream so far, then learn from it. ``window`` is
        W ids (a list, array or tensor) checked by
        :func:`~sharp.protocol.check_window`, ``target`` by
        :func:`~sharp.protocol.check_target` (ValueError, nothing changed); raises
        :class:`Diverged` (via :func:`check_finite`) when its loss is not finite."""
        ...

    def evaluate(self, tokens: TokenIds) -> EvalResult:
        """Predict every token of ``tokens`` after the first ``window`` ones, from a reset
        state and without learning; the learner's own state is left untouched. ``tokens``
        is checked by :func:`~sharp.protocol.check_stream` (ValueError)."""
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


class LiveConfig:
    """A learner's ``config`` attribute: set when the learner is built; afterwards an
    assignment (``learner.config = learner.config.replace(lr=1e-3)``) may change only the
    fields in ``live``, which the owner's ``apply_config(changed)`` puts into effect at
    once (e.g. the optimisers' learning rates). Changing any other field raises ValueError:
    it shaped the learner's weights or was used when it was built, and a config that no
    longer describes the learner would be silently ignored. Raises TypeError for a config
    of another class."""

    def __init__(self, *live: str) -> None:
        self.live = frozenset(live)

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = f"_{name}"

    def __get__(self, learner: Any, owner: type | None = None) -> Any:
        return self if learner is None else getattr(learner, self.slot)

    def __set__(self, learner: Any, config: Any) -> None:
        old = getattr(learner, self.slot, None)
        if old is None:
            setattr(learner, self.slot, config)
            return
        if type(config) is not type(old):
            raise TypeError(f"{type(learner).__name__}.config must stay a "
                            f"{type(old).__name__}, got a {type(config).__name__}")
        changed = {field.name for field in dataclasses.fields(config)
                   if getattr(config, field.name) != getattr(old, field.name)}
        fixed = sorted(changed - self.live)
        if fixed:
            raise ValueError(
                f"{type(learner).__name__}.config: {', '.join(fixed)} cannot change on a "
                f"learner already built (only {', '.join(sorted(self.live))} can); build a "
                "new learner from the new config")
        setattr(learner, self.slot, config)
        if changed:
            learner.apply_config(changed)


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
