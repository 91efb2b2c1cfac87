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

from sharp.config import SharpConfig, preset
from sharp.model.learner import Sharp
from sharp.perf.device import ensemble_rate
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


def check_counts(**counts: int | None) -> None:
    """Raise ValueError naming the first of ``counts`` (e.g. ``steps=0``) that is not a
    positive integer (None means "the default" and passes)."""
    for name, value in counts.items():
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def stand_in_table(config: SharpConfig, seed: int = 0) -> torch.Tensor | None:
    """For a dense-input config that names no ``input_table`` (e.g. ``pg19-gpt2``), a
    random frozen table of its shape (vocab_size, input_dim), N(0, 0.1²) like GPT-2's: a
    step costs the same whatever the table holds; else None (the config's own inputs)."""
    if config.inputs != "dense" or config.input_table is not None:
        return None
    assert config.input_dim is not None
    generator = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(config.vocab_size, config.input_dim, generator=generator)


def measure_sharp(preset_name: str, *, hidden: int | None = None, embedding: int | None = None,
                  threads: int = 1, engine: str = "fused", steps: int = 1_000,
                  repeats: int = 3, eval_tokens: int | None = None, seed: int = 0,
                  device: str = "auto") -> dict[str, Any]:
    """Median wake tokens/s over ``repeats`` runs of ``steps`` steady-state steps (after a
    warm-up of min(steps, 200) steps; untimed steps follow until the tag buffer is full,
    e.g. when ``steps`` is below its size), evaluation tokens/s over ``eval_tokens``
    tokens (default min(50 * steps, 50,000), at least W + 1), and one sleep phase's wall
    time with a full tag buffer (the preset's replay steps, whatever ``steps``), for one
    ``engine`` (``fused`` or ``torch``). A dense-input preset without an ``input_table``
    reads a :func:`stand_in_table`. ``device`` is the config's (``auto``: the CPU, SHARP's
    rule for one stream). Raises ValueError for a count below 1."""
    check_counts(steps=steps, repeats=repeats, eval_tokens=eval_tokens)
    overrides: dict[str, Any] = {"threads": threads, "seed": seed, "tau": 0.0,
                                 "engine": engine, "device": device}
    if hidden is not None:
        overrides["hidden"] = hidden
    if embedding is not None:
        overrides["embedding"] = embedding
    config = preset(preset_name, **overrides)
    learner = Sharp(config, stand_in_table(config, seed))
    if eval_tokens is None:
        eval_tokens = max(min(50 * steps, 50_000), config.window + 1)
    rng = np.random.default_rng(seed)
    warmup, topping = min(steps, 200), 2 * config.tag_buffer + 2
    tokens = torch.from_numpy(rng.integers(
        0, config.vocab_size, max(warmup, steps + topping, eval_tokens) + config.window + 1))
    _wake_rate(learner, tokens, warmup)
    learner.reset_state()  # also empties the tag buffer
    rates = [_wake_rate(learner, tokens, steps) for _ in range(repeats)]
    for position in range(steps, steps + topping):  # untimed: fill the buffer for the sleep
        if len(learner.tags) == config.tag_buffer:
            break
        _wake_rate(learner, tokens, 1, position)
    if len(learner.tags) != config.tag_buffer:
        raise RuntimeError(f"the tag buffer holds {len(learner.tags)} of "
                           f"{config.tag_buffer} tags after {topping} more steps")
    start = time.perf_counter()
    learner.sleep()
    sleep_seconds = time.perf_counter() - start
    result = learner.evaluate(tokens[:eval_tokens].numpy())
    return {
        "learner": "SHARP", "engine": learner.engine, "device": str(learner.device),
        "preset": preset_name,
        "hidden": config.hidden[0],
        "embedding": config.embedding, "layers": config.layers, "threads": threads,
        "parameters": learner.parameter_count(),
        "wake_tokens_per_s": statistics.median(rates),
        "wake_ms_per_step": 1000 / statistics.median(rates),
        "eval_tokens_per_s": result.tokens / result.seconds, "eval_tokens": eval_tokens,
        "sleep_seconds": sleep_seconds, "sleep_tags": config.tag_buffer,
        "sleep_steps": config.replay_steps,
    }


