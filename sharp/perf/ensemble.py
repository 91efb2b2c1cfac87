"""Ensemble against separate learners: streaming tokens/s of one ensemble of M members
(:func:`~sharp.runs.registry.build_ensemble`; a SHARP ensemble in device blocks, as the job
runner streams it: :func:`~sharp.perf.device.ensemble_rate`) and of M separate learners
stepped in turn in one process, back to back, for SHARP or any baseline kind.

A script, not a test: timing never decides pass or fail. Run
``python -m sharp.perf.ensemble --kind lstm --preset quick --members 1 3 9``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import numpy as np
import pandas as pd

from sharp.perf.device import ensemble_rate
from sharp.perf.throughput import machine_line
from sharp.protocol import Learner
from sharp.runs.registry import (
    LEARNER_KINDS,
    LearnerSpec,
    baseline_spec,
    build_ensemble,
    build_learner,
    sharp_spec,
)


def _separate_rate(learners: list[Learner], tokens: np.ndarray, steps: int) -> float:
    """Rounds/s of ``learners`` stepped in turn (one round = one step of each)."""
    w = learners[0].window
    targets = tokens.tolist()
    begin = time.perf_counter()
    for i in range(steps):
        for m, learner in enumerate(learners):
            learner.learn(tokens[m, i : i + w], targets[m][i + w])
    return steps / (time.perf_counter() - begin)


def _step_rate(ensemble: Any, tokens: np.ndarray, steps: int) -> float:
    """Ensemble steps/s of ``ensemble`` driven one ``learn`` call per step (for SHARP a
    device block of one, read back every step) on ``tokens`` (M, >= steps + W)."""
    w = ensemble.window
    begin = time.perf_counter()
    for i in range(steps):
        ensemble.learn(tokens[:, i : i + w], tokens[:, i + w])
    return steps / (time.perf_counter() - begin)


def _specs(kind: str, preset_name: str, threads: int, engines: tuple[str, ...]
           ) -> tuple[LearnerSpec, list[LearnerSpec]]:
    """The ensemble's recipe and those of the separate learners it is held against: SHARP
    with every memory-0 gate open (tau = 0, the most work per step), once per engine; a
    baseline as its preset makes it."""
    if kind == "sharp":
        spec = sharp_spec(preset_name, tau=0.0, threads=threads)
        return spec, [LearnerSpec("sharp", {**spec.config, "engine": engine}) for engine in engines]
    spec = baseline_spec(kind, preset_name, threads=threads)
    return spec, [spec]


def compare_ensemble(kind: str = "sharp", preset_name: str = "quick", members: int = 3, *,
                     steps: int = 200, warmup: int = 30, repeats: int = 3, threads: int = 1,
                     seed: int = 0, engines: tuple[str, ...] = ("fused", "torch")
                     ) -> list[dict[str, Any]]:
    """Median streaming throughput over ``repeats`` runs of ``steps`` steps (after
    ``warmup``) of a ``kind`` learner (``sharp`` or a baseline kind) at preset
    ``preset_name``: one row for the ensemble of ``members`` (for SHARP also one driven by
    per-step ``learn`` calls rather than device blocks) and one for ``members`` separate
    learners (for SHARP, of each of ``engines``). ``tokens_per_s`` counts tokens
    over all members; ``steps_per_s`` is ensemble steps (or rounds of the separate
    learners) per second. Raises ValueError for an unknown kind or preset."""
    if kind not in LEARNER_KINDS:
        raise ValueError(f"unknown learner kind {kind!r}; known kinds: {list(LEARNER_KINDS)}")
    spec, separate = _specs(kind, preset_name, threads, engines)
    seeds = list(range(seed, seed + members))
    ensemble = build_ensemble(spec, seeds)
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, ensemble.vocab_size,
                          (members, warmup + repeats * steps + ensemble.window))
    runs: list[tuple[str, Any, Any]] = [("ensemble", ensemble, ensemble_rate)]
    if kind == "sharp":
        runs.append(("ensemble (per-step learn)", ensemble, _step_rate))
    for recipe in separate:
        learners = [build_learner(recipe.with_seed(s)) for s in seeds]
        engine = getattr(learners[0], "engine", None)
        runs.append(("separate" + (f" ({engine})" if engine else ""), learners,
                     _separate_rate))
    rows = []
    for name, subject, rate in runs:
        rate(subject, tokens, warmup)
        rates = [rate(subject, tokens[:, warmup + r * steps :], steps) for r in range(repeats)]
        median = statistics.median(rates)
        rows.append({"kind": kind, "preset": preset_name, "members": members, "how": name,
                     "steps_per_s": median, "tokens_per_s": median * members,
                     "threads": threads, "parameters": ensemble.parameter_count()})
    return rows


def ensemble_table(kind: str = "sharp", preset_name: str = "quick",
                   members: tuple[int, ...] = (1, 3, 9), **kwargs: Any) -> pd.DataFrame:
    """:func:`compare_ensemble` for every ensemble size in ``members``, one table."""
    return pd.DataFrame([row for m in members
                         for row in compare_ensemble(kind, preset_name, m, **kwargs)])


def main(argv: list[str] | None = None) -> None:
    """Print :func:`ensemble_table` for the command line's kinds, preset and sizes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", nargs="+", default=["sharp"], choices=LEARNER_KINDS)
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--members", type=int, nargs="+", default=[1, 3, 9])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    table = pd.concat([ensemble_table(kind, args.preset, tuple(args.members),
                                      steps=args.steps, threads=args.threads)
                       for kind in args.kind], ignore_index=True)
    print(machine_line())
    print(table.to_string(index=False, float_format=lambda v: f"{v:,.1f}"))


if __name__ == "__main__":
    main()
