"""Throughput measurement: wake tokens/s, evaluation tokens/s, one sleep's wall time, and
the streaming steps/s and tokens/s of ensembles.

A script, not a test: timing never decides pass or fail. Run ``sharp throughput``.
"""

from __future__ import annotations

import os
import statistics
import time
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import torch

from sharp.config import preset
from sharp.model.learner import Sharp
from sharp.protocol import Learner
from sharp.runs.progress import tqdm
from sharp.runs.registry import baseline_spec, build_ensemble, build_learner, sharp_spec


def _wake_rate(learner: Learner, tokens: torch.Tensor, steps: int, start: int = 0) -> float:
    targets = tokens.tolist()
    w = learner.window
    begin = time.perf_counter()
    for i in range(start, start + steps):
        learner.learn(tokens[i : i + w], targets[i + w])
    return steps / (time.perf_counter() - begin)


def measure_sharp(preset_name: str, *, hidden: int | None = None, embedding: int | None = None,
                  threads: int = 1, engine: str = "fused", steps: int = 1_000,
                  repeats: int = 3, eval_tokens: int = 50_000, seed: int = 0
                  ) -> dict[str, Any]:
    """Median wake tokens/s over ``repeats`` runs of ``steps`` steady-state steps (after a
    warm-up that also fills the tag buffer), evaluation tokens/s, and one sleep phase's
    wall time with a full tag buffer, for one ``engine`` (``fused`` or ``torch``)."""
    overrides: dict[str, Any] = {"threads": threads, "seed": seed, "tau": 0.0,
                                 "engine": engine}
    if hidden is not None:
        overrides["hidden"] = hidden
    if embedding is not None:
        overrides["embedding"] = embedding
    config = preset(preset_name, **overrides)
    learner = Sharp(config)
    rng = np.random.default_rng(seed)
    tokens = torch.from_numpy(rng.integers(0, config.vocab_size, steps + eval_tokens + 10))
    _wake_rate(learner, tokens, max(200, config.tag_buffer))
    learner.reset_state()
    rates = [_wake_rate(learner, tokens, steps) for _ in range(repeats)]
    if len(learner.tags) != config.tag_buffer:
        raise RuntimeError("the tag buffer did not fill during warm-up")
    start = time.perf_counter()
    learner.sleep()
    sleep_seconds = time.perf_counter() - start
    result = learner.evaluate(tokens[:eval_tokens].numpy())
    return {
        "learner": "SHARP", "engine": learner.engine, "preset": preset_name,
        "hidden": config.hidden[0],
        "embedding": config.embedding, "layers": config.layers, "threads": threads,
        "parameters": learner.parameter_count(),
        "wake_tokens_per_s": statistics.median(rates),
        "wake_ms_per_step": 1000 / statistics.median(rates),
        "eval_tokens_per_s": result.tokens / result.seconds,
        "sleep_seconds": sleep_seconds, "sleep_tags": config.tag_buffer,
        "sleep_steps": config.replay_steps,
    }


def measure_baseline(kind: str, preset_name: str = "paper", *, threads: int = 1,
                     steps: int = 300, repeats: int = 3, warmup: int = 100,
                     eval_tokens: int = 20_000, seed: int = 0,
                     **overrides: Any) -> dict[str, Any]:
    """Median streaming tokens/s of a baseline over ``repeats`` consecutive runs of
    ``steps`` steps after ``warmup`` steps, and its evaluation tokens/s."""
    spec = baseline_spec(kind, preset_name, threads=threads, seed=seed, **overrides)
    learner = build_learner(spec)
    total = warmup + repeats * steps
    rng = np.random.default_rng(seed)
    tokens = torch.from_numpy(rng.integers(0, learner.vocab_size, total + eval_tokens + 10))
    _wake_rate(learner, tokens, warmup)
    rates = [_wake_rate(learner, tokens, steps, warmup + r * steps) for r in range(repeats)]
    result = learner.evaluate(tokens[-eval_tokens:].numpy())
    return {
        "learner": spec.name, "preset": preset_name, "threads": threads,
        "parameters": learner.parameter_count(),
        "wake_tokens_per_s": statistics.median(rates),
        "wake_ms_per_step": 1000 / statistics.median(rates),
        "eval_tokens_per_s": result.tokens / result.seconds,
    }


def ensemble_rate(ensemble: Any, tokens: np.ndarray, steps: int) -> float:
    """Ensemble steps/s over ``steps`` steps of ``ensemble`` (any ensemble; each step
    advances every member) on ``tokens`` (M, >= steps + W), member m reading row m."""
    w = ensemble.window
    begin = time.perf_counter()
    for i in range(steps):
        ensemble.learn(tokens[:, i : i + w], tokens[:, i + w])
    return steps / (time.perf_counter() - begin)


def measure_ensemble(members: int, preset_name: str, *, kind: str = "sharp",
                     threads: int = 1, steps: int = 300, repeats: int = 3, warmup: int = 50,
                     seed: int = 0) -> dict[str, Any]:
    """Median streaming throughput of one ensemble of ``members`` ``kind`` learners at
    ``preset_name`` (SHARP with every memory-0 gate open, tau = 0, as :func:`measure_sharp`)
    over ``repeats`` runs of ``steps`` steps after ``warmup``: ensemble steps/s and tokens/s
    over all members. Raises ValueError for an unknown kind or preset."""
    spec = (sharp_spec(preset_name, tau=0.0, threads=threads) if kind == "sharp"
            else baseline_spec(kind, preset_name, threads=threads))
    ensemble = build_ensemble(spec, list(range(seed, seed + members)))
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, ensemble.vocab_size,
                          (members, warmup + repeats * steps + ensemble.window))
    ensemble_rate(ensemble, tokens, warmup)
    rate = statistics.median(ensemble_rate(ensemble, tokens[:, warmup + r * steps :], steps)
                             for r in range(repeats))
    return {
        "learner": f"{'SHARP' if kind == 'sharp' else spec.name} x{members}",
        "preset": preset_name, "threads": threads, "members": members,
        "parameters": ensemble.parameter_count(), "ensemble_steps_per_s": rate,
        "wake_tokens_per_s": rate * members, "wake_ms_per_step": 1000 / rate,
    }


def machine_line() -> str:
    """Cores, torch version and date, for the table's caption."""
    return (f"{os.cpu_count()} cores, torch {torch.__version__}, "
            f"{datetime.now(UTC).strftime('%Y-%m-%d')}")


def throughput_table(configs: list[dict[str, Any]], **kwargs: Any) -> pd.DataFrame:
    """One row per configuration: keyword arguments of :func:`measure_sharp`, of
    :func:`measure_baseline` when the configuration names a baseline ``kind``, or of
    :func:`measure_ensemble` when it names a number of ``members``."""
    rows = []
    for config in tqdm(configs, desc="throughput", leave=False):
        measure = (measure_ensemble if "members" in config
                   else measure_baseline if "kind" in config else measure_sharp)
        rows.append(measure(**{**kwargs, **config}))
    return pd.DataFrame(rows)
