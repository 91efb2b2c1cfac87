"""Learner jobs that checkpoint and resume (SPEC §12).

A job is one learner's run of the benchmark (SPEC §6): stream its documents in order
(state reset between them), then evaluate every slice; or, as an :class:`EnsembleJob`, the
runs of M learners of one model on M equally long segments, streamed in lockstep by one
ensemble (SPEC §10) and reported as the M learner jobs would be. With a folder, the job saves a
checkpoint every ``every_tokens`` steps or ``every_seconds`` seconds, whichever comes first,
and at the end of training; run again with the same folder, it resumes from its last good
checkpoint, or returns its stored result when it had finished. Its folder::

    <jobs>/<job id>/
      manifest.json                 checkpoints (step, position, file, sha256), record
                                    chunks, attempts (node, pid, step resumed from), result
      state-<step>.pt               learner (or ensemble) state_dict (weights, optimisers,
                                    states, RNG; an ensemble's holds the members still
                                    training, named by their seeds)
      records/<start>-<stop>.npz    per-step records of steps start+1..stop (per member)
      rows.parquet, curve.parquet   the finished job's result

Every file is written atomically and the manifest last, so a job killed at any moment
(mid-stream, mid-sleep, mid-evaluation, mid-write) leaves the previous checkpoint intact.
The learner owns every random generator the job uses (in its ``state_dict``), and the
sleep schedule follows the global step, so a resumed job computes what an uninterrupted
one does. The experiments' jobs checkpoint in the same layout
(:meth:`JobFolder.restore` with their own learner, rows kept in a checkpoint's ``extra``).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import re
import socket
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd

from sharp.data.streams import n_windows
from sharp.protocol import Diverged, Learner
from sharp.runs.checkpoints import (
    CheckpointError,
    atomic_path,
    atomic_write_text,
    load_checkpoint,
    save_checkpoint,
)
from sharp.runs.registry import LearnerSpec, build_ensemble, build_from_state, build_learner
from sharp.runs.stream import (
    Slice,
    ensemble_slice_rows,
    evaluate_slices,
    run_ensemble_stream,
    run_stream,
)

if TYPE_CHECKING:
    from sharp.baselines.ensemble import BaselineEnsemble
    from sharp.engines.ensemble import SharpEnsemble

#: Most steps streamed between two looks at the checkpoint policy (and progress reports).
PIECE = 2_048
#: Per-step record columns a job keeps (what its result is computed from).
RECORD_COLUMNS = ("bits", "correct", "memory_learned", "slept")
#: Config fields that change speed, never results: left out of a job's identity.
SPEED_FIELDS = ("threads",)

#: A progress callback: called with the number of tokens (steps or evaluated tokens)
#: just done.
Report = Callable[[int], None]


@dataclass(frozen=True)
class CheckpointPolicy:
    """When a job saves: every ``every_tokens`` training steps or ``every_seconds`` of
    wall-clock time, whichever comes first (checked every :data:`PIECE` steps), and
    always at the end of training; the newest ``keep`` checkpoints are kept.

    Raises ValueError for a non-positive value."""

    every_tokens: int = 50_000
    every_seconds: float = 600.0
    keep: int = 2

    def __post_init__(self) -> None:
        refused = [f"CheckpointPolicy.{name} must be > 0, got {value!r}"
                   for name, value in (("every_tokens", self.every_tokens),
                                       ("every_seconds", self.every_seconds),
                                       ("keep", self.keep)) if not value > 0]
        if refused:
            raise ValueError("; ".join(refused) + " (sharp bench, sharp experiment: "
                             "--checkpoint-tokens, --checkpoint-minutes, --keep-checkpoints)")

    def due(self, steps: int, seconds: float) -> bool:
        """Whether a checkpoint is due ``steps`` training steps and ``seconds`` after the
        last one."""
        return steps >= self.every_tokens or seconds >= self.every_seconds


def checkpoint_policy(tokens: object, minutes: object, keep: object, *,
                      notebook: bool = False) -> CheckpointPolicy:
    """The policy of the command-line options ``--checkpoint-tokens``,
    ``--checkpoint-minutes`` and ``--keep-checkpoints`` (shared by ``sharp bench`` and
    ``sharp experiment``). Raises ValueError naming every option as typed (and, when
    ``notebook``, its notebook parameter) whose value is not a positive number (an integer
    for tokens and kept checkpoints)."""
    checks = (("--checkpoint-tokens", tokens, True), ("--checkpoint-minutes", minutes, False),
              ("--keep-checkpoints", keep, True))
    refused = [f"{_option_name(option, notebook)} must be "
               f"{'an integer >= 1' if integer else 'a number > 0'}, got {value!r}"
               for option, value, integer in checks if not _positive(value, integer=integer)]
    if refused:
        raise ValueError("; ".join(refused))
    return CheckpointPolicy(cast(int, tokens), cast(float, minutes) * 60, cast(int, keep))


def _option_name(option: str, notebook: bool) -> str:
    """``--checkpoint-tokens``, or with ``notebook`` ``--checkpoint-tokens (notebook:
    checkpoint_tokens)``."""
    return f"{option} (notebook: {option[2:].replace('-', '_')})" if notebook else option


def _positive(value: object, *, integer: bool) -> bool:
    """Whether ``value`` is a number > 0 (not NaN, not a bool), and an int when
    ``integer``."""
    kinds = (int,) if integer else (int, float)
    return isinstance(value, kinds) and not isinstance(value, bool) and value > 0


@dataclass(frozen=True)
class LearnerJob:
    """One learner's run: stream ``documents`` in order (state reset between them), then
    evaluate every slice; ``index`` is the segment (or learner) number, ``block`` the
    curve's block size in steps, ``clip`` the bits cap of ``bits_clipped``.
    ``slice_chars``: each slice's per-token character counts, arrays shaped as its tokens
    (token corpora); None means one character per token."""

    spec: LearnerSpec
    index: int
    documents: list[np.ndarray]
    slices: dict[str, Slice]
    block: int
    clip: float | None
    slice_chars: dict[str, Slice] | None = None
    window: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "window", int(self.spec.config.get("window", 0)))

    @property
    def train_steps(self) -> int:
        """Training steps: one per stride-1 window of every document."""
        return sum(n_windows(len(document), self.window) for document in self.documents)

    @property
    def eval_tokens(self) -> int:
        """Tokens predicted when the slices are evaluated."""
        parts = [p for value in self.slices.values()
                 for p in ([value] if isinstance(value, np.ndarray) else value)]
        return sum(n_windows(len(part), self.window) for part in parts)

    @property
    def total_tokens(self) -> int:
        """Training steps plus evaluated tokens: the job's share of a progress bar."""
        return self.train_steps + self.eval_tokens

    def slice_characters(self) -> dict[str, int]:
        """Per slice, the characters of the tokens it predicts (every part's tokens after
        its first W): the sum of their ``slice_chars``, or their number without them."""
        counts = {}
        for name, value in self.slices.items():
            source = value if self.slice_chars is None else self.slice_chars[name]
            parts = [source] if isinstance(source, np.ndarray) else list(source)
            counts[name] = sum(
                n_windows(len(part), self.window) if self.slice_chars is None
                else int(np.asarray(part[self.window:]).sum(dtype=np.int64))
                for part in parts)
        return counts

    @property
    def lanes(self) -> int:
        """Learners the job runs (tokens per checkpointed step): 1."""
        return 1

    def job_id(self) -> str:
        """``<learner>-<index>-s<seed>-<digest>``: a name derived from everything that
        determines the result (kind, config but its speed-only fields, index, documents,
        slices, block, clip, the slices' character counts when given), so that the same
        job run again finds its folder."""
        digest = hashlib.sha256()
        config = {k: v for k, v in self.spec.config.items() if k not in SPEED_FIELDS}
        digest.update(json.dumps([self.spec.kind, self.spec.name, config, self.index,
                                  self.block, self.clip], sort_keys=True).encode())
        for document in self.documents:
            digest.update(np.ascontiguousarray(document).view(np.uint8))
        for name, value in self.slices.items():
            digest.update(name.encode())
            for part in [value] if isinstance(value, np.ndarray) else value:
                digest.update(np.ascontiguousarray(part).view(np.uint8))
        for name, value in (self.slice_chars or {}).items():
            digest.update(f"chars:{name}".encode())
            for part in [value] if isinstance(value, np.ndarray) else value:
                digest.update(np.ascontiguousarray(part).view(np.uint8))
        return (f"{self.folder_label}-{self.index}-s{self.spec.config.get('seed', 0)}-"
                f"{digest.hexdigest()[:12]}")

    @property
    def folder_label(self) -> str:
        """The learner's name as it starts a job id (characters other than letters,
        digits, ``.``, ``_`` and ``-`` replaced by ``_``)."""
        return re.sub(r"[^A-Za-z0-9._-]+", "_", self.spec.name).strip("_") or "learner"


