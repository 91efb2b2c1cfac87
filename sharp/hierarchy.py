"""The hierarchy of timescales: strides a**l, effective contexts W·a**l, layer states over
a stream, and the acceleration ablation on the community task (SPEC §8.4)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from sharp.benchmark import summarise_records
from sharp.config import SharpConfig
from sharp.data.community import CommunityTask
from sharp.learner import Sharp
from sharp.runner import run_stream


def context_table(config: SharpConfig) -> pd.DataFrame:
    """Per layer: its stride a**l (tokens between two ticks), how many of its steps cover
    the window, and the effective context W·a**l its memory window spans (tokens)."""
    return pd.DataFrame({
        "layer": range(config.layers),
        "hidden": config.hidden,
        "stride a^l": config.strides,
        "ticks per 1,000 tokens": [1_000 // s for s in config.strides],
        "context W·a^l (tokens)": [config.window * s for s in config.strides],
    }).set_index("layer")


@torch.inference_mode()
def layer_states(learner: Sharp, tokens: np.ndarray) -> list[np.ndarray]:
    """The state every layer holds after each wake step over ``tokens``, from a reset
    state and without learning (the strides of wake and evaluation): one array of shape
    (steps, H_l) per layer, steps = len(tokens) - W. Layer l changes only at steps that
    are multiples of a**l."""
    c = learner.config
    ids = torch.as_tensor(np.asarray(tokens), device=learner.device).long()
    steps = ids.numel() - c.window
    if steps < 1:
        raise ValueError(f"need more than W={c.window} tokens, got {ids.numel()}")
    t = torch.arange(1, steps + 1, device=learner.device)
    held, below = [], None
    for level, memory in enumerate(learner.memories):
        if level == 0:
            inputs = ids[c.window - 1 : -1]
        else:
            every = learner.strides[level] // learner.strides[level - 1]
            inputs = below[every - 1 :: every]
        start = torch.zeros(c.hidden[level], device=learner.device)
        below = memory.trajectory(inputs, start)
        padded = torch.cat([start.unsqueeze(0), below])
        held.append(padded[t // learner.strides[level]].cpu().numpy())
    return held


def ablation_conditions(accels: tuple[int, ...] = (1, 2, 4),
                        no_sleep: bool = True) -> dict[str, dict[str, object]]:
    """Config changes of each condition: ``a=<k>`` for each acceleration, and ``no sleep``
    (the largest a, default initialisation, never sleeps — one change at a time)."""
    conditions: dict[str, dict[str, object]] = {f"a={a}": {"accel": a} for a in accels}
    if no_sleep:
        conditions["no sleep"] = {"accel": max(accels), "sleep_every": 10**12}
    return conditions


def acceleration_ablation(
    task: CommunityTask,
    config: SharpConfig,
    *,
    visits: int,
    conditions: dict[str, dict[str, object]] | None = None,
    seeds: tuple[int, ...] = (0,),
    block: int = 250,
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stream ``visits`` visits of the community task through one SHARP per condition and
    seed (the same data for every condition of a seed: the stream uses the seed too).

    Returns (curves, summary): ``curves`` has the online error (1 - top-1 accuracy,
    prediction before learning) per block of ``block`` steps; ``summary`` the error over
    the last quarter of the stream, the memory update rate and the number of sleeps per
    condition (mean over seeds), next to the task's optimal error.
    """
    conditions = conditions or ablation_conditions()
    curves, rows = [], []
    jobs = [(name, change, seed) for seed in seeds for name, change in conditions.items()]
    for name, change, seed in tqdm(jobs, desc="conditions", disable=not progress):
        tokens = task.generate(visits, seed=seed)
        learner = Sharp(config.replace(vocab_size=task.vocab_size, seed=seed, **change))
        records = run_stream(learner, tokens, progress=False)
        curve = summarise_records(records, block)
        curve.insert(0, "seed", seed)
        curve.insert(0, "condition", name)
        curve["error"] = 1.0 - curve["accuracy"]
        curves.append(curve)
        tail = records.iloc[-max(1, len(records) // 4) :]
        rows.append({"condition": name, "seed": seed, "final_error": 1.0 - tail["correct"].mean(),
                     "memory_update_rate": records["memory_learned"].mean(),
                     "sleeps": int(records["slept"].sum())})
    summary = pd.DataFrame(rows).groupby("condition", sort=False).mean(numeric_only=True)
    summary = summary.drop(columns="seed")
    summary["optimal_error"] = task.optimal_error
    return pd.concat(curves, ignore_index=True), summary
