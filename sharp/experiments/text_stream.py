"""The text-stream protocol shared by the sleep ablation (8) and the threshold sweep (9).

One stream of ``train_tokens`` characters of a corpus is learned once by a fresh SHARP
learner per condition and repetition; every ``every`` steps the learner is evaluated
without learning (curve mode) on three slices, each from a reset state:

* ``backward`` — the first ``eval_tokens`` tokens of the stream (retention),
* ``current`` — the last ``eval_tokens`` tokens seen so far (adaptation),
* ``forward`` — the corpus's last ``eval_tokens`` tokens, never trained on.

A condition is a :class:`TextCondition`: label columns, changes to the shared
configuration (:data:`CONFIG` unless given), whether it sleeps, and the learner class.
Every condition of a repetition uses the same seed and stream.

The repetitions of a condition differ only in their seed, so they may run as one ensemble
(SPEC §10, :class:`~sharp.engines.ensemble.SharpEnsemble`): ``ensemble="on"`` makes every
condition whose learner is plain :class:`~sharp.model.learner.Sharp` (learned or dense
inputs) one :func:`text_ensemble_job`, ``"off"`` runs one :func:`text_curve_job` per
repetition, ``"auto"`` groups where ``sharp bench --ensemble auto`` does
(:func:`~sharp.experiments.common.group_repetitions`: on CUDA or MPS, never on the CPU).
Either way the rows are the same up to floating-point rounding (the ensemble follows the
torch engine, a separate learner the fused one; over thousands of steps with sleeps the two
drift apart as the two engines do).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict, Unpack, cast

import numpy as np
import pandas as pd
import torch

from sharp.config import SharpConfig, preset
from sharp.data.corpus import load_corpus
from sharp.engines.ensemble import SharpEnsemble
from sharp.experiments.common import (
    Job,
    JobCheckpoints,
    Size,
    group_repetitions,
    member_frames,
    periodic_argument,
    periodic_config_field,
    rep_seeds,
    repetition_major,
    run_jobs,
)
from sharp.model.learner import Sharp
from sharp.runs.checkpoints import CheckpointError, load_checkpoint
from sharp.runs.jobs import PIECE, JobFolder
from sharp.runs.stream import (
    evaluate_ensemble_slices,
    evaluate_slices,
    run_ensemble_stream,
    run_stream,
)

SLICES = ("forward", "current", "backward")


class TextStream(TypedDict, total=False):
    """Keyword arguments of the text experiments besides the configuration (defaults:
    :data:`DEFAULTS`)."""

    corpus: str  # corpus name (bundled wiki / books, or text8)
    train_tokens: int  # tokens streamed once
    eval_tokens: int  # tokens per evaluation slice
    every: int  # steps between evaluations
    reps: int  # repetitions (one seed each, shared by the conditions)
    seed: int  # base seed of the repetitions
    workers: int | None  # processes (None: min(runs, cores))
    progress: bool  # progress bar
    ensemble: str  # auto, on, off: each condition's repetitions as one ensemble job


#: The quick stream: 6,000 tokens of ``wiki``, slices of 500 evaluated every 1,000 steps,
#: two repetitions (grouped into ensembles where ``sharp bench --ensemble auto`` groups).
DEFAULTS: TextStream = {
    "corpus": "wiki", "train_tokens": 6_000, "eval_tokens": 500, "every": 1_000, "reps": 2,
    "seed": 0, "workers": None, "progress": True, "ensemble": "auto",
}

#: The quick scale of the text8-small configuration (W = 4, FiLM heads): a wide memory 0
#: (256 units) at lr 1e-3 learns to recall text windows within a few thousand tokens, so
#: the recall gate has something to show; full sleeps (W^L + 1 replay steps from each of
#: 20 tags) every 1000 steps.
CONFIG = preset("text8-small", layers=3, hidden=(256, 64, 64), lr=1e-3, sleep_every=1_000)
#: The tiny scale (tests): 2 layers of 8 units, short sleeps.
TINY = CONFIG.replace(layers=2, hidden=8, embedding=4, sleep_every=150, sleep_steps=5,
                      tag_buffer=2)
#: The paper's text8 scale: 5 layers of 128 units, lr 1e-4, sleeping every 20,000 steps.
PAPER = CONFIG.replace(layers=5, hidden=128, lr=1e-4, sleep_every=20_000)


@dataclass(frozen=True)
class TextCondition:
    """One condition of a text experiment: the columns that label its rows, its changes to
    the shared configuration, whether it sleeps on its schedule, and its learner class."""

    labels: dict[str, Any]
    changes: dict[str, Any] = field(default_factory=dict)
    sleep: bool = True
    learner: type[Sharp] = Sharp


#: A text job's model: one learner, or the ensemble of a condition's repetitions.
Model = Sharp | SharpEnsemble
#: Rows of a text job's frame, one list per learner (one for a learner, M for an ensemble).
Rows = list[list[dict[str, Any]]]


def text_curve_job(config: SharpConfig, corpus: str, train_tokens: int, eval_tokens: int,
                   every: int, sleep: bool, learner: type[Sharp] = Sharp,
                   checkpoints: JobCheckpoints | None = None) -> pd.DataFrame:
    """Stream the first ``train_tokens`` tokens of ``corpus`` through a fresh ``learner``
    once, evaluating the three slices every ``every`` steps. One row per checkpoint ×
    slice; ``memory_update_rate`` is memory 0's over the interval.

    With ``checkpoints`` the job saves, by their policy, the learner's state, the rows so
    far and the stream offset (:class:`~sharp.runs.jobs.JobFolder`: atomic writes, the
    manifest last) and resumes from its last good checkpoint: a job killed at any moment
    returns the frame an uninterrupted one does. Raises ValueError for a corpus shorter
    than ``train_tokens + eval_tokens``."""
    (rows,) = _curves(lambda: learner(config), lambda path: _restore(learner, config, path),
                      corpus, train_tokens, eval_tokens, every, sleep, checkpoints)
    return pd.DataFrame(rows)


def text_ensemble_job(config: SharpConfig, seeds: Sequence[int], corpus: str,
                      train_tokens: int, eval_tokens: int, every: int, sleep: bool,
                      checkpoints: JobCheckpoints | None = None) -> pd.DataFrame:
    """The repetitions of one condition as one ensemble (SPEC §10): member m (repetition
    m) computes ``text_curve_job(config.replace(seed=seeds[m]), ...)`` (up to
    floating-point reduction order: the ensemble follows the torch engine), all members
    streamed in lockstep, sleeping at the steps a separate learner sleeps at and evaluated
    together. Returns the members' frames in member order, each with ``rep`` (m) and
    ``seed`` columns first. Checkpoints and resumes as :func:`text_curve_job` does, with
    the ensemble's state. Raises what :func:`text_curve_job` and
    :class:`~sharp.engines.ensemble.SharpEnsemble` raise (ValueError for an empty or
    repeated seed list)."""
    members = _curves(lambda: SharpEnsemble(config, seeds),
                      lambda path: load_checkpoint(path, device=config.device),
                      corpus, train_tokens, eval_tokens, every, sleep, checkpoints)
    return member_frames([pd.DataFrame(rows) for rows in members], seeds)


def _curves(build: Callable[[], Model], load: Callable[[Path], Model], corpus: str,
            train_tokens: int, eval_tokens: int, every: int, sleep: bool,
            checkpoints: JobCheckpoints | None) -> Rows:
    """The loop of :func:`text_curve_job` for a model ``build()`` makes (``load(path)``
    restores a checkpoint's state file): the rows of each of its learners."""
    tokens = load_corpus(corpus).tokens.astype(np.int64)
    if train_tokens + eval_tokens > len(tokens):
        raise ValueError(f"corpus {corpus!r} has {len(tokens)} tokens, fewer than "
                         f"train_tokens + eval_tokens = {train_tokens + eval_tokens}")
    folder = None if checkpoints is None else JobFolder(checkpoints.folder)
    if folder is None:
        model, offset, saved = build(), 0, {}
    else:
        resumed = folder.restore(load, build)
        folder.start_attempt(resumed.step)
        model, offset, saved = cast(Model, resumed.learner), resumed.offset, resumed.extra
        if not isinstance(saved.get("learned", []), list):  # one learner's, saved before
            saved = {key: [value] for key, value in saved.items()}  # ensembles: one lane
    lanes = model.members if isinstance(model, SharpEnsemble) else 1
    window = model.window
    train = tokens[:train_tokens]
    slices = {"forward": tokens[-eval_tokens:], "current": train[:0],
              "backward": train[:eval_tokens]}
    total = len(train) - window
    rows: Rows = saved.get("rows", [[] for _ in range(lanes)])
    learned = np.array(saved.get("learned", [0] * lanes), dtype=np.int64)
    slept = np.array(saved.get("slept", [0] * lanes), dtype=np.int64)
    piece = every if checkpoints is None else min(PIECE, checkpoints.policy.every_tokens)
    saved_step, saved_at = offset, time.monotonic()
    while offset < total:
        end = min((offset // every + 1) * every, total)  # the next evaluation
        stop = min(offset + piece, end)
        counts = _learn(model, train[offset : stop + window], sleep, offset)
        learned += counts[0]
        slept += counts[1]
        offset = stop
        if offset == end:
            seen = end + window
            slices["current"] = train[max(0, seen - eval_tokens) : seen]
            interval = end - (end - 1) // every * every
            for lane, frame in enumerate(_evaluate(model, slices)):
                rows[lane] += [{"samples": end, "slice": row.slice, "bits": float(row.bits),
                                "accuracy": float(row.accuracy),
                                "memory_update_rate": int(learned[lane]) / interval,
                                "sleeps": int(slept[lane])}
                               for row in frame.itertuples(index=False)]
            learned[:] = slept[:] = 0
        if (folder is not None and checkpoints is not None and offset < total
                and checkpoints.policy.due(offset - saved_step, time.monotonic() - saved_at)):
            folder.save(model, None, step=offset, document=0, offset=offset,
                        train_seconds=0.0, keep=checkpoints.policy.keep,
                        extra={"rows": rows, "learned": learned.tolist(),
                               "slept": slept.tolist()})
            saved_step, saved_at = offset, time.monotonic()
    return rows


def _learn(model: Model, tokens: np.ndarray, sleep: bool, offset: int) -> np.ndarray:
    """Stream ``tokens`` through ``model`` (every member of an ensemble reads them) from
    global step ``offset``, sleeping on its schedule if ``sleep``; returns (2, learners):
    per learner, the steps memory 0 learned and the sleep phases."""
    sleep_every = None if sleep else 0
    if isinstance(model, SharpEnsemble):  # records step-major, member-minor
        lanes = model.members
        records = run_ensemble_stream(model, np.tile(tokens, (lanes, 1)), offset=offset,
                                      sleep_every=sleep_every)
    else:
        lanes = 1
        records = run_stream(model, tokens, sleep_every=sleep_every, offset=offset,
                             progress=False)
    flags = records[["memory_learned", "slept"]].to_numpy(dtype=np.int64)
    return flags.reshape(-1, lanes, 2).sum(axis=0).T


def _evaluate(model: Model, slices: dict[str, np.ndarray]) -> list[pd.DataFrame]:
    """Each learner of ``model`` evaluated on ``slices`` without learning, from a reset
    state: one frame per learner, one row per slice."""
    if isinstance(model, SharpEnsemble):
        return evaluate_ensemble_slices(model, [slices] * model.members)
    return [evaluate_slices(model, slices)]


def _restore(learner: type[Sharp], config: SharpConfig, path: Path) -> Sharp:
    """A ``learner`` of ``config`` restored from the state file at ``path``. Raises
    :class:`~sharp.runs.checkpoints.CheckpointError` for a file that cannot be restored."""
    model = learner(config)
    try:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as error:  # a damaged file can fail anywhere in the unpickler
        raise CheckpointError(f"{path} cannot be restored: {type(error).__name__}: "
                              f"{error}") from error
    return model


def groupable(condition: TextCondition) -> bool:
    """Whether a condition can run as a SHARP ensemble: its learner
    is plain :class:`~sharp.model.learner.Sharp` (a subclass such as the wake-only ablation
    adds steps the ensemble does not have)."""
    return condition.learner is Sharp


def text_curves(conditions: Sequence[TextCondition], *, description: str,
                config: SharpConfig = CONFIG, **stream: Unpack[TextStream]) -> pd.DataFrame:
    """Run every condition × repetition of the text protocol (in parallel processes), each
    condition ``config`` with its changes, and return one frame, repetition-major: the
    conditions' labels, ``rep``, ``seed``, then the columns of :func:`text_curve_job`.
    Where ``ensemble`` groups (:func:`~sharp.experiments.common.group_repetitions`), each
    :func:`groupable`
    condition's repetitions run as one :func:`text_ensemble_job`; the others, one
    :func:`text_curve_job` each. Raises TypeError for an unknown option and what
    :func:`~sharp.experiments.common.group_repetitions` raises, before any job runs."""
    unknown = sorted(set(stream) - set(DEFAULTS))
    if unknown:
        raise TypeError(f"unknown text-stream options {unknown}; known: "
                        f"{sorted([*DEFAULTS, 'config'])}")
    options: dict[str, Any] = {**DEFAULTS, **stream}
    grouped = group_repetitions(options["ensemble"], config.device, options["reps"])
    seeds = rep_seeds(options["seed"], options["reps"])
    common = {"corpus": options["corpus"], "train_tokens": options["train_tokens"],
              "eval_tokens": options["eval_tokens"], "every": options["every"]}
    jobs = []
    for rep, rep_seed in enumerate(seeds):
        for condition in conditions:
            changed = config.replace(**condition.changes, seed=rep_seed)
            size = Size("train_tokens", options["train_tokens"], periodic=(
                periodic_argument("every", options["every"]),
                *([periodic_config_field("config", "sleep_every", changed.sleep_every)]
                  if condition.sleep and changed.sleep_every else [])))
            if not (grouped and groupable(condition)):
                jobs.append(Job(text_curve_job, {
                    "config": changed, **common, "sleep": condition.sleep,
                    "learner": condition.learner,
                }, {**condition.labels, "rep": rep, "seed": rep_seed}, size))
            elif rep == 0:  # one job for all the condition's repetitions
                jobs.append(Job(text_ensemble_job, {
                    "config": changed, "seeds": seeds, **common, "sleep": condition.sleep,
                }, condition.labels, size, members=len(seeds)))
    return repetition_major(run_jobs(jobs, options["workers"], progress=options["progress"],
                                     description=description))