@dataclass(frozen=True)
class EnsembleJob:
    """The learner jobs ``members`` run as one ensemble (SPEC §10): member m streams job m's
    document in lockstep with the others, and its rows and curve are job m's (up to
    floating-point reduction order). Raises ValueError unless the jobs are of one model
    (kind, label and config but the seed), with distinct seeds, one document each of one
    length, and one block and clip."""

    members: tuple[LearnerJob, ...]

    def __post_init__(self) -> None:
        if not self.members:
            raise ValueError("an ensemble job needs at least one learner job")
        first = self.members[0]
        for job in self.members:
            spec, config = job.spec, {k: v for k, v in job.spec.config.items() if k != "seed"}
            if (spec.kind, spec.label, config, job.block, job.clip) != (
                    first.spec.kind, first.spec.label,
                    {k: v for k, v in first.spec.config.items() if k != "seed"},
                    first.block, first.clip):
                raise ValueError(f"an ensemble job runs learners of one model; {spec.name} "
                                 f"(segment {job.index}) differs from {first.spec.name} "
                                 f"(segment {first.index}) beyond its seed")
            if len(job.documents) != 1 or len(job.documents[0]) != len(first.documents[0]):
                raise ValueError("an ensemble job streams one document per learner, all of "
                                 "one length (the segment protocol's segments); run book "
                                 "jobs separately")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"an ensemble job needs distinct seeds, got {self.seeds}")

    @property
    def spec(self) -> LearnerSpec:
        """The first member's spec (the model's config, for the executor's resources)."""
        return self.members[0].spec

    @property
    def seeds(self) -> list[int]:
        """Every member's seed, in member order."""
        return [int(job.spec.config.get("seed", 0)) for job in self.members]

    @property
    def window(self) -> int:
        """The model's window W."""
        return self.members[0].window

    @property
    def train_steps(self) -> int:
        """Training steps of all members."""
        return sum(job.train_steps for job in self.members)

    @property
    def eval_tokens(self) -> int:
        """Tokens predicted when every member's slices are evaluated."""
        return sum(job.eval_tokens for job in self.members)

    @property
    def total_tokens(self) -> int:
        """Training steps plus evaluated tokens of all members."""
        return self.train_steps + self.eval_tokens

    @property
    def lanes(self) -> int:
        """Learners the job runs (tokens per checkpointed step): M."""
        return len(self.members)

    def job_id(self) -> str:
        """``<learner>-ensemble-<first>-<last index>-s<first seed>-<digest>``, the digest of
        its members' job ids: never a member's own id, so that grouped and separate runs
        keep their checkpoints apart."""
        digest = hashlib.sha256(json.dumps([job.job_id() for job in self.members]).encode())
        first, last = self.members[0], self.members[-1]
        return (f"{first.folder_label}-ensemble-{first.index}-{last.index}-s{self.seeds[0]}-"
                f"{digest.hexdigest()[:12]}")


