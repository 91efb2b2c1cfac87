"""The experiments of SPEC §8 (2–10), each a function returning a tidy DataFrame, a
figure function and ``tiny`` / ``quick`` / ``paper`` presets, collected in
:data:`REGISTRY` (name -> :class:`Experiment`). A learner's configuration is one
``config`` (:class:`~sharp.config.SharpConfig`) per experiment, which each condition
changes in the one field it is about; a mapping given as ``config`` to a registered
experiment changes fields of its preset's configuration.

>>> from sharp.experiments import REGISTRY, credit_assignment
>>> frame = credit_assignment(samples=2000, reps=2)          # doctest: +SKIP
>>> frame = REGISTRY["credit_assignment"]("quick", config={"hidden": 64})  # doctest: +SKIP
>>> REGISTRY["credit_assignment"].figure(frame).show()       # doctest: +SKIP
"""

from sharp.experiments.acceleration import acceleration, acceleration_figure
from sharp.experiments.common import REGISTRY, Experiment, rep_seeds, run_jobs
from sharp.experiments.credit_assignment import credit_assignment, credit_assignment_figure
from sharp.experiments.drift import drift, drift_figure
from sharp.experiments.head_capacity import head_capacity, head_capacity_figure
from sharp.experiments.memory_capacity import (
    memory_capacity,
    memory_capacity_figure,
    probe_error,
)
from sharp.experiments.nonstationarity import nonstationarity, nonstationarity_figure
from sharp.experiments.replay_quality import mmd2_unbiased, replay_quality, replay_quality_figure
from sharp.experiments.report import (
    ExperimentRun,
    run_experiment,
    write_experiment,
    write_index,
)
from sharp.experiments.sleep_ablation import (
    WakeAllMemories,
    sleep_ablation,
    sleep_ablation_figure,
)
from sharp.experiments.threshold_sweep import threshold_sweep, threshold_sweep_figure

__all__ = [
    "REGISTRY",
    "Experiment",
    "ExperimentRun",
    "WakeAllMemories",
    "acceleration",
    "acceleration_figure",
    "credit_assignment",
    "credit_assignment_figure",
    "drift",
    "drift_figure",
    "head_capacity",
    "head_capacity_figure",
    "memory_capacity",
    "memory_capacity_figure",
    "mmd2_unbiased",
    "nonstationarity",
    "nonstationarity_figure",
    "probe_error",
    "rep_seeds",
    "replay_quality",
    "replay_quality_figure",
    "run_experiment",
    "run_jobs",
    "sleep_ablation",
    "sleep_ablation_figure",
    "threshold_sweep",
    "threshold_sweep_figure",
    "write_experiment",
    "write_index",
]
