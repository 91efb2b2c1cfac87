"""The segment benchmark of SPEC §6: M fresh learners, one segment each, three slices."""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sharp.data.corpus import Corpus, corpus_splits
from sharp.data.streams import plan_segments
from sharp.engines.runtime import resolve_device
from sharp.runs.executor import Executor, run_tasks
from sharp.runs.jobs import (
    CheckpointPolicy,
    EnsembleJob,
    Job,
    JobFolder,
    LearnerJob,
    Report,
    group_jobs,
    run_job,
)
from sharp.runs.progress import worker_warnings
from sharp.runs.registry import LearnerSpec

#: Why the book protocol never groups learners into ensembles.
BOOKS_NOT_GROUPED = ("the book protocol cannot run learners as ensembles: its learners' "
                     "documents (books) differ in length, and an ensemble streams its members "
                     "in lockstep; use --ensemble off (notebook: ensemble='off') or auto")
#: Books (or the budget's remnant of one) shorter than this are neither streamed nor
#: evaluated by the book protocol.
MIN_BOOK_TOKENS = 100
#: Where the book protocol takes its held-out (forward) books from, in order of preference.
HELD_OUT_SPLITS = ("validation", "test")
PROTOCOLS = ("auto", "segment", "books")


@dataclass
class BenchmarkResult:
    """``results``: one row per learner × segment × slice; ``curves``: the training
    records of every run averaged over blocks of ``block`` steps."""

    results: pd.DataFrame
    curves: pd.DataFrame


@dataclass(frozen=True)
class Execution:
    """Where and how a benchmark's jobs run, beyond the number of ``workers``.

    ``address``: a Ray cluster to join (``"auto"``, ``"HOST:PORT"``; None: this
    machine). ``resources``: Ray custom resources every job requires. ``jobs_dir``: each
    job checkpoints under ``jobs_dir/<job id>`` by ``policy`` and resumes from there
    (None: no checkpoints). ``on_partial``: called, each time a job finishes, with the
    result of the jobs finished so far (in job order)."""

    address: str | None = None
    resources: Mapping[str, float] = field(default_factory=dict)
    jobs_dir: Path | None = None
    policy: CheckpointPolicy = field(default_factory=CheckpointPolicy)
    on_partial: Callable[[BenchmarkResult], None] | None = None


def _execute(jobs: list[Job], workers: int, progress: bool,
             execution: Execution | None) -> BenchmarkResult:
    """Run the jobs (:func:`~sharp.runs.executor.run_tasks`), checkpointing them under
    ``execution.jobs_dir`` when given, and hand each partial result (the jobs finished so
    far, in job order) to ``execution.on_partial``."""
    execution = execution or Execution()
    folders = [execution.jobs_dir / job.job_id() if execution.jobs_dir else None
               for job in jobs]
    outputs: list[tuple[pd.DataFrame, pd.DataFrame] | None] = [None] * len(jobs)

    def finished(i: int, output: tuple[pd.DataFrame, pd.DataFrame]) -> None:
        outputs[i] = output
        if execution.on_partial is not None:
            execution.on_partial(_merge([o for o in outputs if o is not None]))

    function = functools.partial(_run, policy=execution.policy)
    initial = sum(JobFolder(folder).done_tokens(job)
                  for job, folder in zip(jobs, folders, strict=True) if folder is not None)
    run_tasks(function, list(zip(jobs, folders, strict=True)),
              Executor(workers, execution.address, execution.resources),
              cpus=lambda item: float(item[0].spec.config.get("threads") or 1),
              gpus=lambda item: _gpus(item[0], 1 / len(jobs)),
              total=sum(job.total_tokens for job in jobs), initial=initial, progress=progress,
              description=f"{sum(job.lanes for job in jobs)} learners in {len(jobs)} job(s) "
              f"on {execution.address or f'{workers} worker(s)'}", on_result=finished)
    return _merge([o for o in outputs if o is not None])


