"""Ensemble against separate learners: wake tokens/s of one :class:`SharpEnsemble` of M
members and of M separate learners stepped in turn in one process, back to back.

A script, not a test: timing never decides pass or fail. Run
``python -m sharp.perf.ensemble --preset quick --members 1 3 9``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import numpy as np
import pandas as pd

from sharp.config import SharpConfig, preset
from sharp.engines.ensemble import SharpEnsemble
from sharp.model.learner import Sharp
from sharp.perf.throughput import machine_line


def _streams(config: SharpConfig, members: int, steps: int, seed: int) -> np.ndarray:
    """Uniformly random tokens, one stream per member: (members, steps + W)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, config.vocab_size, (members, steps + config.window))


def _ensemble_rate(ensemble: SharpEnsemble, tokens: np.ndarray, steps: int) -> float:
    """Ensemble wake steps/s over ``steps`` steps (each step advances every member)."""
    w = ensemble.window
    begin = time.perf_counter()
    for i in range(steps):
        ensemble.learn(tokens[:, i : i + w], tokens[:, i + w])
    return steps / (time.perf_counter() - begin)


def _separate_rate(learners: list[Sharp], tokens: np.ndarray, steps: int) -> float:
    """Rounds/s of ``learners`` stepped in turn (one round = one step of each)."""
    w = learners[0].window
    targets = tokens.tolist()
    begin = time.perf_counter()
    for i in range(steps):
        for m, learner in enumerate(learners):
            learner.learn(tokens[m, i : i + w], targets[m][i + w])
    return steps / (time.perf_counter() - begin)


def measure_ensemble(preset_name: str = "quick", members: int = 3, *, steps: int = 200,
                     warmup: int = 30, repeats: int = 3, threads: int = 1, seed: int = 0,
                     engines: tuple[str, ...] = ("fused", "torch")) -> list[dict[str, Any]]:
    """Median wake throughput over ``repeats`` runs of ``steps`` steps (after ``warmup``)
    with every memory-0 gate open (tau = 0, the most work per step): one row for the
    ensemble of ``members`` and one for ``members`` separate learners of each engine.
    ``tokens_per_s`` counts tokens over all members; ``steps_per_s`` is ensemble steps
    (or rounds of the separate learners) per second."""
    config = preset(preset_name, tau=0.0, threads=threads)
    seeds = list(range(seed, seed + members))
    tokens = _streams(config, members, warmup + repeats * steps, seed)
    runs: list[tuple[str, Any, Any]] = [("ensemble", SharpEnsemble(config, seeds),
                                         _ensemble_rate)]
    for engine in engines:
        learners = [Sharp(config.replace(seed=s, engine=engine)) for s in seeds]
        runs.append((f"separate ({learners[0].engine})", learners, _separate_rate))
    rows = []
    for name, subject, rate in runs:
        rate(subject, tokens, warmup)
        rates = [rate(subject, tokens[:, warmup + r * steps :], steps) for r in range(repeats)]
        median = statistics.median(rates)
        rows.append({"preset": preset_name, "hidden": config.hidden[0], "members": members,
                     "how": name, "steps_per_s": median, "tokens_per_s": median * members,
                     "threads": threads})
    return rows


def ensemble_table(preset_name: str = "quick", members: tuple[int, ...] = (1, 3, 9),
                   **kwargs: Any) -> pd.DataFrame:
    """:func:`measure_ensemble` for every ensemble size in ``members``, one table."""
    return pd.DataFrame([row for m in members
                         for row in measure_ensemble(preset_name, m, **kwargs)])


def main(argv: list[str] | None = None) -> None:
    """Print :func:`ensemble_table` for the command line's preset and sizes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--members", type=int, nargs="+", default=[1, 3, 9])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    table = ensemble_table(args.preset, tuple(args.members), steps=args.steps,
                           threads=args.threads)
    print(machine_line())
    print(table.to_string(index=False, float_format=lambda v: f"{v:,.1f}"))


if __name__ == "__main__":
    main()
