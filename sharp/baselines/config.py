"""Baseline configurations (SPEC §7): validated, immutable objects with named presets.

Every baseline shares the stream-facing fields (vocabulary, window W, optimiser, seed,
threads, device). Presets: ``quick`` (small, for the bundled benchmark and notebooks) and
``paper`` (the sizes the authors ran). A preset fixes sizes only; the streaming mode stays
the kit's default (``tbptt``, Koutník connectivity, full-context evaluation) unless a
``paper`` mode is asked for explicitly, and every paper mode shows in :attr:`label`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal, Self

from sharp.config import ConfigError, InputType, check_field_types, shared_checks
from sharp.engines.runtime import check_device

Cell = Literal["rnn", "lstm", "gru"]
StreamMode = Literal["tbptt", "paper"]
Carry = Literal["final", "first"]
Connectivity = Literal["koutnik", "paper"]
EvalMode = Literal["full", "paper"]


@dataclass(frozen=True)
class BaselineConfig:
    """Fields every baseline has. Defaults are the authors' text8 settings (Adam with
    lr 1e-4 and weight decay 1e-12, window W = 4).

    ``inputs`` as for :class:`~sharp.config.SharpConfig`: ``embedding`` (learned) or
    ``dense`` (each token's row of a frozen (V, ``input_dim``) table given from outside or
    read from ``input_table``, through a trained linear to the model's input width)."""

    vocab_size: int = 27
    inputs: InputType = "embedding"
    input_dim: int | None = None
    input_table: str | None = None
    window: int = 4
    lr: float = 1e-4
    weight_decay: float = 1e-12
    device: str = "auto"
    threads: int | None = 1
    seed: int = 0
    name: str = field(default="custom", compare=False)

    def __post_init__(self) -> None:
        check_field_types(self)
        self.validate()

    @property
    def label(self) -> str:
        """Display name for tables and plots (shows any non-default mode)."""
        raise NotImplementedError

    def _checks(self) -> list[tuple[bool, str]]:
        return [
            (self.vocab_size >= 2, f"vocab_size must be >= 2, got {self.vocab_size}"),
            (self.window >= 1, f"window (W) must be >= 1, got {self.window}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            *shared_checks(self),
        ]

    def validate(self) -> None:
        """Raise :class:`ConfigError` with a message saying what to change (also for a
        device this machine does not have: :func:`~sharp.engines.runtime.check_device`)."""
        for ok, message in self._checks():
            if not ok:
                raise ConfigError(message)
        check_device(self.device)

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (JSON-safe) used in checkpoints and reports."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError`."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"unknown {cls.__name__} keys {unknown}; known keys: {sorted(known)}"
            )
        return cls(**data)


@dataclass(frozen=True)
class RecurrentConfig(BaselineConfig):
    """RNN / LSTM / GRU: embedding E -> ``layers`` x ``hidden`` recurrent stack -> V.

    ``mode="tbptt"``: each token is fed once; the state is carried and the weights take one
    Adam step per ``tbptt`` predictions, backpropagating through those steps only.
    ``mode="paper"``: the authors' stride-1 windows — every step encodes its W-token
    window from the carried (detached) state and takes one Adam step; ``carry`` says which
    state goes on to the next window: ``final`` (after the whole window, as the authors'
    code does) or ``first`` (after the window's first token).
    """

    cell: Cell = "rnn"
    layers: int = 5
    hidden: int = 512
    embedding: int = 100
    mode: StreamMode = "tbptt"
    tbptt: int = 8
    carry: Carry = "final"

    @property
    def label(self) -> str:
        """E.g. ``LSTM (tbptt)``, ``GRU (paper)``, ``RNN (paper, carry=first)``."""
        detail = self.mode
        if self.mode == "paper" and self.carry != "final":
            detail += f", carry={self.carry}"
        return f"{self.cell.upper()} ({detail})"

    def _checks(self) -> list[tuple[bool, str]]:
        return [
            *super()._checks(),
            (self.layers >= 1, f"layers must be >= 1, got {self.layers}"),
            (self.hidden >= 1, f"hidden must be >= 1, got {self.hidden}"),
            (self.embedding >= 1, f"embedding must be >= 1, got {self.embedding}"),
            (self.tbptt >= 1, f"tbptt (steps per update) must be >= 1, got {self.tbptt}"),
        ]


@dataclass(frozen=True)
class ClockworkConfig(BaselineConfig):
    """Clockwork RNN (Koutník et al. 2014): ``modules`` modules of ``hidden`` tanh units with
    periods 1, 2, 4, ..., 2**(modules-1); module i updates only when the clock is a multiple
    of its period. ``connectivity="koutnik"``: module i reads itself and the slower modules
    (j >= i); ``"paper"``: the authors' variant, module i reads the faster modules 0..i.
    ``mode``, ``tbptt`` and ``carry`` stream as for :class:`RecurrentConfig`; in ``paper``
    mode the clock ticks once per window element, as in the authors' code.
    """

    modules: int = 5
    hidden: int = 512
    embedding: int = 100
    connectivity: Connectivity = "koutnik"
    mode: StreamMode = "tbptt"
    tbptt: int = 8
    carry: Carry = "final"

    @property
    def periods(self) -> tuple[int, ...]:
        """Clock period of every module, fastest first."""
        return tuple(2**i for i in range(self.modules))

    @property
    def label(self) -> str:
        """E.g. ``CW-RNN (tbptt)``, ``CW-RNN (paper, paper wiring)``."""
        detail = self.mode
        if self.mode == "paper" and self.carry != "final":
            detail += f", carry={self.carry}"
        if self.connectivity == "paper":
            detail += ", paper wiring"
        return f"CW-RNN ({detail})"

    def _checks(self) -> list[tuple[bool, str]]:
        return [
            *super()._checks(),
            (self.modules >= 1, f"modules must be >= 1, got {self.modules}"),
            (self.hidden >= 1, f"hidden must be >= 1, got {self.hidden}"),
            (self.embedding >= 1, f"embedding must be >= 1, got {self.embedding}"),
            (self.tbptt >= 1, f"tbptt (steps per update) must be >= 1, got {self.tbptt}"),
        ]


@dataclass(frozen=True)
class TransformerConfig(BaselineConfig):
    """Pre-norm decoder: RMSNorm, rotary positions, causal multi-head attention, SwiGLU
    MLP, no biases; context C = ``context`` tokens.

    Streaming: every token is predicted before learning from it; one Adam step per
    consecutive chunk of C tokens (inputs ``t[jC:(j+1)C]``, targets one ahead). The
    prediction of a token sees the tokens since the start of its context block: blocks of
    ``stride`` (S) targets share a context start, so every prediction sees between C−S and
    C previous tokens (S = 1 is a plain sliding window; default S = C/2).
    ``eval_mode="full"`` evaluates with that same context rule; ``"paper"`` predicts each
    token from only the previous W tokens, as the authors evaluated.
    ``d_ff=None`` means 8/3·d rounded up to a multiple of 32 (704 for d = 256).
    """

    d_model: int = 256
    layers: int = 12
    heads: int = 8
    d_ff: int | None = None
    context: int = 1024
    stride: int | None = None
    eval_mode: EvalMode = "full"
    rope_base: float = 10_000.0

    @property
    def ff(self) -> int:
        """Width of the SwiGLU hidden layer."""
        if self.d_ff is not None:
            return self.d_ff
        return 32 * math.ceil(8 * self.d_model / 3 / 32)

    @property
    def block(self) -> int:
        """Context-refresh stride S (``stride`` or C/2)."""
        return self.stride if self.stride is not None else max(1, self.context // 2)

    @property
    def label(self) -> str:
        """``Transformer`` or ``Transformer (eval=paper)``."""
        return "Transformer" if self.eval_mode == "full" else "Transformer (eval=paper)"

    def _checks(self) -> list[tuple[bool, str]]:
        return [
            *super()._checks(),
            (self.d_model >= 2, f"d_model must be >= 2, got {self.d_model}"),
            (self.layers >= 1, f"layers must be >= 1, got {self.layers}"),
            (self.heads >= 1 and self.d_model % self.heads == 0,
             f"heads must divide d_model={self.d_model}, got heads={self.heads}"),
            (self.heads >= 1 and (self.d_model // max(self.heads, 1)) % 2 == 0,
             f"the head size d_model/heads must be even for rotary positions, got "
             f"{self.d_model}/{self.heads}"),
            (self.d_ff is None or self.d_ff >= 1, f"d_ff must be None or >= 1, got {self.d_ff}"),
            (self.context >= self.window,
             f"context (C) must be >= window W={self.window}, got {self.context}"),
            (self.stride is None or (1 <= self.stride <= self.context
                                     and self.context % self.stride == 0),
             f"stride (S) must divide context C={self.context}, got {self.stride}"),
            (self.rope_base > 1, f"rope_base must be > 1, got {self.rope_base}"),
        ]


#: Config class of every baseline kind (``rnn``, ``lstm`` and ``gru`` share one).
CONFIG_CLASSES: dict[str, type[BaselineConfig]] = {
    "rnn": RecurrentConfig, "lstm": RecurrentConfig, "gru": RecurrentConfig,
    "clockwork": ClockworkConfig, "transformer": TransformerConfig,
}

_RECURRENT_PRESETS = {
    "quick": {"layers": 2, "hidden": 128, "embedding": 30},
    "paper": {"layers": 5, "hidden": 512, "embedding": 100},
}
_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "rnn": _RECURRENT_PRESETS, "lstm": _RECURRENT_PRESETS, "gru": _RECURRENT_PRESETS,
    "clockwork": {
        "quick": {"modules": 4, "hidden": 64, "embedding": 30},
        "paper": {"modules": 5, "hidden": 512, "embedding": 100},
    },
    "transformer": {
        "quick": {"d_model": 64, "layers": 2, "heads": 4, "context": 64},
        # the authors' "10M" model: d 256, 12 layers, 8 heads, SwiGLU 704, context 1024
        "paper": {"d_model": 256, "layers": 12, "heads": 8, "d_ff": 704, "context": 1024},
    },
}


def baseline_kinds() -> list[str]:
    """Learner kinds with a baseline configuration."""
    return list(CONFIG_CLASSES)


def baseline_preset_names(kind: str) -> list[str]:
    """Preset names of one baseline kind."""
    _check_kind(kind)
    return list(_PRESETS[kind])


def _check_kind(kind: str) -> None:
    if kind not in CONFIG_CLASSES:
        raise ConfigError(f"unknown baseline kind {kind!r}; choose one of {baseline_kinds()}")


def baseline_config(kind: str, data: dict[str, Any] | None = None) -> BaselineConfig:
    """The validated config of a ``kind`` baseline from plain data (``rnn``/``lstm``/``gru``
    fix the ``cell``; a conflicting ``cell`` raises :class:`ConfigError`)."""
    _check_kind(kind)
    data = dict(data or {})
    if CONFIG_CLASSES[kind] is RecurrentConfig:
        cell = data.setdefault("cell", kind)
        if cell != kind:
            raise ConfigError(f"a {kind!r} learner cannot have cell={cell!r}")
    return CONFIG_CLASSES[kind].from_dict(data)


def baseline_preset(kind: str, name: str = "quick", **overrides: Any) -> BaselineConfig:
    """The named preset (``quick`` or ``paper``) of a baseline kind, with overrides."""
    _check_kind(kind)
    if name not in _PRESETS[kind]:
        raise ConfigError(
            f"unknown {kind} preset {name!r}; choose one of {baseline_preset_names(kind)}"
        )
    return baseline_config(kind, {**_PRESETS[kind][name], "name": name, **overrides})
