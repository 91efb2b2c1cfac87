"""Shared machinery of the experiments (SPEC §8): seeds, parallel repetitions, online
error on the community task, memory training, median/IQR band figures and the registry.

Every experiment is a function returning a tidy DataFrame (one row per repetition ×
checkpoint × condition, with the repetition's ``seed``) plus a figure function. Jobs are
module-level functions run as Ray tasks (:mod:`sharp.runs.executor`), so each repetition is
independent and reproducible from its recorded seed. Where an experiment's ``ensemble``
option groups (:func:`group_repetitions`), the repetitions of one condition run as one job,
an ensemble of their learners (SPEC §10; :func:`stream_ensemble_job` on the community
task), whose rows are those the separate jobs give.

Inside :func:`stored_jobs` (what ``sharp experiment --out`` uses) every finished job's frame
is stored under a name derived from the job's content (:func:`job_id`), and a job whose
frame is stored already is not run again: a killed run resumes where it stopped. A job
whose function takes a ``checkpoints`` keyword also checkpoints inside its own loop: it is
handed :class:`JobCheckpoints` (its folder ``<jobs>/<job id>/`` and the run's
:class:`~sharp.runs.jobs.CheckpointPolicy`), and a killed one resumes from its last
checkpoint; the others run again from their start.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import itertools
import json
import os
import re
import shutil
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from sharp.baselines.ensemble import BaselineEnsemble
from sharp.config import SharpConfig, preset
from sharp.data.community import CommunityTask
from sharp.data.streams import n_windows
from sharp.engines.ensemble import SharpEnsemble
from sharp.engines.optim import FusedAdam
from sharp.explore.plots import alpha
from sharp.model.gate import RecallGate
from sharp.model.memory import Memory
from sharp.protocol import Learner, token_array
from sharp.runs.bench import ENSEMBLE_MODES, auto_groups
from sharp.runs.checkpoints import atomic_path, load_checkpoint
from sharp.runs.executor import Executor, run_tasks
from sharp.runs.jobs import PIECE, CheckpointPolicy, JobFolder
from sharp.runs.progress import worker_warnings
from sharp.runs.registry import LearnerSpec, baseline_spec, build_ensemble, build_learner
from sharp.runs.stream import run_ensemble_stream, run_stream

#: Preset names every experiment offers: ``tiny`` (tests), ``quick`` (≤ 60 s on 2 cores),
#: ``paper`` (the authors' scale).
PRESET_NAMES = ("tiny", "quick", "paper")


# -- seeds and repetitions ------------------------------------------------------------
def rep_seeds(seed: int, reps: int) -> list[int]:
    """``reps`` independent seeds derived from ``seed`` (numpy SeedSequence); repetition r
    of every condition uses seed r, so conditions are compared on the same seeds. Raises
    ValueError for ``reps`` < 1 or a negative ``seed``."""
    if reps < 1:
        raise ValueError(f"reps must be >= 1, got {reps}")
    if seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed}")
    return [int(s) for s in np.random.SeedSequence(seed).generate_state(reps)]


def member_frames(frames: Sequence[pd.DataFrame], seeds: Sequence[int]) -> pd.DataFrame:
    """An ensemble job's frame from its members' ``frames`` (member m: repetition m, seed
    ``seeds[m]``): the frames in member order, each with ``rep`` (m) and ``seed`` columns
    first, as the separate jobs' labels give them."""
    for m, (frame, seed) in enumerate(zip(frames, seeds, strict=True)):
        frame.insert(0, "seed", int(seed))
        frame.insert(0, "rep", m)
    return pd.concat(frames, ignore_index=True)


