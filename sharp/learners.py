"""Building learners by name, so processes, reports and the CLI never special-case one."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sharp.config import SharpConfig, preset
from sharp.protocol import Learner


@dataclass(frozen=True)
class LearnerSpec:
    """A picklable recipe for a learner: its kind, a display name and its config."""

    kind: str
    config: dict[str, Any] = field(default_factory=dict)
    label: str = ""

    @property
    def name(self) -> str:
        """Display name (the label, else the kind)."""
        return self.label or self.kind

    def with_seed(self, seed: int) -> LearnerSpec:
        """The same recipe with another seed."""
        return LearnerSpec(self.kind, {**self.config, "seed": seed}, self.label)


def sharp_spec(preset_name: str = "quick", label: str = "SHARP", **overrides: Any) -> LearnerSpec:
    """A SHARP recipe from a named preset with overrides."""
    return LearnerSpec("sharp", preset(preset_name, **overrides).to_dict(), label)


def build_learner(spec: LearnerSpec) -> Learner:
    """Instantiate the learner a :class:`LearnerSpec` describes."""
    if spec.kind == "sharp":
        from sharp.learner import Sharp

        return Sharp(SharpConfig.from_dict(spec.config))
    raise ValueError(f"unknown learner kind {spec.kind!r}; known kinds: ['sharp']")
