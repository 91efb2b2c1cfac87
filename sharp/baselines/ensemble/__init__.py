"""Ensembles of baselines (SPEC §10): M independent baseline learners of one kind and one
configuration in one process, each on its own stream and seed, their weights stacked along a
leading member axis so that one batched step advances all M.

Member m computes what the separate learner of ``config.replace(seed=seeds[m])`` computes on
its stream: the same streaming rule (the recurrent baselines' TBPTT blocks or the authors'
stride-1 windows, the transformer's context blocks and training chunks), the same Adam
(:class:`~sharp.engines.optim.FusedAdam`'s kernel, per member, through
:class:`~sharp.engines.ensemble.adam.BatchedAdam`), up to the summation order of batched
matrix products. Members at the same stream position (always, for members started together)
step as one batch; members at different positions (e.g. gathered by
:meth:`BaselineEnsemble.from_learners`) step in groups of equal position.

* Recurrent baselines (RNN, LSTM, GRU, clockwork): torch's recurrent modules have no
  ``vmap`` batching rule, so their cells are written here over stacked weights with batched
  matrix products (:class:`StackedStack`, :class:`StackedClockwork`), in torch's gate order
  and formulas.
* Transformer: its own :class:`~sharp.baselines.transformer.Decoder`, called per member
  through ``torch.func.functional_call`` under ``torch.func.vmap``.

With dense inputs (SPEC §11) the members share one frozen (V, D) table, held once (never
stacked, never trained) and read wherever token ids enter: every member's rows of it go
through that member's own input projection, as in its separate learner.

Evaluation runs every member's slice through that member's weights with the separate
learner's own code (in one scratch learner), so it is the member's evaluation exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from sharp.baselines.config import (
    BaselineConfig,
    ClockworkConfig,
    RecurrentConfig,
    TransformerConfig,
)
from sharp.baselines.ensemble.base import BaselineEnsemble
from sharp.baselines.ensemble.recurrent import RecurrentEnsemble
from sharp.baselines.ensemble.transformer import TransformerEnsemble
from sharp.config import check_instance

__all__ = ["BaselineEnsemble", "RecurrentEnsemble", "TransformerEnsemble", "baseline_ensemble"]


def baseline_ensemble(config: BaselineConfig, seeds: Sequence[int],
                      table: Tensor | None = None) -> BaselineEnsemble:
    """An ensemble of ``len(seeds)`` baselines of ``config`` (any baseline kind), member m
    seeded with ``seeds[m]``; ``table`` is the frozen (V, D) input table of a config with
    ``inputs="dense"`` (None: read from its ``input_table``), as for the separate learners.
    Raises TypeError for a configuration that is no baseline's or seeds that are not a
    sequence of ints, ValueError for an empty or repeated seed list and for a missing or
    mis-shaped table (:func:`~sharp.model.inputs.input_table`).

    Example:
        >>> from sharp.baselines.config import baseline_preset
        >>> ensemble = baseline_ensemble(baseline_preset("gru", "quick", hidden=8,
        ...                              embedding=4, vocab_size=5, window=2), [0, 1, 2])
        >>> step = ensemble.learn([[0, 1], [2, 3], [4, 0]], [2, 4, 1])
        >>> tuple(step.logits.shape), tuple(step.loss.shape)
        ((3, 5), (3,))
    """
    check_instance(config, BaselineConfig, "baseline_ensemble",
                   "sharp.baselines.baseline_preset('lstm')")
    if isinstance(config, RecurrentConfig | ClockworkConfig):
        return RecurrentEnsemble(config, seeds, table)
    if isinstance(config, TransformerConfig):
        return TransformerEnsemble(config, seeds, table)
    raise TypeError(f"no baseline ensemble for a {type(config).__name__}")
