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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict, Unpack

import numpy as np
import pandas as pd

from sharp.config import SharpConfig, preset
from sharp.data.corpus import load_corpus
from sharp.experiments.common import (
    Job,
    Size,
    periodic_argument,
    periodic_config_field,
    rep_seeds,
    run_jobs,
)
from sharp.model.learner import Sharp
from sharp.runs.stream import evaluate_slices, run_stream

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


#: The quick stream: 6,000 tokens of ``wiki``, slices of 500 evaluated every 1,000 steps,
#: two repetitions.
DEFAULTS: TextStream = {
    "corpus": "wiki", "train_tokens": 6_000, "eval_tokens": 500, "every": 1_000, "reps": 2,
    "seed": 0, "workers": None, "progress": True,
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


def text_curve_job(config: SharpConfig, corpus: str, train_tokens: int, eval_tokens: int,
                   every: int, sleep: bool, learner: type[Sharp] = Sharp) -> pd.DataFrame:
    """Stream the first ``train_tokens`` tokens of ``corpus`` through a fresh ``learner``
    once, evaluating the three slices every ``every`` steps. One row per checkpoint ×
    slice; ``memory_update_rate`` is memory 0's over the interval."""
    tokens = load_corpus(corpus).tokens.astype(np.int64)
    if train_tokens + eval_tokens > len(tokens):
        raise ValueError(f"corpus {corpus!r} has {len(tokens)} tokens, fewer than "
                         f"train_tokens + eval_tokens = {train_tokens + eval_tokens}")
    model = learner(config)
    window = model.window
    train = tokens[:train_tokens]
    forward = tokens[-eval_tokens:]
    backward = train[:eval_tokens]
    total = len(train) - window
    rows = []
    for start in range(0, total, every):
        stop = min(start + every, total)
        records = run_stream(model, train[start : stop + window],
                             sleep_every=None if sleep else 0, offset=start, progress=False)
        seen = stop + window
        current = train[max(0, seen - eval_tokens) : seen]
        evaluation = evaluate_slices(model, {"forward": forward, "current": current,
                                             "backward": backward})
        for row in evaluation.itertuples(index=False):
            rows.append({"samples": stop, "slice": row.slice, "bits": row.bits,
                         "accuracy": row.accuracy,
                         "memory_update_rate": float(records["memory_learned"].mean()),
                         "sleeps": int(records["slept"].sum())})
    return pd.DataFrame(rows)


def text_curves(conditions: Sequence[TextCondition], *, description: str,
                config: SharpConfig = CONFIG, **stream: Unpack[TextStream]) -> pd.DataFrame:
    """Run every condition × repetition of the text protocol (in parallel processes), each
    condition ``config`` with its changes, and return one frame: the conditions' labels,
    ``rep``, ``seed``, then the columns of :func:`text_curve_job`."""
    unknown = sorted(set(stream) - set(DEFAULTS))
    if unknown:
        raise TypeError(f"unknown text-stream options {unknown}; known: "
                        f"{sorted([*DEFAULTS, 'config'])}")
    options: dict[str, Any] = {**DEFAULTS, **stream}
    jobs = []
    for rep, rep_seed in enumerate(rep_seeds(options["seed"], options["reps"])):
        for condition in conditions:
            changed = config.replace(**condition.changes, seed=rep_seed)
            jobs.append(Job(text_curve_job, {
                "config": changed, "corpus": options["corpus"],
                "train_tokens": options["train_tokens"], "eval_tokens": options["eval_tokens"],
                "every": options["every"], "sleep": condition.sleep,
                "learner": condition.learner,
            }, {**condition.labels, "rep": rep, "seed": rep_seed},
                Size("train_tokens", options["train_tokens"], periodic=(
                    periodic_argument("every", options["every"]),
                    *([periodic_config_field("config", "sleep_every", changed.sleep_every)]
                      if condition.sleep and changed.sleep_every else [])))))
    return run_jobs(jobs, options["workers"], progress=options["progress"],
                    description=description)
