"""Ensembles (SPEC §10): M learners of one configuration stacked along a member axis."""

from sharp.engines.ensemble.sharp import EnsembleBlock, EnsembleStep, SharpEnsemble

__all__ = ["EnsembleBlock", "EnsembleStep", "SharpEnsemble"]