def _gpus(job: Job, share: float) -> float:
    """GPUs a job requests under Ray (which hides the GPUs from a task that requests none):
    a learner job whose device is named ``cuda`` one; an ensemble job whose device resolves
    to CUDA as an ensemble's does (``auto`` included) ``share``, so that a run's ensembles
    can share one GPU."""
    device = str(job.spec.config.get("device"))
    if isinstance(job, EnsembleJob):
        return share if resolve_device(device, "batched").type == "cuda" else 0.0
    return float(device.startswith("cuda"))


def _run(item: tuple[Job, Path | None], report: Report, *,
         policy: CheckpointPolicy) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One job of :func:`_execute` (module level, so that Ray can ship it)."""
    job, folder = item
    with worker_warnings():
        return run_job(job, report, folder=folder, policy=policy)


def _merge(outputs: list[tuple[pd.DataFrame, pd.DataFrame]]) -> BenchmarkResult:
    return BenchmarkResult(pd.concat([rows for rows, _ in outputs], ignore_index=True),
                           pd.concat([curve for _, curve in outputs], ignore_index=True))


def check_lengths(specs: list[LearnerSpec], *, segment: int, slice_len: int) -> None:
    """Raise ``ValueError`` unless every learner gets predictions out of a training stream
    of ``segment`` tokens and an evaluation slice of ``slice_len`` tokens: both must be
    longer than the largest window W (a stream of n tokens gives n − W predictions)."""
    window = learner_window(specs)
    for option, value in (("segment", segment), ("slice", slice_len)):
        if value <= window:
            raise ValueError(f"{option} ({value} tokens) must be longer than the window "
                             f"W={window}: a stream of n tokens gives n - W predictions")


def preflight(
    specs: list[LearnerSpec],
    corpus: Corpus,
    *,
    protocol: str = "auto",
    segment: int,
    slice_len: int,
    learners: int,
    workers: int = 1,
) -> str:
    """Check everything about a run that can be checked before any learner starts (SPEC
    §6) and return the protocol that will run: ``"segment"`` or ``"books"``.

    Raises ``ValueError`` naming what to change: an unknown ``protocol``; ``learners`` or
    ``workers`` < 1; no learner, or one whose ``vocab_size`` is smaller than the corpus's
    vocabulary; for the segment protocol a segment or slice not longer than the window
    (:func:`check_lengths`) or M segments plus the forward slice not fitting the corpus;
    for the book protocol everything :func:`plan_books` checks (``segment`` is the
    training budget, ``slice_len`` the cap of each evaluated book).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if learners < 1 or workers < 1:
        raise ValueError(f"learners and workers must be >= 1, got {learners} and {workers}")
    if not specs:
        raise ValueError("no learners to run: give at least one learner spec")
    for spec in specs:
        vocab = int(spec.config.get("vocab_size", corpus.vocab.size))
        if vocab < corpus.vocab.size:
            raise ValueError(f"{spec.name} has vocab_size={vocab} but corpus {corpus.name} has "
                             f"{corpus.vocab.size} symbols")
    if protocol == "books" or (protocol == "auto" and corpus.documents is not None):
        plan_books(corpus, budget=segment, max_eval_tokens=slice_len,
                   window=learner_window(specs)).warn_if_slices_coincide()
        return "books"
    check_lengths(specs, segment=segment, slice_len=slice_len)
    plan_segments(len(corpus.tokens), segment, slice_len, learners)
    return "segment"