#: A job :func:`run_job` runs.
Job = LearnerJob | EnsembleJob


def group_jobs(jobs: list[LearnerJob]) -> list[Job]:
    """``jobs`` with the learner jobs of each model (same kind, label and config but the
    seed) grouped into one :class:`EnsembleJob`, in the order of each model's first job;
    a model with a single job stays a :class:`LearnerJob`. Raises what
    :class:`EnsembleJob` raises (book jobs cannot be grouped)."""
    models: dict[str, list[LearnerJob]] = {}
    for job in jobs:
        config = {k: v for k, v in job.spec.config.items() if k != "seed"}
        key = json.dumps([job.spec.kind, job.spec.label, config], sort_keys=True)
        models.setdefault(key, []).append(job)
    return [EnsembleJob(tuple(group)) if len(group) > 1 else group[0]
            for group in models.values()]


def summarise_records(records: pd.DataFrame, block: int) -> pd.DataFrame:
    """Block means of per-step records (bits, accuracy, memory update rate, sleeps)."""
    group = (records["step"] - 1) // block
    curve = records.groupby(group).agg(
        step=("step", "max"), bits=("bits", "mean"), accuracy=("correct", "mean"),
        memory_update_rate=("memory_learned", "mean"), sleeps=("slept", "sum"),
    )
    return curve.reset_index(drop=True)


