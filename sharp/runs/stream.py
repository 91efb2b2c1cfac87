"""Running a learner over a stream: per-step records, sleep schedule, curve mode."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, cast

import numpy as np
import pandas as pd
import torch

from sharp.data.streams import n_windows
from sharp.protocol import (
    LN2,
    Diverged,
    EvalResult,
    Learner,
    Sleeper,
    StepResult,
    check_finite,
    check_stream,
)
from sharp.runs.progress import tqdm

if TYPE_CHECKING:
    from sharp.baselines.ensemble import BaselineEnsemble
    from sharp.engines.ensemble import SharpEnsemble

StepCallback = Callable[[int, StepResult], None]


def check_schedule(sleep_every: object, offset: object) -> None:
    """Check a stream's sleep schedule and step numbering (:func:`run_stream`,
    :func:`run_ensemble_stream`): ``sleep_every`` None (the config's) or an int >= 0 (0:
    never), ``offset`` (the global step before the first) an int >= 0. Raises TypeError for
    a value that is not an int (a float, a bool) and ValueError for a negative one."""
    for name, value, allowed in (("sleep_every", sleep_every, "None or an int >= 0 (0: never)"),
                                 ("offset", offset, "an int >= 0 (the steps streamed before)")):
        if value is None and name == "sleep_every":
            continue
        if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
            raise TypeError(f"{name} must be {allowed}, got {value!r} ({type(value).__name__})")
        if value < 0:
            raise ValueError(f"{name} must be {allowed}, got {value}")


def run_stream(
    learner: Learner,
    tokens: np.ndarray,
    *,
    sleep_every: int | None = None,
    offset: int = 0,
    progress: bool = True,
    description: str = "stream",
    on_step: StepCallback | None = None,
) -> pd.DataFrame:
    """Stream ``tokens`` through ``learner`` once, as stride-1 windows.

    A sleep phase follows every wake step whose global number (``offset`` + position,
    1-based) is a multiple of ``sleep_every`` (default: the learner's config, if it
    sleeps). Returns one record per step: step, bits, correct, recall, memory_learned,
    slept. ``tokens`` is checked as :func:`~sharp.protocol.check_stream` checks it
    (ValueError); ``sleep_every`` and ``offset`` as :func:`check_schedule` checks them
    (TypeError, ValueError). Raises TypeError for a ``sleep_every`` given to a learner that
    is not a :class:`~sharp.protocol.Sleeper`. A learner whose loss stops being finite raises
    :class:`~sharp.protocol.Diverged` naming the global step; no records are returned then.
    """
    check_schedule(sleep_every, offset)
    window = learner.window
    ids = check_stream(tokens, window, learner.vocab_size)
    sleeper = learner if isinstance(learner, Sleeper) else None
    if sleeper is None and sleep_every:
        raise TypeError(f"{type(learner).__name__} has no sleep phase; "
                        f"sleep_every={sleep_every} needs one")
    if sleep_every is None and sleeper is not None:
        sleep_every = sleeper.config.sleep_every
    stream = torch.from_numpy(ids.astype(np.int64))
    targets = ids[window:].tolist()
    n = n_windows(len(ids), window)
    bits = np.empty(n)
    recall = np.empty(n)
    correct = np.zeros(n, dtype=bool)
    learned = np.zeros(n, dtype=bool)
    slept = np.zeros(n, dtype=bool)
    bar = tqdm(total=n, desc=description, disable=not progress, mininterval=0.5,
               unit="tok", smoothing=0.05)
    postfix = ""  # the mean bits of the last 1,024 steps, shown again after a sleep
    for i in range(n):
        step = offset + i + 1
        try:
            result = learner.learn(stream[i : i + window], targets[i])
            if sleeper is not None and sleep_every and step % sleep_every == 0:
                bar.set_postfix_str("sleeping")
                sleeper.sleep()
                bar.set_postfix_str(postfix, refresh=False)
                slept[i] = True
        except Diverged as error:
            bar.close()
            raise error.at_step(step) from None
        bits[i] = result.bits
        recall[i] = result.recall
        correct[i] = result.correct
        learned[i] = result.memory_learned
        if on_step is not None:
            on_step(step, result)
        if (i + 1) % 1024 == 0:
            bar.update(1024)
            postfix = f"bits={bits[i - 1023 : i + 1].mean():.3f}"
            bar.set_postfix_str(postfix, refresh=False)
    bar.update(n - bar.n)
    bar.close()
    return pd.DataFrame({
        "step": np.arange(offset + 1, offset + n + 1), "bits": bits, "correct": correct,
        "recall": recall, "memory_learned": learned, "slept": slept,
    })


def run_ensemble_stream(
    ensemble: SharpEnsemble | BaselineEnsemble, streams: np.ndarray, *, offset: int = 0,
    sleep_every: int | None = None,
) -> pd.DataFrame:
    """Stream row m of ``streams`` (M, n + W) through member m of ``ensemble`` once, all
    members in lockstep, as :func:`run_stream` streams one learner: a SHARP ensemble sleeps
    (every pending member, :meth:`~sharp.engines.ensemble.SharpEnsemble.sleep`) after each
    global step (``offset`` + position, 1-based) that is a multiple of ``sleep_every``
    (default: its config's; 0: never), the steps a separate learner sleeps after, and runs
    the steps between
    two sleeps as device blocks (:meth:`~sharp.engines.ensemble.SharpEnsemble.learn_block`,
    the losses read back once per block). Returns one record per step and member,
    step-major: step, member, bits, correct, recall, memory_learned, slept (``slept`` marks
    the steps a sleep phase followed, for every member, as :func:`run_stream` marks them).
    Raises ValueError for ids outside the vocabulary, what :func:`check_schedule` raises for
    ``sleep_every`` and ``offset``, TypeError for a ``sleep_every`` given to an ensemble
    without a sleep phase, and what ``learn`` and ``sleep`` raise
    (:class:`~sharp.protocol.Diverged`, naming the member and placed at the global step);
    no records are returned then."""
    from sharp.engines.ensemble import SharpEnsemble

    check_schedule(sleep_every, offset)
    window = ensemble.window
    members = streams.shape[0]
    ids = torch.as_tensor(np.ascontiguousarray(streams), dtype=torch.int64)
    n = n_windows(ids.shape[1], window)
    if not isinstance(ensemble, Sleeper) and sleep_every:
        raise TypeError(f"{type(ensemble).__name__} has no sleep phase; "
                        f"sleep_every={sleep_every} needs one")
    if sleep_every is None:
        sleep_every = ensemble.config.sleep_every if isinstance(ensemble, Sleeper) else 0
    sleep_every = sleep_every or 0
    if isinstance(ensemble, SharpEnsemble):
        losses, recalls, learned, correct, slept = _sharp_blocks(ensemble, ids, n, sleep_every,
                                                                 offset)
    else:
        losses, recalls, learned, correct = [], [], [], []
        slept = np.zeros(n, dtype=bool)
        for i in range(n):
            try:
                step = ensemble.learn(ids[:, i : i + window], ids[:, i + window])
            except Diverged as error:
                raise error.at_step(offset + i + 1) from None
            losses.append(step.loss)
            recalls.append(step.recall)
            learned.append(step.learned)
            correct.append(step.logits.argmax(-1) == step.targets)

    def column(values: list[torch.Tensor]) -> np.ndarray:
        return torch.cat([v.view(-1) for v in values]).cpu().numpy() if values else np.empty(0)

    return pd.DataFrame({
        "step": np.repeat(np.arange(offset + 1, offset + n + 1), members),
        "member": np.tile(np.arange(members), n),
        "bits": column(losses) / LN2, "correct": column(correct).astype(bool),
        "recall": column(recalls), "memory_learned": column(learned).astype(bool),
        "slept": np.repeat(slept, members),
    })


def _sharp_blocks(ensemble: SharpEnsemble, ids: torch.Tensor, n: int, sleep_every: int,
                  offset: int) -> tuple[list[torch.Tensor], list[torch.Tensor],
                                        list[torch.Tensor], list[torch.Tensor], np.ndarray]:
    """The first ``n`` steps of ``ids`` (M, n + W) through a SHARP ensemble, one
    :meth:`~sharp.engines.ensemble.SharpEnsemble.learn_block` per run of steps between two
    sleeps (a block never straddles a sleep). Returns the per-block (B, M) losses, recall
    losses, gate decisions and top-1 hits, and the (n,) flags of the steps a sleep followed.
    Raises :class:`~sharp.protocol.Diverged` placed at the global step."""
    w = ensemble.window
    windows = ids.unfold(1, w, 1)  # (M, n + 1, W): window i is ids[:, i : i + W]
    losses, recalls, learned, correct = [], [], [], []
    slept = np.zeros(n, dtype=bool)
    lo = 0
    while lo < n:
        hi = min(n, lo + sleep_every - (offset + lo) % sleep_every) if sleep_every else n
        try:
            block = ensemble.learn_block(windows[:, lo:hi].transpose(0, 1),
                                         ids[:, lo + w : hi + w].T)
        except Diverged as error:
            raise error.at_step(offset + lo + (error.step or 1)) from None
        losses.append(block.loss)
        recalls.append(block.recall)
        learned.append(block.learned)
        correct.append(block.correct)
        if sleep_every and (offset + hi) % sleep_every == 0:
            try:
                ensemble.sleep()
            except Diverged as error:  # the sleep after step hi, as run_stream places it
                raise error.at_step(offset + hi) from None
            slept[hi - 1] = True
        lo = hi
    return losses, recalls, learned, correct, slept


Slice = np.ndarray | Sequence[np.ndarray]


def evaluate_slices(
    learner: Learner, slices: Mapping[str, Slice], clip: float | None = None
) -> pd.DataFrame:
    """Evaluate each named slice without learning; one row per slice. A slice may be a
    list of documents (books): each is evaluated from a reset state and their per-token
    results are pooled. Raises :class:`~sharp.protocol.Diverged` rather than report a
    non-finite mean (``clip`` would hide an infinite one)."""
    rows = []
    for name, value in slices.items():
        parts = [value] if isinstance(value, np.ndarray) else list(value)
        results = [learner.evaluate(tokens) for tokens in parts]
        pooled = EvalResult(np.concatenate([r.bits for r in results]),
                            np.concatenate([r.correct for r in results]),
                            sum(r.seconds for r in results))
        check_finite(learner, **{f"{name} evaluation": pooled.mean_bits() * LN2})
        rows.append(slice_row(name, pooled, clip))
    return pd.DataFrame(rows)


def ensemble_slice_rows(
    ensemble: SharpEnsemble | BaselineEnsemble, slices: Sequence[Mapping[str, np.ndarray]],
    clip: float | None = None,
) -> list[pd.DataFrame | Diverged]:
    """:func:`evaluate_slices` for every member of ``ensemble`` at once: member m evaluated,
    without learning and from a reset state, on each named slice of ``slices[m]`` (one
    token array per name, the same names for every member; each name batched over the
    members). Returns per member its frame (one row per slice) or, where its mean is not
    finite, the :class:`~sharp.protocol.Diverged` that reports it (not raised, so that the
    other members' rows stand). Raises ValueError for a slice of W tokens or fewer."""
    names = list(slices[0])
    results = {name: ensemble.evaluate([member[name] for member in slices]) for name in names}
    rows: list[pd.DataFrame | Diverged] = []
    for m in range(len(slices)):
        try:
            check_finite(ensemble, member=m, **{f"{name} evaluation":
                                                results[name][m].mean_bits() * LN2
                                                for name in names})
        except Diverged as error:
            rows.append(error)
            continue
        rows.append(pd.DataFrame([slice_row(name, results[name][m], clip) for name in names]))
    return rows


def evaluate_ensemble_slices(
    ensemble: SharpEnsemble | BaselineEnsemble, slices: Sequence[Mapping[str, np.ndarray]],
    clip: float | None = None,
) -> list[pd.DataFrame]:
    """:func:`ensemble_slice_rows`, raising the first member's
    :class:`~sharp.protocol.Diverged` rather than report a non-finite mean."""
    rows = ensemble_slice_rows(ensemble, slices, clip)
    for row in rows:
        if isinstance(row, Diverged):
            raise row
    return cast(list[pd.DataFrame], rows)


def slice_row(name: str, result: EvalResult, clip: float | None = None) -> dict[str, object]:
    """The row of a results table for slice ``name`` evaluated as ``result``: bits
    (unclipped), bits_clipped (at ``clip``), accuracy, tokens and eval_seconds."""
    return {"slice": name, "bits": result.mean_bits(), "bits_clipped": result.mean_bits(clip),
            "accuracy": result.accuracy, "tokens": result.tokens,
            "eval_seconds": result.seconds}


def run_curve(
    learner: Learner,
    tokens: np.ndarray,
    slices: Mapping[str, np.ndarray],
    every: int,
    *,
    sleep_every: int | None = None,
    clip: float | None = None,
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Curve mode: stream ``tokens`` and evaluate every slice every ``every`` steps.

    Returns (per-step records, evaluations with a ``step`` column).
    """
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    ids = check_stream(tokens, learner.window, learner.vocab_size)
    total = n_windows(len(ids), learner.window)
    records, evaluations = [], []
    for start in range(0, total, every):
        stop = min(start + every, total)
        chunk = ids[start : stop + learner.window]
        records.append(run_stream(learner, chunk, sleep_every=sleep_every, offset=start,
                                  progress=progress, description=f"steps {start}-{stop}"))
        evaluation = evaluate_slices(learner, slices, clip)
        evaluation.insert(0, "step", stop)
        evaluations.append(evaluation)
    return pd.concat(records, ignore_index=True), pd.concat(evaluations, ignore_index=True)
