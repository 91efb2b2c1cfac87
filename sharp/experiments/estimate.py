"""The duration estimate of an experiment run (``sharp experiment NAME --estimate``, and
before every ``--preset paper`` run), from a short measured warm-up of its own jobs on this
machine; nothing is written and no job's result is kept.

The jobs are those the run would hand to :func:`~sharp.experiments.common.run_jobs`
(:func:`~sharp.experiments.common.planned_jobs`), less those an earlier run of the same
command stored already. Jobs that differ only in their seeds have one *shape*; each shape
is timed once (:func:`job_seconds`): its job runs at a few short lengths (its
:class:`~sharp.experiments.common.Size`: samples or tokens), doubling from the size's
``start`` until two consecutive lengths differ by :data:`TARGET_SECONDS`, and the time is
extrapolated linearly from the last two to the full length. Work a job does less often
than once per warm-up length (a sleep every 20,000 steps, an evaluation every million
tokens) is in the figure only as far as the warm-up met it, so for such jobs the figure
is a lower bound. The jobs are then packed onto the run's workers, longest first
(:func:`makespan`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from sharp.experiments.common import (
    Job,
    JobStore,
    default_workers,
    plain_content,
    planned_jobs,
)
from sharp.experiments.report import (
    experiment_identity,
    get_experiment,
    holds_jobs_of,
    jobs_folder,
)
from sharp.runs.outputs import plural

#: Seconds by which the two longest warm-up runs of a job shape must differ (their
#: difference is the measured cost of the added length).
TARGET_SECONDS = 0.5
#: Arguments that make jobs differ without changing their cost.
SEED_KEYS = frozenset({"seed", "data_seed"})


@dataclass(frozen=True)
class Estimate:
    """The estimated wall-clock ``seconds`` of the ``left`` jobs (of ``jobs``) of a run of
    experiment ``name`` on ``workers`` workers, from a warm-up of ``shapes`` job shapes
    that took ``warmup_seconds``. The warm-up ran jobs at up to ``longest`` units of their
    size (``unit``: samples, tokens), ``full`` at full size; ``partial`` says whether some
    job's time was extrapolated from a shorter run (then periodic work may be missing)."""

    name: str
    seconds: float
    jobs: int
    left: int
    workers: int
    shapes: int
    warmup_seconds: float
    unit: str
    longest: int
    full: int
    partial: bool

    def line(self) -> str:
        """What ``sharp experiment`` prints."""
        if not self.left:
            return f"{self.name}: every job is stored already; nothing left to run"
        bound = (f"; work a job does less often than every {self.longest:,} {self.unit} "
                 "(sleeps, evaluations) is not in it: a lower bound" if self.partial else "")
        return (f"{self.name}: estimated duration {self.seconds / 3600:,.1f} h "
                f"({self.seconds:,.0f} s) for {plural(self.left, 'job')} left of "
                f"{self.jobs} on {plural(self.workers, 'worker')}, from a "
                f"{self.warmup_seconds:,.1f} s warm-up of {plural(self.shapes, 'job shape')} "
                f"on this machine (up to {self.longest:,} of {self.full:,} {self.unit}"
                f"{bound})")


def _without_seeds(value: Any) -> Any:
    """``value`` (plain data from :func:`~sharp.experiments.common.plain_content`) with every
    mapping entry named in :data:`SEED_KEYS` dropped, at any depth."""
    if isinstance(value, dict):
        return {key: _without_seeds(item) for key, item in value.items()
                if key not in SEED_KEYS}
    if isinstance(value, list):
        return [_without_seeds(item) for item in value]
    return value


def shape_key(job: Job) -> str:
    """What determines ``job``'s cost: its function and arguments but its seeds and its
    size (the same key for the repetitions of one condition)."""
    size = job.size.name if job.size else None
    kwargs = {key: value for key, value in job.kwargs.items() if key != size}
    return json.dumps([plain_content(job.function), _without_seeds(plain_content(kwargs))],
                      sort_keys=True)


