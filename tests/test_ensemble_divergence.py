"""One diverging member does not sink its ensemble job (issue 13 follow-up): ``--ensemble on``
reports the runs ``--ensemble off`` reports — the diverged learner's rows NaN with a report
naming it, every other learner's results counted — for SHARP and a baseline, in training
and in evaluation, and after a resume."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_config

from sharp.protocol import Diverged, EvalResult
from sharp.runs import jobs
from sharp.runs.benchmark import segment_jobs, summary_table
from sharp.runs.checkpoints import load_checkpoint
from sharp.runs.jobs import (
    CheckpointPolicy,
    EnsembleJob,
    LearnerJob,
    group_jobs,
    run_ensemble_job,
    run_learner_job,
)
from sharp.runs.registry import LearnerSpec, baseline_spec, build_ensemble
from sharp.runs.stream import run_ensemble_stream

#: Three learners, segments of 203 tokens (200 steps at W=3), pieces of 50 steps.
LEARNERS, SEGMENT, SLICE = 3, 203, 40
POLICY = CheckpointPolicy(every_tokens=50)
#: The learner (its seed = its segment) whose weights are made NaN before step AT + 1.
SICK, AT = 1, 100
SPECS = {
    "sharp": LearnerSpec("sharp", tiny_config(sleep_every=50).to_dict(), "SHARP"),
    "gru": baseline_spec("gru", "quick", hidden=8, embedding=4, vocab_size=7, window=3),
}
#: As in test_bench_ensemble: members equal separate learners up to summation order.
TOLERANCE = 1e-4
TIMING = ["train_seconds", "tokens_per_s", "eval_seconds"]
BITS = ["bits", "bits_clipped", "bits_per_char", "bits_per_char_clipped"]


def learner_jobs(kind: str) -> list[LearnerJob]:
    tokens = np.random.default_rng(0).integers(0, 7, LEARNERS * SEGMENT + SLICE)
    return segment_jobs([SPECS[kind]], tokens, segment=SEGMENT, slice_len=SLICE,
                        learners=LEARNERS)


def ensemble_job(kind: str) -> EnsembleJob:
    (job,) = group_jobs(learner_jobs(kind))
    assert isinstance(job, EnsembleJob)
    return job


def poison(state: dict[str, Any]) -> None:
    """Make every weight of a learner ``state_dict`` NaN, in place."""
    for weight in state["weights"].values():
        weight.fill_(math.nan)


@pytest.fixture
def sick_in_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Learner SICK's weights turn NaN before step AT + 1, whether it runs alone or as a
    member (so it diverges at step AT + 1 either way)."""
    stream, ensemble_stream = jobs.run_stream, jobs.run_ensemble_stream

    def alone(learner: Any, tokens: np.ndarray, *, offset: int = 0, **options: Any) -> Any:
        if offset >= AT and learner.config.seed == SICK:
            state = learner.state_dict()
            poison(state)
            learner.load_state_dict(state)
        return stream(learner, tokens, offset=offset, **options)

    def together(ensemble: Any, streams: np.ndarray, *, offset: int = 0) -> Any:
        if offset >= AT and SICK in ensemble.seeds:
            state = ensemble.state_dict()
            poison(state["members"][ensemble.seeds.index(SICK)])
            ensemble.load_state_dict(state)
        return ensemble_stream(ensemble, streams, offset=offset)

    monkeypatch.setattr(jobs, "run_stream", alone)
    monkeypatch.setattr(jobs, "run_ensemble_stream", together)


def run_separately(jobs_: list[LearnerJob]) -> tuple[pd.DataFrame, pd.DataFrame]:
    outputs = [run_learner_job(job, policy=POLICY) for job in jobs_]
    return (pd.concat([rows for rows, _ in outputs], ignore_index=True),
            pd.concat([curve for _, curve in outputs], ignore_index=True))


def same_results(grouped: tuple[pd.DataFrame, pd.DataFrame],
                 separate: tuple[pd.DataFrame, pd.DataFrame], tolerance: float) -> None:
    """Rows and curves agree (bits within ``tolerance``, the rest exactly, NaN equal to
    NaN), the ``diverged`` reports aside (they name the learner as each mode runs it)."""
    for got, expected, bits in ((grouped[0], separate[0], BITS),
                                (grouped[1], separate[1], ["bits"])):
        got = got.drop(columns=[*TIMING, "diverged"], errors="ignore")
        expected = expected.drop(columns=[*TIMING, "diverged"], errors="ignore")
        pd.testing.assert_frame_equal(got.drop(columns=bits), expected.drop(columns=bits),
                                      check_exact=True)
        pd.testing.assert_frame_equal(got[bits], expected[bits], check_exact=False,
                                      atol=tolerance, rtol=0)


def diverged_segments(rows: pd.DataFrame) -> list[int]:
    return sorted(set(rows.loc[rows["diverged"] != "", "segment"]))


@pytest.mark.parametrize("kind", list(SPECS))
def test_a_member_that_diverges_in_training_is_dropped_and_the_others_count(
    kind: str, sick_in_training: None
) -> None:
    separate = run_separately(learner_jobs(kind))
    grouped = run_ensemble_job(ensemble_job(kind), policy=POLICY)
    rows, curve = grouped
    assert diverged_segments(rows) == diverged_segments(separate[0]) == [SICK]
    sick = rows[rows["segment"] == SICK]
    assert sick["bits"].isna().all() and (sick["train_tokens"] == 0).all()
    assert set(curve["segment"]) == {0, 2}  # the diverged member's document never finished
    report = sick["diverged"].iloc[0]
    assert f"member {SICK} diverged at stream step {AT + 1}: its " in report
    assert "loss is nan nats with learning rate lr=" in report
    assert f"at stream step {AT + 1}: its" in separate[0].loc[
        separate[0]["segment"] == SICK, "diverged"].iloc[0]
    # the survivors' rows and curves are those of separate learners
    same_results(grouped, separate, TOLERANCE)
    assert (rows.loc[rows["segment"] != SICK, "train_tokens"] == SEGMENT - 3).all()
    for table in (summary_table(rows), summary_table(separate[0])):
        assert table.map(lambda cell: cell.endswith(f"(1 of {LEARNERS} diverged)")).all(axis=None)


