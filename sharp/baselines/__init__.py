"""Baselines of SPEC §7, each implementing the learner protocol like :class:`sharp.Sharp`:
RNN / LSTM / GRU (:class:`RecurrentBaseline`), the clockwork RNN (:class:`ClockworkRNN`)
and a small decoder-only transformer (:class:`TransformerBaseline`)."""

from sharp.baselines.clockwork import ClockworkRNN
from sharp.baselines.config import (
    BaselineConfig,
    ClockworkConfig,
    RecurrentConfig,
    TransformerConfig,
    baseline_config,
    baseline_kinds,
    baseline_preset,
    baseline_preset_names,
)
from sharp.baselines.recurrent import RecurrentBaseline
from sharp.baselines.transformer import TransformerBaseline

__all__ = [
    "BaselineConfig",
    "ClockworkConfig",
    "ClockworkRNN",
    "RecurrentBaseline",
    "RecurrentConfig",
    "TransformerBaseline",
    "TransformerConfig",
    "baseline_config",
    "baseline_kinds",
    "baseline_preset",
    "baseline_preset_names",
]
