"""The duration estimate of an experiment run (``sharp experiment NAME --estimate``, and
before every ``--preset paper`` run), from a short measured warm-up of its own jobs on this
machine; nothing is written and no job's result is kept.

The jobs are those the run would hand to :func:`~sharp.experiments.common.run_jobs`
(:func:`~sharp.experiments.common.planned_jobs`), less those an earlier run of the same
command stored already. Jobs that differ only in their seeds have one *shape*; each shape
is timed once (:func:`job_seconds`), on its own arguments (model sizes, periods) but at
short lengths (its :class:`~sharp.experiments.common.Size`: samples or tokens): its work
proportional to length is extrapolated linearly from runs at growing lengths, and each
kind of its periodic work (sleeps every 20,000 steps, evaluations every million tokens),
which those runs do not reach, is timed per event and counted as often as the full job
does it. The jobs are then handed to the run's workers in order (:func:`makespan`). An
event is timed at warm-up length, where a sleep replays fewer tags and an evaluation's
growing slices are short, so the figure leans low.
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
from sharp.runs.outputs import duration, plural

#: Seconds by which the two longest warm-up runs of a job shape must differ (their
#: difference is the measured cost of the added length).
TARGET_SECONDS = 0.5
#: Arguments that make jobs differ without changing their cost.
SEED_KEYS = frozenset({"seed", "data_seed"})
#: What the printed estimate adds when some job does periodic work.
PER_EVENT = ", periodic work (sleeps, evaluations) timed per event"


@dataclass(frozen=True)
class Estimate:
    """The estimated wall-clock ``seconds`` of the ``left`` jobs (of ``jobs``) of a run of
    experiment ``name`` on ``workers`` workers, from a warm-up of ``shapes`` job shapes
    that took ``warmup_seconds``. The warm-up ran jobs at up to ``longest`` units of their
    size (``unit``: samples, tokens), ``full`` at full size; ``periodic``: whether some
    job's periodic work (sleeps, evaluations) was timed per event."""

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
    periodic: bool

    def line(self) -> str:
        """What ``sharp experiment`` prints."""
        if not self.left:
            return f"{self.name}: every job is stored already; nothing left to run"
        return (f"{self.name}: estimated duration {duration(self.seconds)} for "
                f"{plural(self.left, 'job')} left of "
                f"{self.jobs} on {plural(self.workers, 'worker')}, from a "
                f"{self.warmup_seconds:,.1f} s warm-up of {plural(self.shapes, 'job shape')} "
                f"on this machine (runs of up to {self.longest:,} of {self.full:,} "
                f"{self.unit}{PER_EVENT * self.periodic})")


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


def _timed(job: Job, length: int, periods: dict[int, int] | None = None) -> float:
    """Seconds ``job`` takes at ``length`` units of its size, its periodic work
    ``size.periodic[i]`` done every ``periods[i]`` units and the rest turned off (its
    frame is dropped)."""
    assert job.size is not None
    kwargs = {**job.kwargs, job.size.name: length}
    for i, periodic in enumerate(job.size.periodic):
        kwargs = periodic.change(kwargs, (periods or {}).get(i, length + 1))
    started = time.perf_counter()
    job.function(**kwargs)
    return time.perf_counter() - started


def _base_seconds(job: Job, target: float) -> tuple[float, int]:
    """Seconds of ``job`` at full size without its periodic work, and the longest length
    run: :func:`_timed` at ``start``, 2 × ``start``, ... units (at least three, the first
    priming caches) until two consecutive runs differ by ``target`` seconds or the full size
    is reached (then its time is the answer); else the last two extrapolated linearly (or
    in proportion to length, where noise makes the longer one no slower)."""
    assert job.size is not None
    full = job.size.value
    points: list[tuple[int, float]] = []
    length = min(job.size.start, full)
    while True:
        points.append((length, _timed(job, length)))
        if length >= full:
            return points[-1][1], length
        if len(points) >= 3 and points[-1][1] - points[-2][1] >= target:
            break
        length = min(2 * length, full)
    (short, short_seconds), (long, long_seconds) = points[-2:]
    per_unit = (long_seconds - short_seconds) / (long - short)
    if per_unit <= 0:
        per_unit = long_seconds / long
    return long_seconds + per_unit * (full - long), long


def event_seconds(job: Job, index: int) -> float:
    """Seconds one event of ``job``'s periodic work ``size.periodic[index]`` adds: the job
    at ``start`` units with that work every ``start`` / 4 units, less with it every
    ``start`` / 2, per event more (the other periodic work off; 0 where noise makes it
    negative). Measured at that length, so an event whose cost grows with what the job
    holds (tags to replay, states to compare) is measured small."""
    assert job.size is not None
    length = min(job.size.start, job.size.value)
    often, rarely = max(1, length // 4), max(1, length // 2)
    extra = _timed(job, length, {index: often}) - _timed(job, length, {index: rarely})
    return max(0.0, extra / (length // often - length // rarely))


def job_seconds(job: Job, target: float = TARGET_SECONDS) -> tuple[float, int]:
    """Estimated seconds of ``job`` at its full size, and the longest length it ran at:
    its length-proportional work extrapolated from runs at growing lengths
    (:func:`_base_seconds`), plus each periodic work's events at full size (full size //
    its period) × seconds per event (:func:`event_seconds`). Runs on one torch thread, as
    a job does. Raises ValueError for a job without a size."""
    if job.size is None:
        raise ValueError(f"job {job.function.__qualname__} declares no size (Job.size), so "
                         "its duration cannot be extrapolated from a warm-up")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        seconds, longest = _base_seconds(job, target)
        for index, periodic in enumerate(job.size.periodic):
            if periodic.every <= job.size.value:
                seconds += job.size.value // periodic.every * event_seconds(job, index)
    finally:
        torch.set_num_threads(threads)
    return seconds, longest


def makespan(durations: Sequence[float], workers: int) -> float:
    """Seconds until the last of jobs lasting ``durations`` ends on ``workers`` workers
    that each take the next job, in the given order, as soon as they are free (as
    :func:`~sharp.experiments.common.run_jobs` hands its jobs out)."""
    loads = [0.0] * max(1, min(workers, len(durations)))
    for seconds in durations:
        loads[loads.index(min(loads))] += seconds
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
        periodic=any(job.size is not None and job.size.periodic for job in left))