def measure_baseline(kind: str, preset_name: str = "paper", *, threads: int = 1,
                     steps: int = 300, repeats: int = 3, warmup: int | None = None,
                     eval_tokens: int | None = None, seed: int = 0,
                     **overrides: Any) -> dict[str, Any]:
    """Median streaming tokens/s of a baseline over ``repeats`` consecutive runs of
    ``steps`` steps after ``warmup`` steps (default min(steps, 100)), and its evaluation
    tokens/s over ``eval_tokens`` tokens (default min(20 * steps, 20,000), at least
    W + 1). Raises ValueError for a count below 1."""
    check_counts(steps=steps, repeats=repeats, warmup=warmup, eval_tokens=eval_tokens)
    warmup = min(steps, 100) if warmup is None else warmup
    spec = baseline_spec(kind, preset_name, threads=threads, seed=seed, **overrides)
    learner = build_learner(spec)
    if eval_tokens is None:
        eval_tokens = max(min(20 * steps, 20_000), learner.window + 1)
    total = warmup + repeats * steps
    rng = np.random.default_rng(seed)
    tokens = torch.from_numpy(rng.integers(0, learner.vocab_size, total + eval_tokens + 10))
    _wake_rate(learner, tokens, warmup)
    rates = [_wake_rate(learner, tokens, steps, warmup + r * steps) for r in range(repeats)]
    result = learner.evaluate(tokens[-eval_tokens:].numpy())
    return {
        "learner": spec.name, "device": str(learner.device), "preset": preset_name,
        "threads": threads, "parameters": learner.parameter_count(),
        "wake_tokens_per_s": statistics.median(rates),
        "wake_ms_per_step": 1000 / statistics.median(rates),
        "eval_tokens_per_s": result.tokens / result.seconds, "eval_tokens": eval_tokens,
    }


def measure_ensemble(members: int, preset_name: str, *, kind: str = "sharp",
                     threads: int = 1, steps: int = 300, repeats: int = 3,
                     warmup: int | None = None, seed: int = 0, device: str = "auto"
                     ) -> dict[str, Any]:
    """Median streaming throughput of one ensemble of ``members`` ``kind`` learners at
    ``preset_name`` (SHARP with every memory-0 gate open, tau = 0, as :func:`measure_sharp`)
    over ``repeats`` runs of ``steps`` steps after ``warmup``: ensemble steps/s and tokens/s
    over all members; ``warmup`` defaults to min(steps, 50); ``device`` is the config's
    (``auto``: CUDA, then MPS, then the CPU). Raises ValueError for an unknown kind or
    preset, or a count below 1."""
    check_counts(members=members, steps=steps, repeats=repeats, warmup=warmup)
    warmup = min(steps, 50) if warmup is None else warmup
    spec = (sharp_spec(preset_name, tau=0.0, threads=threads, device=device) if kind == "sharp"
            else baseline_spec(kind, preset_name, threads=threads, device=device))
    ensemble = build_ensemble(spec, list(range(seed, seed + members)))
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, ensemble.vocab_size,
                          (members, warmup + repeats * steps + ensemble.window))
    ensemble_rate(ensemble, tokens, warmup)
    rate = statistics.median(ensemble_rate(ensemble, tokens[:, warmup + r * steps :], steps)
                             for r in range(repeats))
    return {
        "learner": f"{'SHARP' if kind == 'sharp' else spec.name} x{members}",
        "device": str(ensemble.device), "preset": preset_name, "threads": threads,
        "members": members,
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
    :func:`measure_ensemble` when it names a number of ``members`` (whose ``parameters`` are
    one member's). Count columns are integers, missing (``<NA>``) where a row has none.
    Raises ValueError when
    ``configs`` is empty (nothing to measure)."""
    if not configs:
        raise ValueError("nothing to measure: give --presets NAMES or --baselines KINDS")
    rows = []
    for config in tqdm(configs, desc="throughput", leave=False):
        measure = (measure_ensemble if "members" in config
                   else measure_baseline if "kind" in config else measure_sharp)
        rows.append(measure(**{**kwargs, **config}))
    table = pd.DataFrame(rows)
    # A count some rows lack (an ensemble's members) stays an integer column, not floats.
    counts = [column for column in table
              if all(isinstance(row[column], int | np.integer) and not isinstance(row[column], bool)
                     for row in rows if column in row)]
    return table.astype(dict.fromkeys(counts, "Int64"))