def _records(start: int, columns: dict[str, np.ndarray]) -> pd.DataFrame:
    """The records of a chunk from its column arrays; a chunk written without its
    ``step`` column (before ensemble jobs) holds one learner's steps start+1, start+2, ..."""
    if "step" not in columns:
        columns = {"step": np.arange(start + 1, start + len(columns["bits"]) + 1), **columns}
    return pd.DataFrame(columns)


def _build(job: Job) -> Learner | SharpEnsemble | BaselineEnsemble:
    """A fresh learner of a learner job, or the ensemble of an ensemble job."""
    if isinstance(job, EnsembleJob):
        return build_ensemble(job.spec, job.seeds)
    return build_learner(job.spec)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _node() -> str:
    """The Ray node id when running in a Ray worker, else the host name."""
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            return ray.get_runtime_context().get_node_id()
    return socket.gethostname()


@dataclass
class _Resumed:
    """Where a job starts: the learner, global step, document and offset in it, the
    training seconds spent so far, the records of the steps done and the job's own
    ``extra`` state saved with the checkpoint (JSON data)."""

    learner: Learner | SharpEnsemble | BaselineEnsemble
    step: int = 0
    document: int = 0
    offset: int = 0
    train_seconds: float = 0.0
    records: list[pd.DataFrame] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