def test_when_every_member_diverges_every_row_is_diverged(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = jobs.run_ensemble_stream

    def together(ensemble: Any, streams: np.ndarray, *, offset: int = 0) -> Any:
        if offset >= AT:
            state = ensemble.state_dict()
            for member in state["members"]:
                poison(member)
            ensemble.load_state_dict(state)
        return stream(ensemble, streams, offset=offset)

    monkeypatch.setattr(jobs, "run_ensemble_stream", together)
    rows, curve = run_ensemble_job(ensemble_job("gru"), policy=POLICY)
    assert diverged_segments(rows) == [0, 1, 2] and rows["bits"].isna().all()
    assert curve.empty
    assert [f"member {m} diverged at stream step {AT + 1}" in report
            for m, report in enumerate(rows.drop_duplicates("segment")["diverged"])] == [True] * 3
    assert (summary_table(rows) == "diverged").all(axis=None)


def test_a_divergence_in_a_sleep_is_placed_at_the_step_the_sleep_follows() -> None:
    ensemble = build_ensemble(SPECS["sharp"], [0, 1])

    def sleep() -> None:
        raise Diverged("SharpEnsemble", 0.01, "memory-1 replay", math.nan, member=1)

    ensemble.sleep = sleep  # type: ignore[method-assign]
    streams = np.random.default_rng(0).integers(0, 7, (2, 40 + 3))
    with pytest.raises(Diverged, match="member 1 diverged at stream step 50: its memory-1"):
        run_ensemble_stream(ensemble, streams, offset=30)  # sleep_every=50


def infinite_evaluation(evaluate: Callable[..., Any], sick: Callable[[int], bool]
                        ) -> Callable[..., Any]:
    """``evaluate`` with the results of the members (or the learner) ``sick(i)`` picks made
    infinite."""

    def wrapped(tokens: Any) -> Any:
        results = evaluate(tokens)
        one = isinstance(results, EvalResult)
        results = [results] if one else results
        results = [EvalResult(np.full_like(r.bits, math.inf), r.correct, r.seconds)
                   if sick(i) else r for i, r in enumerate(results)]
        return results[0] if one else results

    return wrapped


def test_a_member_whose_evaluation_is_not_finite_alone_is_marked(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    build, build_learner = jobs._build, jobs.build_learner

    def ensemble(job: Any) -> Any:
        built = build(job)
        built.evaluate = infinite_evaluation(built.evaluate,
                                             lambda i: built.seeds[i] == SICK)
        return built

    def learner(spec: LearnerSpec) -> Any:
        built = build_learner(spec)
        built.evaluate = infinite_evaluation(built.evaluate, lambda _: spec.config["seed"] == SICK)
        return built

    monkeypatch.setattr(jobs, "_build", ensemble)
    monkeypatch.setattr(jobs, "build_learner", learner)
    separate = run_separately(learner_jobs("sharp"))
    grouped = run_ensemble_job(ensemble_job("sharp"), policy=POLICY)
    rows, curve = grouped
    assert diverged_segments(rows) == diverged_segments(separate[0]) == [SICK]
    assert (f"member {SICK} diverged: its forward evaluation loss is inf"
            in rows.loc[rows["segment"] == SICK, "diverged"].iloc[0])
    # it trained to the end: its curve and training columns are kept, as a learner's are
    assert set(curve["segment"]) == {0, 1, 2}
    same_results(grouped, separate, TOLERANCE)


#: Where the resumed job is killed: one piece after the drop.
KILLED = AT + POLICY.every_tokens


class Killed(Exception):
    """Stands for the job's process being killed."""


@pytest.mark.parametrize("kind", list(SPECS))
def test_a_job_resumed_after_a_drop_keeps_the_survivors(
    kind: str, sick_in_training: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    job = ensemble_job(kind)
    reference = run_ensemble_job(job, policy=POLICY)
    stream = jobs.run_ensemble_stream
    kills = iter([True])

    def killed_mid_run(ensemble: Any, streams: np.ndarray, *, offset: int = 0) -> Any:
        if offset == KILLED and next(kills, False):
            raise Killed
        return stream(ensemble, streams, offset=offset)

    monkeypatch.setattr(jobs, "run_ensemble_stream", killed_mid_run)
    folder = tmp_path / "job"
    with pytest.raises(Killed):
        run_ensemble_job(job, folder=folder, policy=POLICY)
    manifest = json.loads((folder / "manifest.json").read_text())
    last = manifest["checkpoints"][-1]
    assert last["step"] == KILLED and last["extra"]["diverged"][SICK] == reference[0].loc[
        reference[0]["segment"] == SICK, "diverged"].iloc[0]
    assert load_checkpoint(folder / last["file"]).seeds == [0, 2]  # the survivors only
    resumed = run_ensemble_job(job, folder=folder, policy=POLICY)
    same_results(resumed, reference, 0.0)
    assert resumed[0]["diverged"].equals(reference[0]["diverged"])
    manifest = json.loads((folder / "manifest.json").read_text())
    assert [a["resumed_from"] for a in manifest["attempts"]] == [0, KILLED]

