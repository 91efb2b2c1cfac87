"""SHARP configuration: one validated, immutable object with named presets (SPEC §1)."""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

HeadType = Literal["film", "concat"]
InitType = Literal["default", "reservoir"]
EngineType = Literal["auto", "fused", "torch"]
InputType = Literal["embedding", "dense"]


class ConfigError(ValueError):
    """A configuration value is invalid or inconsistent with another one."""


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _describe(hint: Any) -> str:
    """``int | None`` -> ``"an int or None"``: the expected type in words."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(arg) for arg in args)
    if origin is tuple:
        return f"a list of {args[0].__name__}"
    words = {type(None): "None", int: "an int", float: "a finite number (int or float)",
             str: "a string", bool: "a bool"}
    return words.get(hint, f"a {getattr(hint, '__name__', hint)}")


def _coerce(value: Any, hint: Any) -> tuple[bool, Any]:
    """Whether ``value`` has type ``hint``, and its normal form: an int for an integral
    number, a float for a finite real one, a tuple for a list. A bool is not a number, and
    no config field takes an infinite or NaN float."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            ok, normal = _coerce(value, arg)
            if ok:
                return True, normal
        return False, value
    if origin is Literal:
        return any(type(value) is type(arg) and value == arg for arg in args), value
    if origin is tuple:
        if not isinstance(value, tuple | list):
            return False, value
        items = [_coerce(item, args[0]) for item in value]
        return all(ok for ok, _ in items), tuple(normal for _, normal in items)
    if hint is type(None):
        return value is None, value
    if hint in (int, float):
        number = numbers.Integral if hint is int else numbers.Real
        ok = isinstance(value, number) and not isinstance(value, bool)
        ok = ok and (hint is int or math.isfinite(value))
        return ok, hint(value) if ok else value
    return isinstance(value, hint), value


def check_field_types(config: Any) -> None:
    """Check every field of the dataclass instance ``config`` against its annotation and
    store the field's normal form (see below); the one type check of every config class.

    Accepted: an int (not a bool) for ``int``, a finite int or float for ``float`` (not
    inf or NaN), a list or
    tuple of such items for ``tuple[T, ...]`` (stored as a tuple), one of the values of a
    ``Literal``, ``None`` where the annotation allows it. Raises :class:`ConfigError`
    naming the class, the field, the expected type and the value given.
    """
    cls = type(config)
    for name, hint in _field_types(cls).items():
        value = getattr(config, name)
        ok, normal = _coerce(value, hint)
        if not ok:
            raise ConfigError(f"{cls.__name__}.{name} must be {_describe(hint)}, got "
                              f"{value!r} ({type(value).__name__})")
        object.__setattr__(config, name, normal)


#: The largest seed: ``torch.manual_seed`` seeds a 64-bit generator, and every seed is
#: stored (checkpoints, run files) as a signed 64-bit int, so a seed is in 0..2**63-1.
MAX_SEED = 2**63 - 1


def seed_check(seed: int, name: str = "seed") -> tuple[bool, str]:
    """The check of one seed (a config's ``seed``, an ensemble's ``seeds``) as an (ok,
    message) pair: an int in 0..:data:`MAX_SEED`, the message naming ``name``."""
    return (0 <= seed <= MAX_SEED,
            f"{name} must be in 0..2**63-1 (torch seeds a 64-bit generator), got {seed}")


def shared_checks(config: Any) -> list[tuple[bool, str]]:
    """The checks of the fields every config shares (SharpConfig and every baseline config),
    as (ok, message) pairs: ``threads`` (None or >= 1), ``seed`` (:func:`seed_check`) and
    the input fields (SPEC §11): ``inputs="dense"`` needs the vector size ``input_dim``
    (e.g. 768 for GPT-2); ``inputs="embedding"`` (a learned embedding) takes neither
    ``input_dim`` nor ``input_table`` (a model folder or safetensors file holding the frozen
    table)."""
    inputs, input_dim, input_table = config.inputs, config.input_dim, config.input_table
    dense = inputs == "dense"
    return [
        (config.threads is None or config.threads >= 1,
         f"threads must be None or >= 1, got {config.threads}"),
        seed_check(config.seed),
        (not dense or (input_dim is not None and input_dim >= 1),
         f"inputs='dense' needs input_dim, the size D of the frozen input vectors (e.g. 768 "
         f"for GPT-2), >= 1; got {input_dim}"),
        (dense or (input_dim is None and input_table is None),
         f"input_dim ({input_dim}) and input_table ({input_table!r}) describe a frozen input "
         "table: set inputs='dense' to use one, or leave both None for a learned embedding"),
    ]


def check_instance(value: object, expected: type | tuple[type, ...], owner: str,
                   example: str) -> None:
    """Raise TypeError unless ``value`` is an ``expected`` (a class or a tuple of them):
    "``owner`` needs a <expected> (e.g. ``example``), got <its type>" — the check of what
    every learner, ensemble and builder is given (a config, a recipe, a learner), so that a
    dict, a preset name or None is refused by name instead of failing deep inside."""
    if not isinstance(value, expected):
        classes = expected if isinstance(expected, tuple) else (expected,)
        names = " or ".join(cls.__name__ for cls in classes)
        raise TypeError(f"{owner} needs a {names} (e.g. {example}), got "
                        f"{type(value).__name__}")


