"""The segment benchmark of SPEC §6: M fresh learners, one segment each, three slices."""

from __future__ import annotations

import math
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from sharp.data.streams import SegmentPlan, plan_segments
from sharp.learners import LearnerSpec, build_learner
from sharp.runner import evaluate_slices, run_stream


@dataclass
class BenchmarkResult:
    """``results``: one row per learner × segment × slice; ``curves``: the training
    records of every run averaged over blocks of ``block`` steps."""

    results: pd.DataFrame
    curves: pd.DataFrame


@dataclass(frozen=True)
class _Job:
    spec: LearnerSpec
    plan: SegmentPlan
    train: np.ndarray
    slices: dict[str, np.ndarray]
    block: int
    clip: float | None
    progress: bool


def summarise_records(records: pd.DataFrame, block: int) -> pd.DataFrame:
    """Block means of per-step records (bits, accuracy, memory update rate, sleeps)."""
    group = (records["step"] - 1) // block
    curve = records.groupby(group).agg(
        step=("step", "max"), bits=("bits", "mean"), accuracy=("correct", "mean"),
        memory_update_rate=("memory_learned", "mean"), sleeps=("slept", "sum"),
    )
    return curve.reset_index(drop=True)


def _run_job(job: _Job) -> tuple[pd.DataFrame, pd.DataFrame]:
    learner = build_learner(job.spec)
    start = time.perf_counter()
    records = run_stream(learner, job.train, progress=job.progress,
                         description=f"{job.spec.name} segment {job.plan.index}")
    train_seconds = time.perf_counter() - start
    rows = evaluate_slices(learner, job.slices, job.clip)
    labels = {
        "learner": job.spec.name, "kind": job.spec.kind, "segment": job.plan.index,
        "seed": job.spec.config.get("seed", 0), "parameters": learner.parameter_count(),
        "train_tokens": len(records), "train_seconds": train_seconds,
        "tokens_per_s": len(records) / train_seconds,
        "memory_update_rate": records["memory_learned"].mean(),
        "sleeps": int(records["slept"].sum()),
    }
    for column, value in reversed(labels.items()):
        rows.insert(0, column, value)
    curve = summarise_records(records, job.block)
    curve.insert(0, "segment", job.plan.index)
    curve.insert(0, "learner", job.spec.name)
    return rows, curve


def segment_benchmark(
    specs: list[LearnerSpec],
    tokens: np.ndarray,
    *,
    segment: int,
    slice_len: int,
    learners: int,
    seed: int = 0,
    workers: int = 1,
    clip: float | None = None,
    block: int | None = None,
    progress: bool = True,
) -> BenchmarkResult:
    """Run every learner recipe on ``learners`` segments (SPEC §6).

    Learner m of each recipe starts fresh with seed ``seed + m`` and streams segment m
    once; then, without learning, it is evaluated on backward (first E tokens of its
    segment), current (last E) and forward (the corpus's last E tokens). ``workers``
    runs learners in that many processes; ``clip`` is the per-token bits cap reported in
    the ``bits_clipped`` column (``bits`` is always unclipped).
    """
    plans = plan_segments(len(tokens), segment, slice_len, learners)
    block = block or max(1, math.ceil(segment / 200))
    jobs = [
        _Job(spec.with_seed(seed + plan.index), plan, np.asarray(plan.train.take(tokens)),
             {name: np.asarray(span.take(tokens)) for name, span in plan.slices().items()},
             block, clip, progress and workers == 1)
        for spec in specs for plan in plans
    ]
    if workers == 1:
        outputs = [_run_job(job) for job in jobs]
    else:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            outputs = list(tqdm(pool.map(_run_job, jobs), total=len(jobs), disable=not progress,
                                desc=f"{len(jobs)} learners on {workers} workers"))
    results = pd.concat([rows for rows, _ in outputs], ignore_index=True)
    curves = pd.concat([curve for _, curve in outputs], ignore_index=True)
    return BenchmarkResult(results, curves)


def summary_table(results: pd.DataFrame, column: str = "bits") -> pd.DataFrame:
    """Mean ± sample std over segments, one row per learner, one column per slice."""
    stats = results.groupby(["learner", "slice"], sort=False)[column].agg(["mean", "std", "count"])
    table = stats.apply(
        lambda row: f"{row['mean']:.3f} ± {row['std']:.3f}" if row["count"] > 1
        else f"{row['mean']:.3f}", axis=1,
    ).unstack("slice")
    return table[[s for s in ("forward", "backward", "current") if s in table.columns]]
