"""Config types: every field of every config is checked against its annotation."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from sharp.baselines.config import ClockworkConfig, RecurrentConfig, TransformerConfig
from sharp.config import ConfigError, SharpConfig, preset
from sharp.model.learner import Sharp

CLASSES = [SharpConfig, RecurrentConfig, ClockworkConfig, TransformerConfig]


def _wrong_value(hint: object) -> object:
    """A value of the wrong type for ``hint``: a float for an int field, a string for a
    number, a number for a string or a choice."""
    names = str(hint)
    if "int" in names and "float" not in names:
        return 4.0
    if "float" in names:
        return "1e-3"
    return 3


@pytest.mark.parametrize(
    ("cls", "name"),
    [(cls, f.name) for cls in CLASSES for f in dataclasses.fields(cls)],
    ids=lambda value: getattr(value, "__name__", value),
)
def test_every_field_of_every_config_is_type_checked(cls: type, name: str) -> None:
    hint = typing.get_type_hints(cls)[name]
    value = _wrong_value(hint)
    with pytest.raises(ConfigError, match=rf"^{cls.__name__}\.{name} must be .*, got "
                       rf"{value!r} \({type(value).__name__}\)$"):
        cls(**{name: value})


def test_issue_cases_name_the_field_and_the_type() -> None:
    # issue 12, case 5: "'float' object is not iterable" and an error from inside nn.Linear
    with pytest.raises(ConfigError, match=r"SharpConfig\.hidden must be a list of int or an "
                       r"int, got 64\.0 \(float\)"):
        preset("quick", hidden=64.0)
    with pytest.raises(ConfigError, match=r"SharpConfig\.window must be an int, got 4\.0"):
        Sharp(preset("quick", window=4.0))
    with pytest.raises(ConfigError, match=r"SharpConfig\.hidden must be .*, got \[64, 64\.5\]"):
        preset("quick", layers=2, hidden=[64, 64.5])  # was truncated to 64 silently
    with pytest.raises(ConfigError, match=r"SharpConfig\.threads must be an int or None, got "
                       r"True \(bool\)"):
        preset("quick", threads=True)  # a bool is not an int
    with pytest.raises(ConfigError, match=r"TransformerConfig\.heads must be an int, got '4'"):
        TransformerConfig(heads="4")
    with pytest.raises(ConfigError, match=r"RecurrentConfig\.mode must be one of 'tbptt', "
                       r"'paper', got 'fast'"):
        RecurrentConfig(mode="fast")


@pytest.mark.parametrize("make", [lambda **kw: preset("quick", **kw), SharpConfig,
                                  RecurrentConfig, ClockworkConfig, TransformerConfig],
                         ids=["preset", "sharp", "recurrent", "clockwork", "transformer"])
def test_every_config_refuses_a_seed_torch_cannot_take(make) -> None:
    # was accepted, then Sharp(...) raised torch's "Overflow when unpacking long long"
    for seed in (-1, 2**63, 2**70):
        with pytest.raises(ConfigError, match=rf"^seed must be in 0\.\.2\*\*63-1 "
                           rf"\(torch seeds a 64-bit generator\), got {seed}$"):
            make(seed=seed)
    assert make(seed=2**63 - 1).seed == 2**63 - 1


def test_numbers_are_stored_in_their_fields_type() -> None:
    config = preset("quick", lr=1, tau=0, hidden=[64] * 5)
    assert isinstance(config.lr, float) and isinstance(config.tau, float)
    assert config.hidden == (64,) * 5
    assert isinstance(TransformerConfig(rope_base=10_000).rope_base, float)
    numpy = pytest.importorskip("numpy")
    assert type(preset("quick", window=numpy.int64(3)).window) is int
    assert SharpConfig.from_dict(preset("quick").to_dict()) == preset("quick")