class JobFolder:
    """The on-disk state of one job (see the module docstring for the layout)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.manifest: dict[str, Any] = {"checkpoints": [], "records": [], "attempts": [],
                                          "result": None}
        manifest = self.path / "manifest.json"
        if manifest.exists():
            try:
                self.manifest = json.loads(manifest.read_text())
            except ValueError:
                warnings.warn(f"{manifest} is damaged; the job starts afresh", RuntimeWarning,
                              stacklevel=2)

    def _verified(self, name: str, sha256: str) -> bool:
        path = self.path / name
        if path.exists() and _sha256(path) == sha256:
            return True
        warnings.warn(f"{path} is missing, truncated or damaged (sha256 differs from "
                      "manifest.json); using the previous checkpoint", RuntimeWarning,
                      stacklevel=3)
        return False

    def result(self) -> tuple[pd.DataFrame, pd.DataFrame] | None:
        """The stored ``(rows, curve)`` of a finished job, or None (not finished, or its
        files fail their checksums: then the job runs again from its checkpoints)."""
        stored = self.manifest.get("result")
        if not stored or not all(self._verified(name, sha) for name, sha in stored.items()):
            return None
        return (with_bits_per_char(pd.read_parquet(self.path / "rows.parquet")),
                pd.read_parquet(self.path / "curve.parquet"))

    def done_tokens(self, job: Job) -> int:
        """Tokens of ``job`` done according to the manifest (for a progress bar)."""
        if self.manifest.get("result"):
            return job.total_tokens
        checkpoints = self.manifest.get("checkpoints") or [{"step": 0}]
        return int(checkpoints[-1]["step"]) * job.lanes

    def resume(self, job: Job) -> _Resumed:
        """The newest checkpoint whose files pass their checksums and load, with its
        records; a damaged one is reported (RuntimeWarning naming the file) and the one
        before it used; none: a fresh learner (or ensemble) of ``job``. Records and
        checkpoints after the one used are dropped."""
        return self.restore(
            lambda path: load_checkpoint(path, device=job.spec.config.get("device")),
            lambda: _build(job))

    def restore(self, load: Callable[[Path], Any], build: Callable[[], Any]) -> _Resumed:
        """What :meth:`resume` does, for any job: ``load(path)`` rebuilds the learner of a
        state file (raising :class:`~sharp.runs.checkpoints.CheckpointError` for one that
        cannot be restored), ``build()`` makes a fresh one."""
        entries = self.manifest.get("checkpoints", [])
        for position in range(len(entries) - 1, -1, -1):
            entry = entries[position]
            chunks = [c for c in self.manifest["records"] if c["stop"] <= entry["step"]]
            if not (self._verified(entry["file"], entry["sha256"])
                    and all(self._verified(c["file"], c["sha256"]) for c in chunks)):
                continue
            try:
                learner = load(self.path / entry["file"])
            except CheckpointError as error:
                warnings.warn(f"{error}; using the previous checkpoint", RuntimeWarning,
                              stacklevel=2)
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # unreadable chunks were checksummed above
                records = [_records(c["start"], dict(np.load(self.path / c["file"])))
                           for c in chunks]
            self.manifest["checkpoints"] = entries[: position + 1]
            self.manifest["records"] = chunks
            self._sweep()
            return _Resumed(learner, entry["step"], entry["document"], entry["offset"],
                            entry["train_seconds"], records, entry.get("extra", {}))
        self.manifest["checkpoints"], self.manifest["records"] = [], []
        self._sweep()
        return _Resumed(build())

    def _sweep(self) -> None:
        """Remove what no manifest entry names: states and record chunks written after
        the checkpoint resumed from, and temporary files of writes that were killed."""
        named = {entry["file"] for entry in self.manifest["checkpoints"]}
        named |= {chunk["file"] for chunk in self.manifest["records"]}
        for pattern in ("state-*.pt", "records/*.npz", "**/.*.part"):
            for path in self.path.glob(pattern):
                if path.relative_to(self.path).as_posix() not in named:
                    path.unlink(missing_ok=True)

    def start_attempt(self, step: int) -> None:
        """Record who runs the job now (Ray node id or host, pid) and from which step."""
        self.manifest.setdefault("attempts", []).append(
            {"node": _node(), "pid": os.getpid(), "resumed_from": step})
        self._write_manifest()

    def save(self, learner: Learner | SharpEnsemble | BaselineEnsemble,
             records: pd.DataFrame | None, *, step: int, document: int, offset: int,
             train_seconds: float, keep: int, extra: dict[str, Any] | None = None) -> None:
        """Save a checkpoint after global step ``step``: the records of the steps since the
        previous one (``records``, every column; None: the job keeps none), the learner (or
        ensemble) state, then the manifest, with a copy of ``extra`` (JSON data the job
        restores itself, e.g. its result rows so far) in the checkpoint's entry; prune all
        but the newest ``keep`` states."""
        start = self.manifest["records"][-1]["stop"] if self.manifest["records"] else 0
        if records is not None and step > start:
            chunk = f"records/{start:012d}-{step:012d}.npz"
            with atomic_path(self.path / chunk) as tmp, open(tmp, "wb") as file:
                np.savez_compressed(file, **{c: records[c].to_numpy() for c in records})
            self.manifest["records"].append({"file": chunk, "start": start, "stop": step,
                                             "sha256": _sha256(self.path / chunk)})
        state = f"state-{step:012d}.pt"
        save_checkpoint(learner, self.path / state)
        checkpoints = self.manifest["checkpoints"]
        checkpoints.append({"step": step, "document": document, "offset": offset,
                            "file": state, "sha256": _sha256(self.path / state),
                            "train_seconds": train_seconds,
                            **({"extra": copy.deepcopy(extra)} if extra else {})})
        pruned, self.manifest["checkpoints"] = checkpoints[:-keep], checkpoints[-keep:]
        self._write_manifest()
        for entry in pruned:
            (self.path / entry["file"]).unlink(missing_ok=True)

    def finish(self, rows: pd.DataFrame, curve: pd.DataFrame) -> None:
        """Store the result; drop the record chunks and every state but the newest (the
        trained learner, kept as ``learner`` in the manifest). A finished job whose
        result fails its checksums later runs again from the start."""
        files = {"rows.parquet": rows, "curve.parquet": curve}
        for name, frame in files.items():
            with atomic_path(self.path / name) as tmp:
                frame.to_parquet(tmp, index=False)
        self.manifest["result"] = {name: _sha256(self.path / name) for name in files}
        dropped = self.manifest["records"] + self.manifest["checkpoints"][:-1]
        self.manifest["learner"] = (self.manifest["checkpoints"][-1:] or [None])[0]
        self.manifest["records"], self.manifest["checkpoints"] = [], []
        self._write_manifest()
        for entry in dropped:
            (self.path / entry["file"]).unlink(missing_ok=True)
        if (self.path / "records").is_dir() and not any((self.path / "records").iterdir()):
            (self.path / "records").rmdir()

    def _write_manifest(self) -> None:
        atomic_write_text(self.path / "manifest.json", json.dumps(self.manifest, indent=1))


def run_learner_job(
    job: LearnerJob,
    report: Report | None = None,
    *,
    folder: str | os.PathLike | None = None,
    policy: CheckpointPolicy | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train and evaluate one learner; returns ``(rows, curve)``: one row per slice with
    the run's labels, and the block means of its training records.

    With ``folder`` (``<jobs>/<job id>``) the job checkpoints by ``policy`` and resumes
    from its last good checkpoint, or returns its stored result when it had finished.
    ``report`` is called with each batch of tokens done. A learner that diverges
    (:class:`~sharp.protocol.Diverged`) gives rows with NaN metrics and the report of
    where it happened in ``diverged``, and the curve of the documents finished before it;
    every other row has an empty ``diverged``.
    """
    policy = policy or CheckpointPolicy()
    store = JobFolder(folder) if folder is not None else None
    if store is not None and (stored := store.result()) is not None:
        return stored
    state = store.resume(job) if store is not None else _Resumed(build_learner(job.spec))
    if store is not None:
        store.start_attempt(state.step)
    learner, step, seconds = cast(Learner, state.learner), state.step, state.train_seconds
    records, unsaved = state.records, []
    saved_step, saved_at = step, time.monotonic()
    finished_documents = state.document
    diverged = ""
    try:
        for number in range(state.document, len(job.documents)):
            document = job.documents[number]
            offset = state.offset if number == state.document else 0
            if number and offset == 0:
                learner.reset_state()
            total = n_windows(len(document), job.window)
            while offset < total:
                stop = min(offset + min(PIECE, policy.every_tokens), total)
                started = time.perf_counter()
                part = run_stream(learner, document[offset : stop + job.window],
                                  offset=step, progress=False)
                seconds += time.perf_counter() - started
                part = part[["step", *RECORD_COLUMNS]]
                unsaved.append(part)
                step, offset = step + len(part), stop
                if report is not None:
                    report(len(part))
                due = (policy.due(step - saved_step, time.monotonic() - saved_at)
                       or (offset == total and number == len(job.documents) - 1))
                if store is not None and due:
                    store.save(learner, pd.concat(unsaved), step=step, document=number,
                               offset=offset, train_seconds=seconds, keep=policy.keep)
                    saved_step, saved_at = step, time.monotonic()
                if due:
                    records, unsaved = records + unsaved, []
            finished_documents = number + 1
        rows = evaluate_slices(learner, job.slices, job.clip)
    except Diverged as error:
        diverged = str(error)
        rows = _diverged_rows(list(job.slices))
    parts = records + unsaved
    frame = pd.concat(parts, ignore_index=True) if parts else _NO_RECORDS
    if diverged:  # only the documents finished before it count
        done = sum(n_windows(len(d), job.window) for d in job.documents[:finished_documents])
        frame = frame.iloc[:done]
    rows, curve = _label(job, learner.parameter_count(), frame, rows, seconds, diverged)
    if report is not None:
        report(job.eval_tokens + job.train_steps - step)
    if store is not None:
        store.finish(rows, curve)
    return rows, curve