def _timed(job: Job, length: int) -> float:
    """Seconds ``job`` takes at ``length`` units of its size (its frame is dropped)."""
    assert job.size is not None
    kwargs = {**job.kwargs, job.size.name: length}
    started = time.perf_counter()
    job.function(**kwargs)
    return time.perf_counter() - started


def job_seconds(job: Job, target: float = TARGET_SECONDS) -> tuple[float, int]:
    """Estimated seconds of ``job`` at its full size, and the longest length it ran at:
    runs at ``start``, 2 × ``start``, ... units (at least three, the first priming caches),
    until two consecutive runs differ by ``target`` seconds or the full size is reached
    (then its time is the answer); else the last two are extrapolated linearly (or in
    proportion to length, where noise makes the longer one no slower). Runs on one torch
    thread, as a job does. Raises ValueError for a job without a size."""
    if job.size is None:
        raise ValueError(f"job {job.function.__qualname__} declares no size (Job.size), so "
                         "its duration cannot be extrapolated from a warm-up")
    full = job.size.value
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        points: list[tuple[int, float]] = []
        length = min(job.size.start, full)
        while True:
            points.append((length, _timed(job, length)))
            if length >= full:
                return points[-1][1], length
            if len(points) >= 3 and points[-1][1] - points[-2][1] >= target:
                break
            length = min(2 * length, full)
    finally:
        torch.set_num_threads(threads)
    (short, short_seconds), (long, long_seconds) = points[-2:]
    per_unit = (long_seconds - short_seconds) / (long - short)
    if per_unit <= 0:
        per_unit = long_seconds / long
    return long_seconds + per_unit * (full - long), long


def makespan(durations: Sequence[float], workers: int) -> float:
    """Seconds until the last of jobs lasting ``durations`` ends on ``workers`` workers
    that each take the longest job left when free (what a task pool does with jobs handed
    out longest first; an upper bound for other orders only roughly)."""
    loads = [0.0] * max(1, min(workers, len(durations)))
    for duration in sorted(durations, reverse=True):
        loads[loads.index(min(loads))] += duration
    return max(loads, default=0.0)


def estimate_experiment(name: str, preset: str = "paper", out: str | None = None,
                        **overrides: Any) -> Estimate:
    """Estimate the duration of ``run_experiment(name, preset, out, **overrides)`` from a
    warm-up of its jobs (see the module docstring), without running it: nothing is
    written. With ``out``, jobs an earlier run of the same command stored there (and that
    a resumed run would skip) are not counted. ValueError for an unknown experiment or
    preset."""
    started = time.perf_counter()
    experiment = get_experiment(name)
    parameters = experiment.parameters(preset, **overrides)
    jobs = planned_jobs(experiment.run, {**parameters, "progress": False})
    if out is not None and holds_jobs_of(out, name, experiment_identity(name, preset,
                                                                       parameters)):
        store = JobStore(jobs_folder(out, name))
        left = [job for job in jobs if not store.path(job).exists()]
    else:
        left = list(jobs)
    shapes: dict[str, tuple[float, int, int]] = {}  # seconds, longest length run, full
    for job in left:
        key = shape_key(job)
        if key not in shapes:
            shapes[key] = (*job_seconds(job), job.size.value if job.size else 0)
    workers = max(1, min(parameters.get("workers") or default_workers(len(left)),
                         len(left)))
    return Estimate(
        name=name, seconds=makespan([shapes[shape_key(job)][0] for job in left], workers),
        jobs=len(jobs), left=len(left), workers=workers, shapes=len(shapes),
        warmup_seconds=time.perf_counter() - started,
        unit=left[0].size.name if left and left[0].size else "",
        longest=max((run for _, run, _ in shapes.values()), default=0),
        full=max((full for _, _, full in shapes.values()), default=0),
        partial=any(run < full for _, run, full in shapes.values()))
