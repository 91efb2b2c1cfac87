"""SHARP: Sleep-based Hierarchical Accelerated Replay — a streaming sequence learner kit."""

from sharp.config import ConfigError, SharpConfig, preset, preset_names
from sharp.model.learner import Sharp
from sharp.protocol import EvalResult, Learner, Sleeper, StepResult

__all__ = [
    "ConfigError", "EvalResult", "Learner", "Sharp", "SharpConfig", "Sleeper", "StepResult",
    "preset", "preset_names",
]
__version__ = "0.1.0"