def segment_jobs(
    specs: list[LearnerSpec],
    tokens: np.ndarray,
    *,
    segment: int,
    slice_len: int,
    learners: int,
    seed: int = 0,
    clip: float | None = None,
    block: int | None = None,
    chars: np.ndarray | None = None,
) -> list[LearnerJob]:
    """The jobs of the segment benchmark (see :func:`segment_benchmark`), in run order:
    every recipe's learners 0..M-1. ``chars``: per-token character counts of ``tokens``
    (a token corpus's ``Corpus.chars``), for bits per character. Raises ValueError for
    lengths that do not fit."""
    check_lengths(specs, segment=segment, slice_len=slice_len)
    plans = plan_segments(len(tokens), segment, slice_len, learners)
    block = block or max(1, math.ceil(segment / 200))
    return [
        LearnerJob(spec.with_seed(seed + plan.index), plan.index,
                   [np.asarray(plan.train.take(tokens))],
                   {name: np.asarray(span.take(tokens)) for name, span in plan.slices().items()},
                   block, clip,
                   None if chars is None else {name: np.asarray(span.take(chars))
                                               for name, span in plan.slices().items()})
        for spec in specs for plan in plans
    ]


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
    execution: Execution | None = None,
    ensemble: bool = False,
    chars: np.ndarray | None = None,
) -> BenchmarkResult:
    """Run every learner recipe on ``learners`` segments (SPEC §6).

    Learner m of each recipe starts fresh with seed ``seed + m`` and streams segment m
    once; then, without learning, it is evaluated on backward (first E tokens of its
    segment), current (last E) and forward (the corpus's last E tokens). ``workers``
    runs learners in that many Ray workers (:class:`Execution` for a cluster and
    checkpoints); ``clip`` is the per-token bits cap reported in the ``bits_clipped``
    column (``bits`` is always unclipped). ``ensemble``: each recipe's learners run as one
    ensemble job (SPEC §10, :func:`~sharp.runs.jobs.group_jobs`), with the same results
    up to floating-point reduction order. ``chars``: per-token character counts of
    ``tokens`` (token corpora), from which each row's ``bits_per_char`` is computed
    (None: one character per token).
    """
    jobs = segment_jobs(specs, tokens, segment=segment, slice_len=slice_len,
                        learners=learners, seed=seed, clip=clip, block=block, chars=chars)
    run = group_jobs(jobs) if ensemble else list[Job](jobs)
    return _execute(run, workers, progress, execution)


def book_splits(splits: Iterable[str], corpus: str) -> tuple[str, str]:
    """The training and held-out split of the book protocol (SPEC §6) among ``splits``:
    ``("train", "validation")``, else ``("train", "test")``.

    Raises ValueError naming the corpus and the splits it has when either is missing.
    """
    present = [split for split in ("train", *HELD_OUT_SPLITS) if split in set(splits)]
    held = [split for split in HELD_OUT_SPLITS if split in present]
    if "train" not in present or not held:
        missing = "training books (a train split)" if "train" not in present else (
            "held-out books (a validation or test split)")
        raise ValueError(
            f"the book protocol needs {missing}, but corpus {corpus!r} has only the splits "
            f"{present or 'none'}; a local corpus needs train/ plus validation/ or test/ "
            "folders of <book_id>.txt files (PG-19 layout)"
        )
    return "train", held[0]


