"""SHARP configuration: one validated, immutable object with named presets (SPEC §1)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

HeadType = Literal["film", "concat"]
InitType = Literal["default", "reservoir"]
EngineType = Literal["auto", "fused", "torch"]


class ConfigError(ValueError):
    """A configuration value is invalid or inconsistent with another one."""


@dataclass(frozen=True)
class SharpConfig:
    """Every knob of a SHARP learner. Defaults are the paper's text8 configuration.

    ``hidden`` may be given as one int (the same size for every layer) or one size per
    layer; it is stored as a tuple. ``accel=None`` means ``a = window`` and
    ``sleep_steps=None`` means ``window**layers + 1`` (1025 for the defaults).
    ``engine`` picks how wake and sleep run: ``fused`` (the C kernels of
    :mod:`sharp.engines.fused`), ``torch`` (eager torch ops, the readable reference) or ``auto``
    (fused where it can be built, else torch); all compute the same thing.
    """

    vocab_size: int = 27
    layers: int = 5
    hidden: tuple[int, ...] | int = 512
    embedding: int = 100
    window: int = 4
    accel: int | None = None
    head_type: HeadType = "film"
    head_layers: int = 2
    lr: float = 1e-4
    lr_slowdown: float = 0.1
    weight_decay: float = 1e-12
    tau: float = 1e-2
    ema: float = 0.9
    tag_buffer: int = 20
    sleep_every: int = 20_000
    sleep_steps: int | None = None
    top_k: int | None = None
    temperature: float = 1.0
    init: InitType = "default"
    device: str = "auto"
    threads: int | None = 1
    engine: EngineType = "auto"
    seed: int = 0
    name: str = field(default="custom", compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.hidden, int):
            object.__setattr__(self, "hidden", (self.hidden,) * self.layers)
        else:
            object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        self.validate()

    # -- derived values -------------------------------------------------------------
    @property
    def a(self) -> int:
        """Acceleration / downsampling factor (layer l ticks every a**l tokens)."""
        return self.window if self.accel is None else self.accel

    @property
    def strides(self) -> tuple[int, ...]:
        """Tick period a**l of every layer l."""
        return tuple(self.a**level for level in range(self.layers))

    @property
    def replay_steps(self) -> int:
        """Replay steps per tag in sleep (``sleep_steps`` or W**L + 1)."""
        return self.window**self.layers + 1 if self.sleep_steps is None else self.sleep_steps

    def head_lr(self, level: int) -> float:
        """Learning rate of head ``level``: lr * slowdown**level."""
        return self.lr * self.lr_slowdown**level

    # -- validation -----------------------------------------------------------------
    def validate(self) -> None:
        """Raise :class:`ConfigError` with a message saying what to change."""
        checks: list[tuple[bool, str]] = [
            (self.vocab_size >= 2, f"vocab_size must be >= 2, got {self.vocab_size}"),
            (self.layers >= 1, f"layers must be >= 1, got {self.layers}"),
            (
                len(self.hidden) == self.layers,
                f"hidden has {len(self.hidden)} sizes but layers={self.layers}: give one "
                "size per layer, or a single int for all layers",
            ),
            (all(h >= 1 for h in self.hidden), f"hidden sizes must be >= 1, got {self.hidden}"),
            (self.embedding >= 1, f"embedding must be >= 1, got {self.embedding}"),
            (self.window >= 1, f"window (W) must be >= 1, got {self.window}"),
            (self.accel is None or self.accel >= 1, f"accel (a) must be >= 1, got {self.accel}"),
            (self.head_type in ("film", "concat"), f"head_type must be 'film' or 'concat', "
             f"got {self.head_type!r}"),
            (self.head_layers >= 1, f"head_layers must be >= 1, got {self.head_layers}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.lr_slowdown > 0, f"lr_slowdown must be > 0, got {self.lr_slowdown}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (self.tau >= 0, f"tau must be >= 0, got {self.tau}"),
            (0 <= self.ema < 1, f"ema must be in [0, 1), got {self.ema}"),
            (self.tag_buffer >= 0, f"tag_buffer must be >= 0, got {self.tag_buffer}"),
            (self.sleep_every >= 1, f"sleep_every must be >= 1, got {self.sleep_every}"),
            (self.sleep_steps is None or self.sleep_steps >= 1,
             f"sleep_steps must be >= 1, got {self.sleep_steps}"),
            (self.top_k is None or 1 <= self.top_k <= self.vocab_size,
             f"top_k must be None or in 1..vocab_size={self.vocab_size}, got {self.top_k}"),
            (self.temperature > 0, f"temperature must be > 0, got {self.temperature}"),
            (self.init in ("default", "reservoir"), f"init must be 'default' or 'reservoir', "
             f"got {self.init!r}"),
            (self.engine in ("auto", "fused", "torch"), f"engine must be 'auto', 'fused' or "
             f"'torch', got {self.engine!r}"),
            (self.threads is None or self.threads >= 1,
             f"threads must be None or >= 1, got {self.threads}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    # -- conversion -----------------------------------------------------------------
    def replace(self, **changes: Any) -> SharpConfig:
        """A copy with ``changes`` applied (and validated)."""
        if "layers" in changes and "hidden" not in changes and len(set(self.hidden)) == 1:
            changes["hidden"] = self.hidden[0]
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (JSON-safe) used in checkpoints and reports."""
        data = dataclasses.asdict(self)
        data["hidden"] = list(self.hidden)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SharpConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError`."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config keys {unknown}; known keys: {sorted(known)}")
        return cls(**data)


_PRESETS: dict[str, dict[str, Any]] = {
    "text8": {},
    "text8-small": {"hidden": 128, "embedding": 30},
    "pg19-char": {"hidden": 512, "head_layers": 4, "lr_slowdown": 0.25},
    "simulation": {
        "layers": 3, "hidden": 100, "embedding": 30, "head_layers": 3, "tau": 1e-3,
        "tag_buffer": 100,
    },
    "quick": {"hidden": 128, "embedding": 30, "sleep_every": 5_000},
}


def preset_names() -> list[str]:
    """Names accepted by :func:`preset`."""
    return list(_PRESETS)


def preset(name: str, **overrides: Any) -> SharpConfig:
    """The named configuration (``text8``, ``text8-small``, ``pg19-char``, ``simulation``,
    ``quick``) with ``overrides`` applied."""
    if name not in _PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {preset_names()}")
    return SharpConfig.from_dict({**_PRESETS[name], "name": name, **overrides})
