"""Building learners by name, so processes, reports and the CLI never special-case one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from sharp.config import SharpConfig, check_instance, preset
from sharp.protocol import ENSEMBLE_SUFFIX, Learner

if TYPE_CHECKING:
    from torch import Tensor

    from sharp.baselines.ensemble import BaselineEnsemble
    from sharp.engines.ensemble import SharpEnsemble


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


#: Kinds :func:`build_learner` accepts.
LEARNER_KINDS = ("sharp", "rnn", "lstm", "gru", "clockwork", "transformer")
#: The baselines among them (SPEC §7).
BASELINE_KINDS = LEARNER_KINDS[1:]


def baseline_spec(
    kind: str, preset: str = "quick", label: str | None = None, **overrides: Any
) -> LearnerSpec:
    """A baseline recipe (``rnn``, ``lstm``, ``gru``, ``clockwork``, ``transformer``) from a
    named preset (``quick`` or ``paper``) with config overrides, e.g.
    ``baseline_spec("lstm", mode="paper")``. The label defaults to the config's display
    name, which shows any non-default streaming or evaluation mode."""
    from sharp.baselines.config import baseline_preset

    config = baseline_preset(kind, preset, **overrides)
    return LearnerSpec(kind, config.to_dict(), config.label if label is None else label)


_SPEC_EXAMPLE = "sharp.runs.registry.sharp_spec('quick')"


def build_learner(spec: LearnerSpec, table: Tensor | None = None) -> Learner:
    """Instantiate the learner a :class:`LearnerSpec` describes; ``table`` is the frozen
    input table of a config with ``inputs="dense"`` (None: read from its ``input_table``).
    Raises TypeError for anything but a :class:`LearnerSpec`, ValueError for an unknown
    kind, :class:`~sharp.config.ConfigError` for an invalid config."""
    check_instance(spec, LearnerSpec, "build_learner", _SPEC_EXAMPLE)
    if spec.kind == "sharp":
        from sharp.model.learner import Sharp

        return Sharp(SharpConfig.from_dict(spec.config), table)
    if spec.kind in ("rnn", "lstm", "gru"):
        from sharp.baselines import RecurrentBaseline, RecurrentConfig, baseline_config

        return RecurrentBaseline(cast(RecurrentConfig, baseline_config(spec.kind, spec.config)),
                                 table)
    if spec.kind == "clockwork":
        from sharp.baselines import ClockworkConfig, ClockworkRNN, baseline_config

        return ClockworkRNN(cast(ClockworkConfig, baseline_config(spec.kind, spec.config)),
                            table)
    if spec.kind == "transformer":
        from sharp.baselines import TransformerBaseline, TransformerConfig, baseline_config

        return TransformerBaseline(
            cast(TransformerConfig, baseline_config(spec.kind, spec.config)), table
        )
    raise ValueError(f"unknown learner kind {spec.kind!r}; known kinds: {list(LEARNER_KINDS)}")


def build_from_state(state: dict[str, Any]) -> Learner | SharpEnsemble | BaselineEnsemble:
    """The learner or ensemble (kind ``<kind>-ensemble``, with the state's ``seeds``) of a
    ``state_dict()``'s kind and config, freshly built: load the state into it to restore
    it. A learner or ensemble with dense inputs gets the frozen table the state holds,
    if it holds one (else its config's ``input_table`` is read). Raises KeyError for a
    missing ``kind``, ``config`` or ``seeds`` and what :func:`build_learner` /
    :func:`build_ensemble` raise."""
    kind, config = state["kind"], state["config"]
    table = state.get("inputs", {}).get("table")
    if isinstance(kind, str) and kind.endswith(ENSEMBLE_SUFFIX):
        return build_ensemble(LearnerSpec(kind.removesuffix(ENSEMBLE_SUFFIX), config),
                              state["seeds"], table)
    return build_learner(LearnerSpec(kind, config), table)


def build_ensemble(spec: LearnerSpec, seeds: Sequence[int], table: Tensor | None = None
                   ) -> SharpEnsemble | BaselineEnsemble:
    """An ensemble (SPEC §10) of ``len(seeds)`` learners of ``spec``, member m what
    ``build_learner(spec.with_seed(seeds[m]), table)`` would compute (``table``: the
    frozen input table of ``inputs="dense"``, None: read from the config's ``input_table``):
    a :class:`~sharp.engines.ensemble.SharpEnsemble` or a
    :class:`~sharp.baselines.ensemble.BaselineEnsemble`. Raises TypeError for anything but
    a :class:`LearnerSpec` or seeds that are not a sequence of ints, ValueError for an
    unknown kind or an empty or repeated seed list, :class:`~sharp.config.ConfigError` for
    an invalid config."""
    check_instance(spec, LearnerSpec, "build_ensemble", _SPEC_EXAMPLE)
    if spec.kind == "sharp":
        from sharp.engines.ensemble import SharpEnsemble

        return SharpEnsemble(SharpConfig.from_dict(spec.config), seeds, table=table)
    if spec.kind in BASELINE_KINDS:
        from sharp.baselines import baseline_config
        from sharp.baselines.ensemble import baseline_ensemble

        return baseline_ensemble(baseline_config(spec.kind, spec.config), seeds, table)
    raise ValueError(f"unknown learner kind {spec.kind!r}; known kinds: {list(LEARNER_KINDS)}")