def run_ensemble_job(
    job: EnsembleJob,
    report: Report | None = None,
    *,
    folder: str | os.PathLike | None = None,
    policy: CheckpointPolicy | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train and evaluate the members of an ensemble job as one ensemble
    (:func:`~sharp.runs.registry.build_ensemble`): every member's segment streamed in
    lockstep (:func:`~sharp.runs.stream.run_ensemble_stream`, SHARP sleeping at the global
    steps a separate learner sleeps at), then each member evaluated on its own slices.
    Returns the members' ``(rows, curve)`` concatenated in member order, with the labels,
    columns and seeds :func:`run_learner_job` gives each; a member's ``train_seconds`` is
    its share of the ensemble's training time (each piece of steps' time split evenly over
    the members that ran it, so ``tokens_per_s`` summed over the members is the ensemble's
    throughput), and its ``eval_seconds`` its share likewise.

    A member that diverges (:class:`~sharp.protocol.Diverged` naming it: a SHARP
    ensemble's block or sleep check, a baseline ensemble's step check, or its non-finite
    evaluation) gets what :func:`run_learner_job` gives a learner that diverges: rows with
    NaN metrics and the report (member, stream step, learning rate) in ``diverged``, and an
    empty curve when it diverged in training; the other members continue without it, so
    that ``--ensemble on`` reports the runs ``off`` reports. When every member diverges,
    every row is diverged.

    Checkpoints and resumes as :func:`run_learner_job` does: the state of the ensemble of
    the members still training (its seeds say which they are), the per-member records,
    and in the checkpoint's ``extra`` each member's ``diverged`` report and training
    seconds."""
    policy = policy or CheckpointPolicy()
    store = JobFolder(folder) if folder is not None else None
    if store is not None and (stored := store.result()) is not None:
        return stored
    state = store.resume(job) if store is not None else _Resumed(_build(job))
    if store is not None:
        store.start_attempt(state.step)
    ensemble = cast("SharpEnsemble | BaselineEnsemble", state.learner)
    alive = [job.seeds.index(seed) for seed in ensemble.seeds]  # job member of each member
    diverged: list[str] = list(state.extra.get("diverged", [""] * job.lanes))  # a copy
    seconds = np.array(state.extra.get("member_seconds",
                                       [state.train_seconds / job.lanes] * job.lanes))
    step, offset = state.step, state.offset
    records, unsaved = state.records, []
    saved_step, saved_at = step, time.monotonic()
    done = step * job.lanes  # tokens reported, counted as JobFolder.done_tokens counts them
    streams = np.stack([member.documents[0] for member in job.members])
    total = n_windows(streams.shape[1], job.window)
    names = list(job.members[0].slices)
    while alive and offset < total:
        stop = min(offset + min(PIECE, policy.every_tokens), total)
        at_start = ensemble.state_dict()
        started = time.perf_counter()
        try:
            part = run_ensemble_stream(ensemble, streams[alive, offset : stop + job.window],
                                       offset=step)
        except Diverged as error:
            # Members never mix (per-member masks, batched products), so the others' steps
            # were sound; but a SHARP ensemble sees a divergence only at the end of a block
            # (after every member took all its steps) or of a sleep (before the pending flags
            # and tags are cleared), and the piece's records are lost with the exception.
            # So the others take the piece again from the state saved at its start, without
            # the diverged member: exactly their own arithmetic (up to the reduction order
            # of a smaller batch), as separate learners. The failed attempt is not timed.
            dropped = alive.pop(cast(int, error.member))
            diverged[dropped] = str(error.as_member(dropped))
            if alive:
                ensemble = _without(at_start, cast(int, error.member))
            continue
        seconds[alive] += (time.perf_counter() - started) / len(alive)
        part = part[["step", "member", *RECORD_COLUMNS]].assign(
            member=np.asarray(alive)[part["member"].to_numpy()])
        unsaved.append(part)
        step, offset = step + stop - offset, stop
        done += len(part)
        if report is not None:
            report(len(part))
        due = policy.due(step - saved_step, time.monotonic() - saved_at) or offset == total
        if store is not None and due:
            store.save(ensemble, pd.concat(unsaved), step=step, document=0, offset=offset,
                       train_seconds=float(seconds.sum()), keep=policy.keep,
                       extra={"diverged": diverged, "member_seconds": seconds.tolist()})
            saved_step, saved_at = step, time.monotonic()
        if due:
            records, unsaved = records + unsaved, []
    evaluated = dict(zip(alive, ensemble_slice_rows(
        ensemble, [job.members[m].slices for m in alive], job.members[0].clip), strict=True)
        ) if alive else {}
    for m, rows in evaluated.items():
        if isinstance(rows, Diverged):
            diverged[m] = str(rows.as_member(m))
    frame = pd.concat(records + unsaved, ignore_index=True) if alive else _NO_RECORDS
    outputs = []
    for m, member in enumerate(job.members):
        if m in alive:
            member_records = frame[frame["member"] == m].drop(columns="member")
            member_records = member_records.reset_index(drop=True)
        else:  # diverged in training: as a separate learner's, its one document is unfinished
            member_records = _NO_RECORDS
        rows = _diverged_rows(names) if diverged[m] else cast(pd.DataFrame, evaluated[m])
        outputs.append(_label(member, ensemble.parameter_count(), member_records, rows,
                              float(seconds[m]), diverged[m]))
    merged = (pd.concat([rows for rows, _ in outputs], ignore_index=True),
              pd.concat([curve for _, curve in outputs], ignore_index=True))
    if report is not None:
        report(job.total_tokens - done)
    if store is not None:
        store.finish(*merged)
    return merged


def _without(state: dict[str, Any], member: int) -> SharpEnsemble | BaselineEnsemble:
    """The ensemble of ``state`` (an ensemble's ``state_dict``) without its member
    ``member`` (0-based): every other member restored exactly as ``state`` holds it."""
    kept = {**state, "seeds": [s for i, s in enumerate(state["seeds"]) if i != member],
            "members": [s for i, s in enumerate(state["members"]) if i != member]}
    ensemble = cast("SharpEnsemble | BaselineEnsemble", build_from_state(kept))
    ensemble.load_state_dict(kept)
    return ensemble


def run_job(job: Job, report: Report | None = None, *, folder: str | os.PathLike | None = None,
            policy: CheckpointPolicy | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`run_ensemble_job` for an :class:`EnsembleJob`, else :func:`run_learner_job`."""
    if isinstance(job, EnsembleJob):
        return run_ensemble_job(job, report, folder=folder, policy=policy)
    return run_learner_job(job, report, folder=folder, policy=policy)


def with_bits_per_char(rows: pd.DataFrame, chars: pd.Series | None = None) -> pd.DataFrame:
    """``rows`` with ``chars`` (the characters each slice's predicted tokens encode; given,
    else kept, else one per token for rows stored before the column existed),
    ``bits_per_char`` and ``bits_per_char_clipped``: a slice's total bits over its
    characters, ``bits * (tokens / chars)``, so that a character model's equal its bits
    per token exactly."""
    if chars is None and "chars" in rows and "bits_per_char" in rows:
        return rows
    rows = rows.copy()
    rows["chars"] = rows["tokens"] if chars is None else chars.to_numpy()
    ratio = rows["tokens"] / rows["chars"].where(rows["chars"] > 0)
    rows["bits_per_char"] = rows["bits"] * ratio
    rows["bits_per_char_clipped"] = rows["bits_clipped"] * ratio
    return rows


def _diverged_rows(names: list[str]) -> pd.DataFrame:
    """The rows of a learner that diverged: one per slice, NaN metrics, no tokens."""
    return pd.DataFrame({"slice": names, "bits": math.nan, "bits_clipped": math.nan,
                         "accuracy": math.nan, "tokens": 0, "eval_seconds": math.nan})


def _label(job: LearnerJob, parameters: int, records: pd.DataFrame, rows: pd.DataFrame,
           train_seconds: float, diverged: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    labels = {
        "learner": job.spec.name, "kind": job.spec.kind, "segment": job.index,
        "seed": job.spec.config.get("seed", 0), "parameters": parameters,
        "train_tokens": len(records), "train_seconds": train_seconds,
        "tokens_per_s": len(records) / train_seconds if train_seconds else math.nan,
        "memory_update_rate": records["memory_learned"].mean(),
        "sleeps": int(records["slept"].sum()),
    }
    for column, value in reversed(labels.items()):
        rows.insert(0, column, value)
    rows = with_bits_per_char(rows, rows["slice"].map(job.slice_characters()))
    rows["diverged"] = diverged
    curve = summarise_records(records, job.block)
    curve.insert(0, "segment", job.index)
    curve.insert(0, "learner", job.spec.name)
    return rows, curve


#: The records of a learner that diverged before finishing its first document.
_NO_RECORDS = pd.DataFrame({"step": pd.Series(dtype=int), "bits": pd.Series(dtype=float),
                            "correct": pd.Series(dtype=bool),
                            "memory_learned": pd.Series(dtype=bool),
                            "slept": pd.Series(dtype=bool)})
