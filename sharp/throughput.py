"""Throughput measurement: wake tokens/s, evaluation tokens/s, one sleep's wall time.

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
from sharp.learner import Sharp


def _wake_rate(learner: Sharp, tokens: torch.Tensor, steps: int) -> float:
    targets = tokens.tolist()
    w = learner.window
    start = time.perf_counter()
    for i in range(steps):
        learner.learn(tokens[i : i + w], targets[i + w])
    return steps / (time.perf_counter() - start)


def measure_sharp(preset_name: str, *, hidden: int | None = None, embedding: int | None = None,
                  threads: int = 1, steps: int = 1_000, repeats: int = 3,
                  eval_tokens: int = 50_000, seed: int = 0) -> dict[str, Any]:
    """Median wake tokens/s over ``repeats`` runs of ``steps`` steady-state steps (after a
    warm-up that also fills the tag buffer), evaluation tokens/s, and one sleep phase's
    wall time with a full tag buffer."""
    overrides: dict[str, Any] = {"threads": threads, "seed": seed, "tau": 0.0}
    if hidden is not None:
        overrides["hidden"] = hidden
    if embedding is not None:
        overrides["embedding"] = embedding
    config = preset(preset_name, **overrides)
    learner = Sharp(config)
    rng = np.random.default_rng(seed)
    tokens = torch.from_numpy(rng.integers(0, config.vocab_size, steps + eval_tokens + 10))
    _wake_rate(learner, tokens, max(200, config.tag_buffer))
    rates = [_wake_rate(learner, tokens, steps) for _ in range(repeats)]
    if len(learner.tags) != config.tag_buffer:
        raise RuntimeError("the tag buffer did not fill during warm-up")
    start = time.perf_counter()
    learner.sleep()
    sleep_seconds = time.perf_counter() - start
    result = learner.evaluate(tokens[:eval_tokens].numpy())
    return {
        "learner": "SHARP", "preset": preset_name, "hidden": config.hidden[0],
        "embedding": config.embedding, "layers": config.layers, "threads": threads,
        "parameters": learner.parameter_count(),
        "wake_tokens_per_s": statistics.median(rates),
        "wake_ms_per_step": 1000 / statistics.median(rates),
        "eval_tokens_per_s": result.tokens / result.seconds,
        "sleep_seconds": sleep_seconds, "sleep_tags": config.tag_buffer,
        "sleep_steps": config.replay_steps,
    }


def machine_line() -> str:
    """Cores, torch version and date, for the table's caption."""
    return (f"{os.cpu_count()} cores, torch {torch.__version__}, "
            f"{datetime.now(UTC).strftime('%Y-%m-%d')}")


def throughput_table(configs: list[dict[str, Any]], **kwargs: Any) -> pd.DataFrame:
    """One row per configuration (keyword arguments of :func:`measure_sharp`)."""
    return pd.DataFrame([measure_sharp(**{**kwargs, **config}) for config in configs])