@dataclass(frozen=True)
class SharpConfig:
    """Every knob of a SHARP learner. Defaults are the paper's text8 configuration.

    ``hidden`` may be given as one int (the same size for every layer) or one size per
    layer; it is stored as a tuple. ``accel=None`` means ``a = window`` and
    ``sleep_steps=None`` means ``window**layers + 1`` (1025 for the defaults).
    ``inputs`` says how memory 0 reads a token (SPEC §2, §11): ``embedding`` (a learned
    embedding V -> E; memory 0 recalls tokens by cross-entropy) or ``dense`` (the token's row
    of a frozen (V, ``input_dim``) table given from outside, through a linear to E; memory 0
    recalls those vectors by mean squared error, so ``tau`` is then in squared units). The
    table is passed to :class:`~sharp.model.learner.Sharp` or read from ``input_table``, a
    local model folder or safetensors file (:func:`~sharp.model.inputs.read_table`). In
    sleep, dreamed tokens are sampled with ``temperature`` and ``top_k`` (None: the full
    softmax) and re-embedded with the same frozen table.
    ``engine`` picks how wake and sleep run: ``fused`` (the C kernels of
    :mod:`sharp.engines.fused`), ``torch`` (eager torch ops, the readable reference) or ``auto``
    (fused where it can be built, else torch); all compute the same thing. ``device="auto"``
    runs a learner on the CPU and an ensemble of them on CUDA or MPS where there is one (the
    rule: :mod:`sharp.engines.runtime`); a torch device name overrides it.
    """

    vocab_size: int = 27
    layers: int = 5
    hidden: tuple[int, ...] | int = 512
    embedding: int = 100
    inputs: InputType = "embedding"
    input_dim: int | None = None
    input_table: str | None = None
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
        check_field_types(self)
        if isinstance(self.hidden, int):
            object.__setattr__(self, "hidden", (self.hidden,) * self.layers)
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
        """Raise :class:`ConfigError` with a message saying what to change (also for a
        device this machine does not have: :func:`~sharp.engines.runtime.check_device`)."""
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
            (self.head_layers >= 1, f"head_layers must be >= 1, got {self.head_layers}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.lr_slowdown > 0, f"lr_slowdown must be > 0, got {self.lr_slowdown}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (self.tau >= 0, f"tau must be >= 0, got {self.tau}"),
            (0 <= self.ema < 1, f"ema must be in [0, 1), got {self.ema}"),
            (self.tag_buffer >= 1,
             f"tag_buffer must be >= 1 (sleep replays the tags it keeps), got {self.tag_buffer}"),
            (self.sleep_every >= 1, f"sleep_every must be >= 1, got {self.sleep_every}"),
            (self.sleep_steps is None or self.sleep_steps >= 1,
             f"sleep_steps must be >= 1, got {self.sleep_steps}"),
            (self.top_k is None or 1 <= self.top_k <= self.vocab_size,
             f"top_k must be None or in 1..vocab_size={self.vocab_size}, got {self.top_k}: set "
             f"top_k=None (--set top_k=null) or at most {self.vocab_size}, or use a vocabulary "
             f"of at least {self.top_k} tokens (a token preset reads a book corpus through a "
             "tokenizer)"),
            (self.inputs != "dense" or self.engine != "fused",
             "engine='fused' reads token ids through a learned embedding, not dense input "
             "vectors: use engine='torch' (--set engine=torch) or 'auto'"),
            (self.temperature > 0, f"temperature must be > 0, got {self.temperature}"),
            *shared_checks(self),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        from sharp.engines.runtime import check_device  # (runtime imports this module)

        check_device(self.device)

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
    # SPEC §11: the authors' token-level PG-19 run, GPT-2's frozen 50,257 x 768 input
    # embeddings read through input_table (or passed as a tensor); W**L + 1 = 257 replay
    # steps. The fused kernels read token ids only, so it runs the torch engine.
    "pg19-gpt2": {
        "vocab_size": 50_257, "layers": 4, "hidden": 512, "embedding": 128, "head_layers": 4,
        "lr": 1e-4, "lr_slowdown": 0.5, "tag_buffer": 50, "tau": 1e-2, "sleep_every": 20_000,
        "top_k": 50, "inputs": "dense", "input_dim": 768, "engine": "torch",
    },
    # The same shape scaled to run in minutes on a CPU, for a small tokenizer with a
    # learned embedding (give vocab_size=<the tokenizer's size>).
    "tokens-small": {
        "vocab_size": 4_096, "layers": 4, "hidden": 128, "embedding": 32, "lr_slowdown": 0.5,
        "sleep_every": 5_000, "top_k": 50,
    },
}


def preset_names() -> list[str]:
    """Names accepted by :func:`preset`."""
    return list(_PRESETS)


def preset(name: str, **overrides: Any) -> SharpConfig:
    """The named configuration (``text8``, ``text8-small``, ``pg19-char``, ``simulation``,
    ``quick``, ``pg19-gpt2``, ``tokens-small``) with ``overrides`` applied."""
    if name not in _PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {preset_names()}")
    return SharpConfig.from_dict({**_PRESETS[name], "name": name, **overrides})