def check_corpus_protocol(name: str, protocol: str = "auto") -> str:
    """The protocol :func:`run_benchmark` will run on ``load_corpus(name)``: ``"segment"``
    or ``"books"`` (``"auto"``: books for a corpus with splits).

    Reads no text and downloads nothing (``corpus_splits``), so a book corpus without
    training or held-out books is refused before any download or encoding. Raises
    ValueError for an unknown protocol or corpus, a book protocol on a corpus without
    books, or missing splits (:func:`book_splits`).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    splits = corpus_splits(name)
    if protocol == "segment" or (protocol == "auto" and splits is None):
        return "segment"
    if splits is None:
        raise ValueError(
            f"the book protocol needs a book corpus ('books', 'pg19' or a folder in PG-19 "
            f"layout); {name!r} is one text without books"
        )
    book_splits(splits, name)
    return "books"


def learner_window(specs: Iterable[LearnerSpec]) -> int:
    """The largest window W among the recipes (every evaluated slice needs more tokens)."""
    return max((int(spec.config.get("window", 0)) for spec in specs), default=0)


@dataclass(frozen=True)
class BookPlan:
    """What every learner of the book protocol streams and is evaluated on: ``train``
    (token arrays of the training books, the last one cut at the budget, in order) and
    ``slices`` (forward / backward / current: lists of books, each capped), with the
    ids of the books used and the held-out split; ``chars``: the slices' per-token
    character counts, shaped as ``slices`` (token corpora; None: one per token)."""

    train: list[np.ndarray]
    slices: dict[str, list[np.ndarray]]
    train_ids: list[str]
    forward_ids: list[str]
    held_out: str
    chars: dict[str, list[np.ndarray]] | None = None

    def counts(self) -> dict[str, int]:
        """How many books each part uses: ``train``, ``backward``, ``current``, ``forward``."""
        return {"train": len(self.train), **{name: len(books)
                                              for name, books in self.slices.items()}}

    def warn_if_slices_coincide(self) -> None:
        """Warn (RuntimeWarning) when backward and current are the same books: with fewer
        training books than twice the books per slice, the two slices overlap."""
        if len(self.train) < len(self.slices["backward"]) + len(self.slices["current"]):
            warnings.warn(
                f"only {len(self.train)} training book(s) fit the budget, so the backward and "
                "current slices share books and measure the same thing; give a larger "
                "--segment (the budget) to train on more books", RuntimeWarning, stacklevel=2)


def _too_short(ids: list[str], lengths: list[int]) -> str:
    shown = ", ".join(f"{book!r} ({length} tokens)" for book, length in zip(ids[:8], lengths[:8],
                                                                            strict=True))
    return shown + (f" and {len(ids) - 8} more" if len(ids) > 8 else "")


def plan_books(
    corpus: Corpus,
    *,
    budget: int,
    books_per_slice: int = 5,
    max_eval_tokens: int | None = None,
    window: int = 0,
) -> BookPlan:
    """Plan the book protocol (SPEC §6) without training: training books in order up to
    ``budget`` tokens (books, or the budget's remnant of one, under ``MIN_BOOK_TOKENS``
    are skipped); backward = the first ``books_per_slice`` of them, current = the last
    ones, forward = the first ``books_per_slice`` held-out books (validation, else test)
    of at least ``max(MIN_BOOK_TOKENS, window + 1)`` tokens; each evaluated book is cut
    to ``max_eval_tokens``.

    Raises ValueError, before anything trains, for a corpus without documents or without
    training / held-out splits, a budget under ``MIN_BOOK_TOKENS``, ``max_eval_tokens``
    not above ``window``, or when no training or no held-out book is long enough (the
    message lists the books that are too short, with their lengths in tokens).
    """
    if corpus.documents is None:
        raise ValueError(
            f"the book protocol needs a book corpus ('books', 'pg19' or a folder in PG-19 "
            f"layout); corpus {corpus.name!r} has no documents"
        )
    if books_per_slice < 1:
        raise ValueError(f"books_per_slice must be >= 1, got {books_per_slice}")
    if budget < MIN_BOOK_TOKENS:
        raise ValueError(
            f"the training budget ({budget} tokens) is below the {MIN_BOOK_TOKENS} tokens the "
            "book protocol streams at least per book; give a larger budget (--segment)"
        )
    if max_eval_tokens is not None and max_eval_tokens <= window:
        raise ValueError(
            f"each evaluated book is cut to {max_eval_tokens} tokens (--slice), but a window of "
            f"W={window} needs at least {window + 1}; give a larger slice"
        )
    train_split, held_split = book_splits(corpus.documents["split"], corpus.name)
    train = corpus.split(train_split)
    books, ids, short_ids, short_lengths, used = [], [], [], [], 0
    for book_id, start, stop in zip(train.documents["id"], train.documents["start"],
                                    train.documents["stop"], strict=True):
        span = slice(start, min(stop, start + budget - used))
        if span.stop - span.start >= MIN_BOOK_TOKENS:
            books.append(span)
            ids.append(str(book_id))
            used += span.stop - span.start
        elif stop - start < MIN_BOOK_TOKENS:
            short_ids.append(str(book_id))
            short_lengths.append(int(stop - start))
        if used >= budget:
            break
    if not books:
        raise ValueError(
            f"the book protocol trains on books of at least {MIN_BOOK_TOKENS} tokens, but no "
            f"{train_split} book of corpus {corpus.name!r} is that long: "
            f"{_too_short(short_ids, short_lengths)}; use longer books"
        )
    need = max(MIN_BOOK_TOKENS, window + 1)
    held = corpus.split(held_split)
    forward, forward_ids, short_ids, short_lengths = [], [], [], []
    for book_id, start, stop in zip(held.documents["id"], held.documents["start"],
                                    held.documents["stop"], strict=True):
        if stop - start >= need:
            forward.append(slice(start, stop))
            forward_ids.append(str(book_id))
        else:
            short_ids.append(str(book_id))
            short_lengths.append(int(stop - start))
        if len(forward) == books_per_slice:
            break
    if not forward:
        raise ValueError(
            f"the book protocol evaluates held-out books of at least {need} tokens, but no "
            f"{held_split} book of corpus {corpus.name!r} is that long: "
            f"{_too_short(short_ids, short_lengths)}; use longer held-out books"
        )
    cap = max_eval_tokens

    def cut(spans: list[slice], array: np.ndarray) -> list[np.ndarray]:
        return [np.asarray(array[s.start: s.stop if cap is None else min(s.stop, s.start + cap)])
                for s in spans]

    parts = {"forward": (forward, held), "backward": (books[:books_per_slice], train),
             "current": (books[-books_per_slice:], train)}
    slices = {name: cut(spans, part.tokens) for name, (spans, part) in parts.items()}
    chars = None if corpus.chars is None else {
        name: cut(spans, part.chars) for name, (spans, part) in parts.items()
        if part.chars is not None}
    return BookPlan([np.asarray(train.tokens[s]) for s in books], slices, ids, forward_ids,
                    held_split, chars)


def book_jobs(
    specs: list[LearnerSpec],
    corpus: Corpus,
    *,
    budget: int,
    learners: int = 1,
    books_per_slice: int = 5,
    max_eval_tokens: int | None = None,
    seed: int = 0,
    clip: float | None = None,
    block: int | None = None,
) -> list[LearnerJob]:
    """The jobs of the book protocol (see :func:`book_benchmark`), in run order; raises
    what :func:`plan_books` raises."""
    plan = plan_books(corpus, budget=budget, books_per_slice=books_per_slice,
                      max_eval_tokens=max_eval_tokens, window=learner_window(specs))
    block = block or max(1, math.ceil(budget / 200))
    return [LearnerJob(spec.with_seed(seed + m), m, plan.train, plan.slices, block, clip,
                       plan.chars)
            for spec in specs for m in range(learners)]


def plan_jobs(
    specs: list[LearnerSpec],
    corpus: Corpus,
    *,
    protocol: str,
    segment: int,
    slice_len: int,
    learners: int,
    seed: int = 0,
    clip: float | None = None,
) -> list[LearnerJob]:
    """The jobs :func:`run_benchmark` runs for a checked ``protocol`` (``"segment"`` or
    ``"books"``, as :func:`preflight` returns it)."""
    if protocol == "books":
        return book_jobs(specs, corpus, budget=segment, learners=learners,
                         max_eval_tokens=slice_len, seed=seed, clip=clip)
    return segment_jobs(specs, corpus.tokens, segment=segment, slice_len=slice_len,
                        learners=learners, seed=seed, clip=clip, chars=corpus.chars)


def book_benchmark(
    specs: list[LearnerSpec],
    corpus: Corpus,
    *,
    budget: int,
    learners: int = 1,
    books_per_slice: int = 5,
    max_eval_tokens: int | None = None,
    seed: int = 0,
    workers: int = 1,
    clip: float | None = None,
    block: int | None = None,
    progress: bool = True,
    execution: Execution | None = None,
) -> BenchmarkResult:
    """The book protocol (SPEC §6, planned by :func:`plan_books`, whose ValueErrors it
    raises before any learner starts): training books in order up to ``budget`` tokens
    (state reset at each book start); backward = the first ``books_per_slice`` training
    books, current = the last ones, forward = held-out books (validation, else test),
    each evaluated from a reset state (``max_eval_tokens`` caps each evaluated book).
    Learner m uses seed ``seed + m`` on the same books."""
    jobs = book_jobs(specs, corpus, budget=budget, learners=learners,
                     books_per_slice=books_per_slice, max_eval_tokens=max_eval_tokens,
                     seed=seed, clip=clip, block=block)
    return _execute(list[Job](jobs), workers, progress, execution)


def run_benchmark(
    specs: list[LearnerSpec],
    corpus: Corpus,
    *,
    protocol: str = "auto",
    segment: int,
    slice_len: int,
    learners: int,
    seed: int = 0,
    workers: int = 1,
    clip: float | None = None,
    progress: bool = True,
    execution: Execution | None = None,
    ensemble: bool = False,
) -> tuple[BenchmarkResult, str]:
    """The segment benchmark, or the book protocol (``protocol="books"``, or ``"auto"``
    for a corpus with documents, with ``segment`` as the training budget and ``slice_len``
    as the per-book evaluation cap). Returns the result and the protocol's name. Everything
    :func:`preflight` checks raises ``ValueError`` before any learner starts. ``execution``:
    see :class:`Execution`. ``ensemble``: see :func:`segment_benchmark` (the book protocol
    refuses it with ``ValueError``, :data:`BOOKS_NOT_GROUPED`)."""
    if preflight(specs, corpus, protocol=protocol, segment=segment, slice_len=slice_len,
                 learners=learners, workers=workers) == "books":
        if ensemble:
            raise ValueError(BOOKS_NOT_GROUPED)
        return book_benchmark(specs, corpus, budget=segment, learners=learners,
                              max_eval_tokens=slice_len, seed=seed, workers=workers, clip=clip,
                              progress=progress, execution=execution), "books"
    return segment_benchmark(specs, corpus.tokens, segment=segment, slice_len=slice_len,
                             learners=learners, seed=seed, workers=workers, clip=clip,
                             progress=progress, execution=execution, ensemble=ensemble,
                             chars=corpus.chars), "segment"


def _diverged(results: pd.DataFrame) -> pd.Series:
    """Which rows come from a diverged run (``diverged`` is empty, or NaN once read back
    from CSV, for every other row; older results have no such column)."""
    if "diverged" not in results:
        return pd.Series(False, index=results.index)
    column = results["diverged"]
    return column.notna() & (column.astype(str) != "")


def diverged_runs(results: pd.DataFrame) -> list[str]:
    """One line per run that diverged ("learner, segment m: what happened"), in run order;
    empty when none did."""
    runs = results[_diverged(results)].drop_duplicates(["learner", "segment"])
    return [f"{row.learner}, segment {row.segment}: {row.diverged}"
            for row in runs.itertuples(index=False)]


def summary_table(results: pd.DataFrame, column: str = "bits") -> pd.DataFrame:
    """Mean ± sample std over segments, one row per learner, one column per slice.

    Diverged runs (a non-empty ``diverged``) are never averaged in: a cell says how many of
    the learner's runs diverged, or only "diverged" when all did."""
    failed = _diverged(results)
    cells = {}
    for (learner, name), group in results.groupby(["learner", "slice"], sort=False):
        ok = group.loc[~failed[group.index], column]
        if ok.empty:
            cells[learner, name] = "diverged"
            continue
        cell = f"{ok.mean():.3f} ± {ok.std():.3f}" if len(ok) > 1 else f"{ok.mean():.3f}"
        if len(ok) < len(group):
            cell += f" ({len(group) - len(ok)} of {len(group)} diverged)"
        cells[learner, name] = cell
    table = pd.Series(cells).unstack()
    table = table.loc[list(dict.fromkeys(results["learner"]))]
    table.index.name, table.columns.name = "learner", "slice"
    return table[[s for s in ("forward", "backward", "current") if s in table.columns]]