def repetition_major(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (:func:`run_jobs`' rows) ordered by ``rep``, stably: an ensemble job's rows
    hold every repetition, and this puts them where the separate jobs' rows go."""
    return frame.sort_values("rep", kind="stable", ignore_index=True)


def group_repetitions(option: str, device: str, reps: int) -> bool:
    """Whether an experiment runs each condition's ``reps`` repetitions as one ensemble job
    (SPEC §10): ``on`` yes, ``off`` no, ``auto`` when there are two or more and the
    learners' config ``device`` groups (:func:`~sharp.runs.bench.auto_groups`, the rule of
    ``sharp bench --ensemble auto``: CUDA or MPS, never the CPU). Raises ValueError for
    another option, and for ``on`` with one repetition (there is nothing to group; it would
    run, and be reported, alone)."""
    if option not in ENSEMBLE_MODES:
        raise ValueError(f"ensemble must be one of {ENSEMBLE_MODES}, got {option!r}")
    if option == "on" and reps < 2:
        raise ValueError("--ensemble on (ensemble='on') runs each condition's repetitions as "
                         "one ensemble; with reps=1 there is nothing to group: use 2 or more "
                         "repetitions (e.g. --preset quick), or --ensemble auto or off")
    return option == "on" or (option == "auto" and reps > 1 and auto_groups(device))


def default_workers(jobs: int) -> int:
    """min(jobs, cores)."""
    return max(1, min(jobs, os.cpu_count() or 1))


@dataclass(frozen=True)
class Periodic:
    """Work a job does every ``every`` units of its size (a sleep, an evaluation):
    ``change(kwargs, every)`` returns the job's arguments with that period changed, so that
    a warm-up can turn it off or count its cost per event."""

    every: int
    change: Callable[[dict[str, Any], int], dict[str, Any]]


def periodic_argument(name: str, every: int) -> Periodic:
    """Work done every ``every`` units, its period the job's keyword argument ``name``."""
    return Periodic(every, lambda kwargs, period: {**kwargs, name: period})


def periodic_config_field(argument: str, name: str, every: int) -> Periodic:
    """Work done every ``every`` units, its period the field ``name`` of the job's
    :class:`~sharp.config.SharpConfig` argument ``argument`` (or of its
    :class:`~sharp.runs.registry.LearnerSpec`'s config)."""
    def change(kwargs: dict[str, Any], period: int) -> dict[str, Any]:
        value = kwargs[argument]
        if isinstance(value, LearnerSpec):
            value = dataclasses.replace(value, config={**value.config, name: period})
        else:
            value = value.replace(**{name: period})
        return {**kwargs, argument: value}

    return Periodic(every, change)


@dataclass(frozen=True)
class Size:
    """What a job's work grows in proportion to: its keyword argument ``name`` (samples,
    tokens), ``value`` at full size, and its ``periodic`` work (sleeps, evaluations); a
    duration warm-up (:func:`~sharp.experiments.estimate.job_seconds`) times the job at
    ``start`` units and more (the least length at which the job runs)."""

    name: str
    value: int
    start: int = 1_000
    periodic: tuple[Periodic, ...] = ()


@dataclass(frozen=True)
class JobCheckpoints:
    """Where and when a job checkpoints inside its loop: its own ``folder`` (the layout of
    :class:`~sharp.runs.jobs.JobFolder`) and the run's ``policy``."""

    folder: str
    policy: CheckpointPolicy


@dataclass(frozen=True)
class Job:
    """One unit of work: ``function(**kwargs)`` returns a DataFrame; ``labels`` are added
    as columns to it. ``size`` says which argument sets the job's length, for the duration
    estimate; ``checkpoints``, set by :func:`run_jobs` for a function that takes that
    keyword, where it checkpoints; ``members``, the learners it runs as one ensemble
    (SPEC §10; 1: a job of separate learners, or one), for the run's record (none of these
    is part of the job's content: :func:`job_id`)."""

    function: Callable[..., pd.DataFrame]
    kwargs: dict[str, Any]
    labels: dict[str, Any] = field(default_factory=dict)
    size: Size | None = None
    checkpoints: JobCheckpoints | None = None
    members: int = 1

    @property
    def checkpoints_inside(self) -> bool:
        """Whether the job's function checkpoints inside its loop (takes ``checkpoints``)."""
        return "checkpoints" in inspect.signature(self.function).parameters


def plain_content(value: Any) -> Any:
    """``value`` as plain JSON data that determines it (a dataclass by its type and
    fields, a class or function by its qualified name, an array by its dtype, shape and
    bytes' sha256), for :func:`job_id`. Raises TypeError for a value of another kind (its
    text may not be stable across runs)."""
    if isinstance(value, type) or inspect.isfunction(value):
        return {"name": f"{value.__module__}.{value.__qualname__}"}
    if dataclasses.is_dataclass(value):
        return {type(value).__qualname__: {f.name: plain_content(getattr(value, f.name))
                                           for f in dataclasses.fields(value)}}
    if isinstance(value, Mapping):
        return {str(key): plain_content(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain_content(item) for item in value]
    if isinstance(value, np.ndarray):
        data = np.ascontiguousarray(value)
        return {"ndarray": [str(data.dtype), list(data.shape),
                            hashlib.sha256(data.view(np.uint8)).hexdigest()]}
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise TypeError(f"a job's function, arguments and labels must be plain data, "
                    f"dataclasses, classes, functions or arrays (to name the job by its "
                    f"content); got {type(value).__name__}")


def job_id(job: Job) -> str:
    """The sha256 digest (hex) of everything that determines ``job``'s frame: its
    function (module and name), arguments and labels; the same job gets the same id in
    every run. Raises TypeError for an argument :func:`plain_content` cannot name."""
    content = {"function": plain_content(job.function), "kwargs": plain_content(job.kwargs),
               "labels": plain_content(job.labels)}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


class JobStore:
    """The finished jobs' frames of one run, ``<folder>/<job id>.parquet``, each written
    atomically as its job finishes, and the checkpoints of the unfinished ones that
    checkpoint inside their loop, ``<folder>/<job id>/`` (removed once the frame is
    stored). ``policy``: when those jobs checkpoint; ``on_save``: called after each frame
    is stored (e.g. to record the invocation's wall time so far)."""

    def __init__(self, folder: str | os.PathLike, policy: CheckpointPolicy | None = None,
                 on_save: Callable[[], None] | None = None) -> None:
        self.folder = Path(folder)
        self.policy = policy or CheckpointPolicy()
        self.on_save = on_save

    def path(self, job: Job) -> Path:
        """Where ``job``'s frame is stored."""
        return self.folder / f"{job_id(job)}.parquet"

    def checkpointed(self, job: Job) -> Job:
        """``job`` with its :class:`JobCheckpoints` (``<folder>/<job id>/``) when its
        function takes them, else ``job``."""
        if not job.checkpoints_inside:
            return job
        folder = (self.folder / job_id(job)).resolve()
        return dataclasses.replace(job, checkpoints=JobCheckpoints(str(folder), self.policy))

    def load(self, job: Job) -> pd.DataFrame | None:
        """``job``'s stored frame, or None: not stored, or unreadable (truncated, damaged:
        a RuntimeWarning names the file, and the job runs again)."""
        path = self.path(job)
        if not path.exists():
            return None
        try:
            return pd.read_parquet(path)
        except (OSError, ValueError) as error:
            warnings.warn(f"{path} is truncated or damaged ({error}); its job runs again",
                          RuntimeWarning, stacklevel=2)
            return None

    def save(self, job: Job, frame: pd.DataFrame) -> None:
        """Store ``job``'s finished frame atomically."""
        with atomic_path(self.path(job)) as tmp:
            frame.to_parquet(tmp, index=False)
        shutil.rmtree(self.folder / job_id(job), ignore_errors=True)  # its checkpoints
        if self.on_save is not None:
            self.on_save()

    def sweep(self) -> None:
        """Remove the temporary files of writes that were killed."""
        for path in self.folder.glob(".*.part"):
            path.unlink(missing_ok=True)

    def clear(self) -> None:
        """Remove every stored frame and job checkpoint folder (and :meth:`sweep`)."""
        for path in self.folder.glob("*.parquet"):
            path.unlink(missing_ok=True)
        for path in self.folder.iterdir() if self.folder.is_dir() else ():
            if path.is_dir() and re.fullmatch(r"[0-9a-f]{64}", path.name):
                shutil.rmtree(path, ignore_errors=True)
        self.sweep()


_STORE: ContextVar[JobStore | None] = ContextVar("sharp_job_store", default=None)
_PLANNING: ContextVar[bool] = ContextVar("sharp_planning_jobs", default=False)


class JobsPlanned(Exception):
    """What :func:`run_jobs` raises inside :func:`planned_jobs`: the ``jobs`` an experiment
    would run, raised before any of them runs (so the experiment stops there)."""

    def __init__(self, jobs: Sequence[Job]) -> None:
        super().__init__(f"{len(jobs)} jobs planned")
        self.jobs = list(jobs)


def planned_jobs(run: Callable[..., pd.DataFrame], parameters: Mapping[str, Any]) -> list[Job]:
    """The jobs ``run(**parameters)`` (an experiment) hands to :func:`run_jobs`, without
    running any of them. Raises RuntimeError if ``run`` returns without calling
    :func:`run_jobs`."""
    token = _PLANNING.set(True)
    try:
        run(**parameters)
    except JobsPlanned as planned:
        return planned.jobs
    finally:
        _PLANNING.reset(token)
    raise RuntimeError(f"{getattr(run, '__name__', run)} ran no jobs through run_jobs, so "
                       "its jobs cannot be planned")


@contextlib.contextmanager
def stored_jobs(folder: str | os.PathLike, policy: CheckpointPolicy | None = None,
                on_save: Callable[[], None] | None = None) -> Iterator[JobStore]:
    """Within the block, :func:`run_jobs` stores every finished job's frame under
    ``folder`` (a :class:`JobStore`, calling ``on_save`` after each) and reuses the frames
    stored there (by an earlier, killed run of the same jobs) instead of running their
    jobs again; the jobs that checkpoint inside their loop do so there by ``policy``
    (default :class:`~sharp.runs.jobs.CheckpointPolicy`) and resume from their
    checkpoints."""
    store = JobStore(folder, policy, on_save)
    token = _STORE.set(store)
    try:
        yield store
    finally:
        _STORE.reset(token)


def _run_job(job: Job, report: Callable[[int], None]) -> pd.DataFrame:
    torch.set_num_threads(1)
    extra = {} if job.checkpoints is None else {"checkpoints": job.checkpoints}
    with worker_warnings():
        frame = job.function(**job.kwargs, **extra)
    for key, value in reversed(list(job.labels.items())):
        if key in frame.columns:
            frame[key] = value
        else:
            frame.insert(0, key, value)
    report(1)
    return frame


def run_jobs(jobs: Sequence[Job], workers: int | None = None, *, progress: bool = True,
             description: str = "experiment") -> pd.DataFrame:
    """Run ``jobs`` (as local Ray tasks when ``workers`` > 1, see
    :mod:`sharp.runs.executor`) and concatenate their frames in job order. ``workers``
    defaults to min(jobs, cores); ValueError if it is below 1. Inside :func:`planned_jobs`
    it runs nothing and raises :class:`JobsPlanned`. Inside :func:`stored_jobs`
    the jobs whose frames are stored are not run (the progress bar counts them as done),
    each other job's frame is stored as soon as it finishes, and the jobs whose function
    takes a ``checkpoints`` keyword are handed theirs (:meth:`JobStore.checkpointed`)."""
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if _PLANNING.get():
        raise JobsPlanned(jobs)
    store = _STORE.get()
    frames: list[pd.DataFrame | None] = [None if store is None else store.load(job)
                                         for job in jobs]
    todo = [i for i, frame in enumerate(frames) if frame is None]
    resumed = len(jobs) - len(todo)

    def keep(k: int, frame: pd.DataFrame) -> None:
        frames[todo[k]] = frame
        if store is not None:
            store.save(jobs[todo[k]], frame)

    workers = default_workers(len(todo)) if workers is None else workers
    items = [jobs[i] if store is None else store.checkpointed(jobs[i]) for i in todo]
    run_tasks(_run_job, items, Executor(max(1, min(workers, len(todo)))),
              total=len(jobs), initial=resumed, progress=progress,
              description=f"{description} ({resumed} resumed)" if resumed else description,
              unit="run", on_result=keep)
    return pd.concat(frames, ignore_index=True)


# -- streams on the community task ----------------------------------------------------
def community_tokens(task: CommunityTask, samples: int, seed: int) -> np.ndarray:
    """The first ``samples`` tokens of a task stream drawn with ``seed``."""
    visits = -(-samples // task.tokens_per_visit)
    return task.generate(visits, seed)[:samples]


def online_curve(records: pd.DataFrame, every: int) -> pd.DataFrame:
    """Block means of per-step records over blocks of ``every`` steps: ``samples`` (steps
    seen at the block's end), ``error`` (1 − top-1 accuracy of predictions made before
    learning), ``bits`` and ``memory_update_rate``."""
    block = (records["step"] - 1) // every
    curve = records.groupby(block).agg(
        samples=("step", "max"), error=("correct", "mean"), bits=("bits", "mean"),
        memory_update_rate=("memory_learned", "mean"),
    ).reset_index(drop=True)
    curve["error"] = 1.0 - curve["error"]
    return curve


#: The per-step record columns :func:`online_curve` reads (what a checkpoint keeps).
CURVE_RECORDS = ("step", "bits", "correct", "memory_learned")


def stream_job(spec: LearnerSpec, task: dict[str, Any], samples: int, data_seed: int,
               every: int, sleep: bool, checkpoints: JobCheckpoints | None = None
               ) -> pd.DataFrame:
    """Stream one community-task sequence through a fresh learner once (sleeping on the
    learner's schedule when ``sleep``) and return its online-error curve.

    With ``checkpoints`` the job saves, by their policy, the learner's state and the
    per-step records so far (:class:`~sharp.runs.jobs.JobFolder`, as a bench job does) and
    resumes from its last good checkpoint to the curve of an uninterrupted run."""
    tokens = community_tokens(CommunityTask(**task), samples, data_seed)
    records = _stream_records(lambda: build_learner(spec), spec, tokens[None], sleep,
                              checkpoints)
    return online_curve(records, every)


def stream_ensemble_job(spec: LearnerSpec, seeds: Sequence[int], task: dict[str, Any],
                        samples: int, data_seeds: Sequence[int], every: int, sleep: bool,
                        checkpoints: JobCheckpoints | None = None) -> pd.DataFrame:
    """The repetitions of one community-task condition as one ensemble (SPEC §10,
    :func:`~sharp.runs.registry.build_ensemble`): member m (repetition m) computes
    ``stream_job(spec.with_seed(seeds[m]), task, samples, data_seeds[m], ...)`` (up to
    floating-point reduction order), every member on its own sequence, all in lockstep.
    Returns the members' curves in member order, each with ``rep`` (m) and ``seed``
    columns first. Checkpoints and resumes as :func:`stream_job` does, with the ensemble's
    state and every member's records. Raises ValueError for an empty or repeated seed list
    or one data seed per member missing."""
    if len(data_seeds) != len(seeds):
        raise ValueError(f"{len(seeds)} seeds but {len(data_seeds)} data seeds: give one "
                         "data seed per member")
    community = CommunityTask(**task)
    streams = np.stack([community_tokens(community, samples, seed) for seed in data_seeds])
    records = _stream_records(lambda: build_ensemble(spec, seeds), spec, streams, sleep,
                              checkpoints)
    return member_frames([online_curve(records[records["member"] == m], every)
                          for m in range(len(seeds))], seeds)


def _stream_records(build: Callable[[], Learner | SharpEnsemble | BaselineEnsemble],
                    spec: LearnerSpec, streams: np.ndarray, sleep: bool,
                    checkpoints: JobCheckpoints | None) -> pd.DataFrame:
    """The loop of :func:`stream_job` for the learner or ensemble ``build()`` makes of
    ``spec``: row m of ``streams`` (M, n) through learner m (M = 1 for a learner); the
    per-step records :data:`CURVE_RECORDS` (and ``member`` for an ensemble)."""
    folder = None if checkpoints is None else JobFolder(checkpoints.folder)
    if folder is None:
        model, step, records = build(), 0, []
    else:
        resumed = folder.restore(
            lambda path: load_checkpoint(path, device=spec.config.get("device")), build)
        folder.start_attempt(resumed.step)
        model, step, records = resumed.learner, resumed.step, resumed.records
    total = n_windows(streams.shape[1], model.window)
    piece = total if checkpoints is None else min(PIECE, checkpoints.policy.every_tokens)
    saved_step, saved_at = step, time.monotonic()
    unsaved: list[pd.DataFrame] = []
    sleep_every = None if sleep else 0
    while step < total:
        stop = min(step + piece, total)
        part = streams[:, step : stop + model.window]
        if isinstance(model, SharpEnsemble | BaselineEnsemble):
            unsaved.append(run_ensemble_stream(model, part, offset=step,
                                               sleep_every=sleep_every)[[*CURVE_RECORDS,
                                                                         "member"]])
        else:
            unsaved.append(run_stream(model, part[0], sleep_every=sleep_every, offset=step,
                                      progress=False)[list(CURVE_RECORDS)])
        step = stop
        if (folder is not None and checkpoints is not None and step < total
                and checkpoints.policy.due(step - saved_step, time.monotonic() - saved_at)):
            folder.save(model, pd.concat(unsaved), step=step, document=0, offset=step,
                        train_seconds=0.0, keep=checkpoints.policy.keep)
            saved_step, saved_at = step, time.monotonic()
            records, unsaved = records + unsaved, []
    return pd.concat(records + unsaved, ignore_index=True)


# -- community-task experiments (SPEC §8, 2-4) ----------------------------------------
@dataclass(frozen=True)
class CommunityStream:
    """The stream every run of a community-task experiment sees: C = 2 communities of
    N = 3 members, the direction ``rule``, ``samples`` tokens seen once, the online error
    in blocks of ``every`` tokens. Repetition r draws fresh data with its own seed, or
    the base ``seed``'s sequence for every repetition when ``reuse_sequence``."""

    samples: int
    every: int
    rule: Literal["hash", "sum"] = "hash"
    seed: int = 0
    reuse_sequence: bool = False

    def task(self, depth: int) -> CommunityTask:
        """The task with context depth ``depth``."""
        return CommunityTask(depth=depth, rule=self.rule)

    def data_seed(self, rep_seed: int) -> int:
        """Seed of the sequence a repetition with seed ``rep_seed`` streams."""
        return self.seed if self.reuse_sequence else rep_seed


@dataclass(frozen=True)
class Condition:
    """One learner of a community-task experiment: its recipe (the label names the
    condition), whether it sleeps on its own schedule, and columns labelling its rows."""

    spec: LearnerSpec
    sleep: bool = False
    columns: Mapping[str, Any] = field(default_factory=dict)


def required_context(depth: int, members: int = 3) -> int:
    """Required context of SPEC §8 for context depth K: N·K + 1 tokens (3K + 1 = 7, 13,
    19 for N = 3 and K = 2, 4, 6)."""
    return members * depth + 1


def window_error(task: CommunityTask, window: int) -> float:
    """Online error of the best predictor that sees only the last ``window`` tokens: when
    it predicts a visit's second member (the only token whose guess needs the direction)
    the window shows the newest ⌊(W + N − 2)/(N + 1)⌋ of the K community choices deciding
    the direction, and it bets on the likelier direction given those. Equals
    ``task.optimal_error`` once the window holds all K (e.g. W = 7 for K = 2, N = 3);
    0.2708 for W = 4 on the hash rule with K = 2 or 4."""
    c, n, k = task.communities, task.members, task.depth
    known = min(k, max(0, (window + n - 2) // (n + 1)))
    histories = np.array(list(itertools.product(range(c), repeat=k)), dtype=np.int64)
    odd = np.array([task.directions(np.append(h, 0))[-1] < 0 for h in histories])
    odd = odd.reshape(c ** (k - known), c**known).mean(axis=0)  # per newest `known`
    wrong = float(np.minimum(odd, 1.0 - odd).mean()) if n >= 3 else 0.0
    return (1.0 - 1.0 / (c * n) + wrong) / (n + 1)


#: W of the ``simulation`` preset: the window of SHARP in experiments 3 and 4.
SIMULATION_WINDOW: int = preset("simulation").window


def sharp_spec(config: SharpConfig, task: CommunityTask, seed: int, label: str = "",
               **changes: Any) -> LearnerSpec:
    """SHARP with ``config`` and the condition's ``changes``, sized for ``task`` and
    seeded with ``seed``."""
    config = config.replace(vocab_size=task.vocab_size, seed=seed, **changes)
    return LearnerSpec("sharp", config.to_dict(), label)


def rnn_spec(config: SharpConfig, task: CommunityTask, seed: int, label: str,
             **changes: Any) -> LearnerSpec:
    """A vanilla RNN the size of ``config`` (its layers, layer 0's hidden size, embedding,
    window and learning rate) with ``changes`` (e.g. the streaming ``mode``), sized for
    ``task`` and seeded with ``seed``."""
    return baseline_spec("rnn", "quick", label=label, vocab_size=task.vocab_size,
                         layers=config.layers, hidden=config.hidden[0],
                         embedding=config.embedding, window=config.window, lr=config.lr,
                         seed=seed, **changes)


def _sleeps(condition: Condition) -> tuple[Periodic, ...]:
    """The periodic work of a condition's stream: its sleeps, if it sleeps on a schedule."""
    every = condition.spec.config.get("sleep_every") if condition.sleep else None
    return (periodic_config_field("spec", "sleep_every", every),) if every else ()


def community_runs(
    conditions: Callable[[CommunityTask, int], Iterable[Condition]],
    stream: CommunityStream,
    *,
    depths: Sequence[int],
    reps: int,
    workers: int | None = None,
    progress: bool = True,
    description: str = "experiment",
    ensemble: str = "auto",
) -> pd.DataFrame:
    """Stream each of ``conditions(task, rep_seed)`` once over the task of every context
    depth, ``reps`` times; repetition r gives every condition and depth the same seed
    (:func:`rep_seeds`) and so the same data. Where ``ensemble`` groups
    (:func:`group_repetitions`, by the device of the first condition's learner), the
    repetitions of each condition and depth whose learners differ only in their seed and
    that sleep alike run as one :func:`stream_ensemble_job`; the others, one
    :func:`stream_job` each. Columns (rows repetition-major): condition, the conditions'
    own columns, depth, context, rep, seed, samples, error, bits, memory_update_rate,
    optimal_error. Raises what :func:`group_repetitions` raises, before any job runs."""
    seeds = rep_seeds(stream.seed, reps)
    runs = {rep_seed: {depth: list(conditions(stream.task(depth), rep_seed))
                       for depth in depths} for rep_seed in seeds}
    device = next((str(condition.spec.config.get("device", "auto"))
                   for per_depth in runs[seeds[0]].values() for condition in per_depth), "auto")
    grouped = group_repetitions(ensemble, device, reps)
    jobs = []
    for rep, rep_seed in enumerate(seeds):
        for depth in depths:
            task = {"depth": depth, "rule": stream.rule}
            labels = {"depth": depth, "context": required_context(depth)}
            for i, condition in enumerate(runs[rep_seed][depth]):
                size = Size("samples", stream.samples, periodic=_sleeps(condition))
                columns = {"condition": condition.spec.name, **condition.columns, **labels}
                group = [runs[s][depth][i] for s in seeds]
                if not (grouped and _groupable(group)):
                    jobs.append(Job(stream_job, {
                        "spec": condition.spec, "task": task, "samples": stream.samples,
                        "data_seed": stream.data_seed(rep_seed), "every": stream.every,
                        "sleep": condition.sleep,
                    }, {**columns, "rep": rep, "seed": rep_seed}, size))
                elif rep == 0:  # one job for all the condition's repetitions
                    jobs.append(Job(stream_ensemble_job, {
                        "spec": condition.spec, "seeds": seeds, "task": task,
                        "samples": stream.samples,
                        "data_seeds": [stream.data_seed(s) for s in seeds],
                        "every": stream.every, "sleep": condition.sleep,
                    }, columns, size, members=len(seeds)))
    frame = repetition_major(run_jobs(jobs, workers, progress=progress,
                                      description=description))
    frame["optimal_error"] = CommunityTask().optimal_error
    return frame


def _groupable(group: Sequence[Condition]) -> bool:
    """Whether the repetitions ``group`` of one condition can run as one ensemble: their
    learners differ only in their seed and they sleep alike."""
    first = group[0]
    return all(condition.spec.with_seed(0) == first.spec.with_seed(0)
               and condition.sleep == first.sleep for condition in group)


def late_error(frame: pd.DataFrame, by: Sequence[str], fraction: float = 0.25) -> pd.Series:
    """Mean online error of every repetition over the last ``fraction`` of its stream,
    indexed by ``by`` + ``rep`` (the quantity the summaries and notebook checks compare)."""
    late = frame[frame["samples"] > (1.0 - fraction) * frame["samples"].max()]
    return late.groupby([*by, "rep"], sort=False)["error"].mean()


# -- memory training (layer-0 wake rule) ----------------------------------------------
def train_memory(
    memory: Memory,
    tokens: np.ndarray,
    config: SharpConfig,
    *,
    every: int | None = None,
    callback: Callable[[int, int], None] | None = None,
) -> int:
    """Train a token memory online with the wake rule of SPEC §3 steps 2–3 and memory 0's
    settings in ``config`` (``window``, ``lr``, ``weight_decay``, ``ema``, ``tau``):
    stride-1 windows encoded from the carried state, one Adam step whenever the recall-loss
    EMA exceeds ``tau`` (``tau = 0``: every step). ``tokens``: (T,) ids, T >= window.
    ``callback(step, updates)`` runs every ``every`` steps. Returns the number of updates."""
    window = config.window
    optimiser = FusedAdam([memory.parameters()], [config.lr], weight_decay=config.weight_decay)
    ids = torch.as_tensor(token_array(tokens), dtype=torch.long, device=memory.device)
    carry = torch.zeros(1, memory.hidden, device=memory.device)
    gate, updates = RecallGate(config.ema, config.tau), 0
    for i in range(len(ids) - window + 1):
        x = ids[i : i + window].unsqueeze(0)
        recall, _, after_first = memory.encode(x, carry)
        loss = memory.recall_loss(x, recall)
        carry = after_first.detach()
        if gate.update(loss.item()):
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            updates += 1
        if callback is not None and every and (i + 1) % every == 0:
            callback(i + 1, updates)
    return updates


def token_memory(config: SharpConfig, vocab_size: int, seed: int) -> Memory:
    """A fresh layer-0 token memory of ``config`` (its window, layer 0's hidden size and
    the embedding) over ``vocab_size`` tokens, initialised from ``seed`` without touching
    the global random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Memory(vocab_size, config.hidden[0], config.embedding, config.window,
                      tokens=True)


@torch.no_grad()
def memory_states(memory: Memory, tokens: np.ndarray) -> np.ndarray:
    """Persistent states (T, H) after each token of ``tokens``, from a zero state (what a
    head would see), as a host array whatever device ``memory`` is on."""
    ids = torch.as_tensor(token_array(tokens), dtype=torch.long, device=memory.device)
    return memory.trajectory(ids, torch.zeros(memory.hidden, device=memory.device)).cpu().numpy()


# -- figures --------------------------------------------------------------------------
COLOURS = qualitative.Plotly + qualitative.D3


def quantiles(frame: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Median and interquartile range of ``y`` across repetitions at every ``x``."""
    group = frame.groupby(x)[y]
    return pd.DataFrame({
        "median": group.median(), "q25": group.quantile(0.25), "q75": group.quantile(0.75),
    }).reset_index()


def add_band(fig: go.Figure, frame: pd.DataFrame, x: str, y: str, name: str, colour: str,
             *, row: int = 1, col: int = 1, show_legend: bool = True,
             dash: str | None = None, markers: bool = False) -> None:
    """Median line with an interquartile band (across repetitions) of ``y`` against ``x``."""
    stats = quantiles(frame, x, y)
    common = {"legendgroup": name, "hoverinfo": "skip", "showlegend": False}
    fig.add_trace(go.Scatter(x=stats[x], y=stats["q75"], line={"width": 0}, mode="lines",
                             name=f"{name} q75", **common), row=row, col=col)
    fig.add_trace(go.Scatter(x=stats[x], y=stats["q25"], line={"width": 0}, mode="lines",
                             fill="tonexty", fillcolor=alpha(colour), name=f"{name} q25",
                             **common), row=row, col=col)
    fig.add_trace(go.Scatter(x=stats[x], y=stats["median"], name=name, legendgroup=name,
                             showlegend=show_legend, mode="lines+markers" if markers else "lines",
                             line={"color": colour, "width": 3, "dash": dash}),
                  row=row, col=col)


def band_figure(
    frame: pd.DataFrame,
    *,
    x: str,
    y: str,
    condition: str = "condition",
    panel: str | None = None,
    panel_order: Sequence[Any] | None = None,
    panel_title: Callable[[Any], str] = str,
    optimal: float | None = None,
    optimal_name: str = "optimal",
    levels: Mapping[str, str] | None = None,
    title: str = "",
    x_title: str = "",
    y_title: str = "",
    log_y: bool = False,
    markers: bool = False,
) -> go.Figure:
    """One panel per value of ``panel`` (or one panel), one median line + IQR band per
    ``condition``; a dashed black line at ``optimal`` when given; for every ``levels``
    entry (column -> legend name) a dotted grey line at that column's value in each
    panel."""
    panels = [None] if panel is None else list(panel_order or frame[panel].unique())
    fig = make_subplots(rows=1, cols=len(panels), shared_yaxes=True,
                        subplot_titles=[panel_title(p) for p in panels] if panel else None)
    conditions = list(frame[condition].unique())
    for j, value in enumerate(panels, start=1):
        part = frame if panel is None else frame[frame[panel] == value]
        for i, name in enumerate(conditions):
            sub = part[part[condition] == name]
            if not sub.empty:
                add_band(fig, sub, x, y, str(name), COLOURS[i % len(COLOURS)], col=j,
                         show_legend=j == 1, markers=markers)
        xs = part[x]
        if optimal is not None:
            fig.add_trace(go.Scatter(x=[xs.min(), xs.max()], y=[optimal, optimal],
                                     mode="lines", name=optimal_name, legendgroup="optimal",
                                     showlegend=j == 1,
                                     line={"color": "black", "dash": "dash", "width": 2}),
                          row=1, col=j)
        for column, name in (levels or {}).items():
            level = float(part[column].iloc[0])
            fig.add_trace(go.Scatter(x=[xs.min(), xs.max()], y=[level, level], mode="lines",
                                     name=name, legendgroup=column, showlegend=j == 1,
                                     line={"color": "grey", "dash": "dot", "width": 2}),
                          row=1, col=j)
        fig.update_xaxes(title_text=x_title or x, row=1, col=j)
    fig.update_yaxes(title_text=y_title or y, row=1, col=1)
    if log_y:
        fig.update_yaxes(type="log")
    fig.update_layout(title=title, template="plotly_white", height=420,
                      width=max(600, 420 * len(panels)))
    return fig


# -- registry -------------------------------------------------------------------------
@dataclass(frozen=True)
class Experiment:
    """An experiment of SPEC §8: its run and figure functions, parameter presets, the
    paper's qualitative claim and a summary function (DataFrame -> markdown lines);
    ``ensembles``: whether its run takes ``ensemble`` (``auto``, ``on``, ``off``: its
    repetitions may run as ensemble jobs, SPEC §10)."""

    name: str
    number: int
    title: str
    run: Callable[..., pd.DataFrame]
    figure: Callable[[pd.DataFrame], go.Figure]
    presets: Mapping[str, Mapping[str, Any]]
    claim: str
    summarise: Callable[[pd.DataFrame], list[str]] = lambda frame: []
    ensembles: bool = False

    def parameters(self, preset: str, **overrides: Any) -> dict[str, Any]:
        """The preset's keyword arguments with ``overrides`` applied. A ``config`` override
        given as a mapping changes those fields of the preset's configuration (e.g.
        ``config={"lr": 1e-3}``); a :class:`~sharp.config.SharpConfig` replaces it."""
        if preset not in self.presets:
            raise ValueError(f"unknown preset {preset!r} for {self.name}; choose one of "
                             f"{list(self.presets)}")
        parameters = {**self.presets[preset], **overrides}
        changes = overrides.get("config")
        if isinstance(changes, Mapping):
            signature = inspect.signature(self.run).parameters
            if "config" not in signature:
                raise TypeError(f"{self.name} takes no SHARP configuration")
            base = self.presets[preset].get("config", signature["config"].default)
            parameters["config"] = base.replace(**changes)
        return parameters

    def __call__(self, preset: str = "quick", **overrides: Any) -> pd.DataFrame:
        return self.run(**self.parameters(preset, **overrides))


REGISTRY: dict[str, Experiment] = {}


def register(experiment: Experiment) -> Experiment:
    """Add ``experiment`` to :data:`REGISTRY`."""
    REGISTRY[experiment.name] = experiment
    return experiment
