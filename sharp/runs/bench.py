"""``sharp bench`` as two calls, shared by the CLI and notebook 05: :func:`plan_bench`
(load the corpus, build every learner spec, check everything before any work) and
:func:`run_bench` (run the benchmark of SPEC §6 and write the report)."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sharp.config import MAX_SEED, preset_names
from sharp.data.corpus import Corpus, corpus_splits, load_corpus
from sharp.data.tokenizer import BPE_SOURCE, TextTokenizer, hub_file, load_tokenizer
from sharp.engines.runtime import resolve_device
from sharp.model.inputs import MODEL_FILE, TABLE_KEYS, read_table, table_digest, table_files
from sharp.protocol import Sleeper
from sharp.runs import executor
from sharp.runs.benchmark import (
    BOOKS_NOT_GROUPED,
    BenchmarkResult,
    Execution,
    check_corpus_protocol,
    learner_window,
    plan_books,
    plan_jobs,
    preflight,
    run_benchmark,
)
from sharp.runs.checkpoints import atomic_write_text
from sharp.runs.invocations import Invocation, previous_invocations
from sharp.runs.jobs import (
    CheckpointPolicy,
    EnsembleJob,
    Job,
    JobFolder,
    checkpoint_policy,
    group_jobs,
)
from sharp.runs.lock import run_folder_lock
from sharp.runs.outputs import plural
from sharp.runs.registry import (
    BASELINE_KINDS,
    LearnerSpec,
    baseline_spec,
    build_ensemble,
    build_learner,
    sharp_spec,
)
from sharp.runs.report import check_report_folder, run_identity, write_benchmark_report
from sharp.runs.stream import run_stream

#: SHARP config fields the run sets for every learner, and where they come from:
#: overriding one of them for SHARP alone would contradict the run (and its report).
RUN_FIELDS = {
    "seed": "--seed (notebook: seed); learner m of each model runs with seed + m",
    "threads": "--threads (notebook: threads), for every learner",
    "vocab_size": "the corpus's vocabulary (the tokenizer's with --tokenizer)",
    "name": "--preset (notebook: preset_name)",
}
#: Stream-facing fields every learner shares: SHARP's value (preset or override) is
#: given to every baseline too, so that all read the same windows on the same device.
SHARED_FIELDS = ("window", "device", "inputs", "input_dim", "input_table")
#: Run presets of ``sharp bench --preset``: a SHARP config preset and the protocol's scale,
#: the defaults of every option they name. ``paper``: the text8 table of SPEC §6 (9
#: learners × 10M tokens, 1M-token slices, sleep every 20k steps, H=512, every baseline at
#: paper size).
RUN_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"sharp_preset": "text8", "segment": 10_000_000, "slice_len": 1_000_000,
              "learners": 9, "sleep_every": 20_000, "baseline_preset": "paper"},
    # The authors' token-level PG-19 run (issue 15): 25M training tokens of GPT-2, held-out
    # books of at most 100k tokens, GPT-2's frozen input embeddings for every learner.
    "pg19-gpt2": {"sharp_preset": "pg19-gpt2", "segment": 25_000_000, "slice_len": 100_000,
                  "learners": 1, "sleep_every": 20_000, "baseline_preset": "paper",
                  "tokenizer": "gpt2"},
}


#: What ``sharp bench --ensemble`` (notebook: ensemble) accepts.
ENSEMBLE_MODES = ("auto", "on", "off")
#: Devices on which ``--ensemble auto`` groups learners into ensembles.
ENSEMBLE_DEVICES = ("cuda", "mps")


def bench_preset_names() -> list[str]:
    """What ``sharp bench --preset`` accepts: SHARP config presets and run presets."""
    return list(dict.fromkeys([*preset_names(), *RUN_PRESETS]))  # pg19-gpt2 is both


@dataclass(frozen=True)
class BenchOptions:
    """What ``sharp bench`` (and notebook 05, whose parameters have these names) runs.

    ``segment`` / ``slice_len`` are token counts S and E (the training budget and the
    per-book evaluation cap in the book protocol). ``overrides`` are SHARP config fields
    (``--set``); ``sleep_every=None`` keeps the preset's. ``workers=None`` means
    min(runs, cores). ``baseline_preset=None`` means ``quick`` (an explicit preset with
    no baselines is refused). ``out_dir=None`` means ``reports/<run_name>``, and
    ``run_name=None`` means ``bench-<corpus file stem>-<preset>``. ``preset_name`` may be
    a run preset (:data:`RUN_PRESETS`): its SHARP config preset is used (the CLI also
    takes the preset's scale as defaults).

    Every learner job checkpoints under ``<out>/jobs/`` every ``checkpoint_tokens`` steps
    or ``checkpoint_minutes`` minutes, keeping ``keep_checkpoints``; with ``resume`` a run
    on the same folder resumes unfinished jobs and skips finished ones (``resume=False``
    deletes the folder's job checkpoints first). ``address`` joins a Ray cluster
    (``"auto"``, ``"HOST:PORT"``; None: this machine); the output folder must then
    be on a filesystem every node reaches.

    ``ensemble`` (``auto``, ``on``, ``off``): whether each model's learners run as one
    ensemble job (SPEC §10) in the segment protocol (:func:`resolve_ensemble`).

    ``tokenizer`` (None: characters): ``"bpe"``, the path of a tokenizer.json or of a folder
    holding one, or a Hugging Face hub id (:func:`~sharp.data.tokenizer.load_tokenizer`); the
    book corpus is then read as token ids, every learner's ``vocab_size`` is the
    tokenizer's, and the report gives bits per character next to bits per token.
    """

    corpus: str = "wiki"
    preset_name: str = "quick"
    protocol: str = "auto"
    segment: int = 20_000
    slice_len: int = 2_000
    learners: int = 4
    seed: int = 0
    threads: int = 1
    workers: int | None = None
    sleep_every: int | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    baselines: list[str] = field(default_factory=lambda: list(BASELINE_KINDS))
    baseline_preset: str | None = None
    clip: bool = False
    out_dir: str | None = None
    run_name: str | None = None
    overwrite: bool = False
    command: str = ""
    progress: bool = True
    address: str | None = None
    checkpoint_tokens: int = CheckpointPolicy.every_tokens
    checkpoint_minutes: float = CheckpointPolicy.every_seconds / 60
    keep_checkpoints: int = CheckpointPolicy.keep
    resume: bool = True
    ensemble: str = "auto"
    tokenizer: str | None = None

    @property
    def policy(self) -> CheckpointPolicy:
        """The jobs' checkpoint policy. Raises ValueError naming the option (and the
        notebook parameter) for a checkpoint setting that is not a positive number (an
        integer for tokens and kept checkpoints)."""
        return checkpoint_policy(self.checkpoint_tokens, self.checkpoint_minutes,
                                 self.keep_checkpoints, notebook=True)


@dataclass(frozen=True)
class BenchPlan:
    """A checked run: the loaded corpus and its tokenizer (None: characters), the learner
    specs (seed 0; learner m runs with ``seed + m``), the protocol that will run, resolved
    workers, bits clip (log2 V or None), run name and output folder, and the report
    metadata known before running.
    ``ensemble``: whether each model's learners run as one ensemble job
    (:func:`resolve_ensemble`)."""

    options: BenchOptions
    corpus: Corpus
    tokenizer: TextTokenizer | None
    specs: list[LearnerSpec]
    protocol: str
    ensemble: bool
    workers: int
    clip: float | None
    run_name: str
    out: Path
    meta: dict[str, Any]
    started: float

    @property
    def headline(self) -> str:
        """One line: corpus, models, runs and workers."""
        runs = self.options.learners * len(self.specs)
        tokens = (f"{len(self.corpus):,} tokens" if self.tokenizer is None else
                  f"{len(self.corpus):,} tokens of tokenizer {self.tokenizer.name} (V = "
                  f"{self.tokenizer.size:,}) for {self.corpus.characters:,} characters")
        return (f"corpus {self.corpus.name} ({self.meta['corpus_source']}): "
                f"{tokens}; models {[s.name for s in self.specs]}; "
                f"{self.protocol} protocol; {plural(runs, 'run')}"
                f"{' (each model as one ensemble)' if self.ensemble else ''} on "
                f"{self.where}, {plural(self.options.threads, 'thread')} each")

    @property
    def where(self) -> str:
        """Where the jobs run: ``N workers``, or ``the Ray cluster at ADDRESS``."""
        if self.options.address is not None:
            return f"the Ray cluster at {self.options.address}"
        return plural(self.workers, "worker")


def corpus_source(corpus: str) -> str:
    """Where a corpus comes from, as :func:`~sharp.data.corpus.load_corpus` reads it:
    ``bundled`` (wiki, books), ``download`` (text8, pg19), else the resolved path of the
    local file or folder (so ``./wiki``, a file, is never taken for the bundled wiki)."""
    if corpus in ("wiki", "books"):
        return "bundled"
    if corpus in ("text8", "pg19"):
        return "download"
    return str(Path(corpus).expanduser().resolve())


def default_run_name(corpus: str, preset_name: str, tokenizer: str | None = None) -> str:
    """``bench-<label>-<preset>`` (``bench-<label>-<tokenizer>-<preset>`` with a tokenizer):
    the corpus name, or a file's full stem (``data/exp.alpha.txt`` -> ``exp.alpha``) or a
    folder's name, likewise for the tokenizer (``bpe``, a hub id, a path's name), with
    characters other than letters, digits, ``.``, ``_`` and ``-`` replaced by ``_``."""
    labels = [_label(corpus)] + ([] if tokenizer is None else [_label(tokenizer)])
    return f"bench-{'-'.join(labels)}-{preset_name}"


def _label(source: str) -> str:
    """A corpus or tokenizer source as part of a run name (:func:`default_run_name`)."""
    path = Path(source).expanduser()
    label = path.resolve().name if path.is_dir() else path.stem if path.is_file() else source
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("._") or "corpus"


def bench_specs(options: BenchOptions, vocab_size: int) -> list[LearnerSpec]:
    """SHARP (preset + overrides) and the requested baselines on the corpus's vocabulary,
    SHARP's window and device, and ``options.threads``.

    Raises :class:`~sharp.config.ConfigError` (a ``ValueError``) for an override of a
    field in :data:`RUN_FIELDS`, for ``sleep_every`` given both as an option and as an
    override, for a baseline preset without baselines, and for any invalid config."""
    refused = sorted(set(options.overrides) & set(RUN_FIELDS))
    if refused:
        raise ValueError("; ".join(f"{key} cannot be overridden with --set (notebook: "
                                   f"overrides): it is set by {RUN_FIELDS[key]}"
                                   for key in refused))
    overrides: dict[str, Any] = {"threads": options.threads, "vocab_size": vocab_size}
    if options.sleep_every is not None:
        if "sleep_every" in options.overrides:
            raise ValueError("sleep_every is given twice (--sleep-every and --set); give it "
                             "once")
        overrides["sleep_every"] = options.sleep_every
    if options.baseline_preset is not None and not options.baselines:
        raise ValueError(f"baseline preset {options.baseline_preset!r} given but no "
                         "baselines run; name them with --baselines (notebook: baselines)")
    name = RUN_PRESETS.get(options.preset_name, {}).get("sharp_preset", options.preset_name)
    sharp = sharp_spec(name, **overrides, **options.overrides)
    if sharp.config["inputs"] == "dense" and sharp.config["input_table"] is None:
        overrides["input_table"] = str(model_folder(options.tokenizer))
        sharp = sharp_spec(name, **overrides, **options.overrides)
    if sharp.config["inputs"] == "dense":
        check_table(sharp.config)
    shared = {key: sharp.config[key] for key in SHARED_FIELDS}
    return [sharp] + [
        baseline_spec(kind, options.baseline_preset or "quick", threads=options.threads,
                      vocab_size=vocab_size, **shared)
        for kind in options.baselines
    ]


def model_folder(tokenizer: str | None) -> Path:
    """Where a dense-input run reads its frozen input table when the config names none: the
    tokenizer's own local folder (a model folder saved by ``transformers``' save_pretrained
    holds ``tokenizer.json`` and ``model.safetensors``), or for a hub id its
    ``model.safetensors`` from the Hugging Face cache (downloaded where the network allows).

    Raises ValueError without a tokenizer or with ``bpe`` (no pretrained table: use a
    learned embedding) and FileNotFoundError / RuntimeError saying which folder to place."""
    if tokenizer is None or tokenizer == BPE_SOURCE:
        raise ValueError(
            "inputs='dense' reads a frozen input table from a model folder: give --tokenizer "
            "PATH of a folder holding tokenizer.json and model.safetensors (e.g. GPT-2 saved "
            "with transformers' save_pretrained), or --set input_table=PATH; the bundled "
            f"{BPE_SOURCE!r} tokenizer has no pretrained table (its presets learn an embedding)")
    path = Path(tokenizer).expanduser()
    if path.exists():
        folder = (path if path.is_dir() else path.parent).resolve()
        table_files(folder)  # FileNotFoundError saying what to place there
        return folder
    return hub_file(tokenizer, MODEL_FILE)


def check_table(config: dict[str, Any]) -> None:
    """Check, before any learner starts, that a dense config's input table exists and is
    (vocab_size, input_dim). Raises ValueError naming both shapes, and what
    :func:`~sharp.model.inputs.read_table` raises."""
    try:
        shape = tuple(read_table(config["input_table"]).shape)
    except KeyError as error:  # a tensor name the kit does not know
        raise ValueError(f"{error.args[0].split('; pass key=')[0]}: save the table under "
                         f"one of those names (GPT-2's is {TABLE_KEYS[0]})") from None
    expected = (config["vocab_size"], config["input_dim"])
    if shape != expected:
        raise ValueError(
            f"the input table in {config['input_table']} is {shape} but the learners need "
            f"(vocab_size, input_dim) = {expected}: use the tokenizer of the same model, and "
            f"--set input_dim={shape[1]}")


def auto_groups(device: str) -> bool:
    """Whether ``--ensemble auto`` (``sharp bench``, ``sharp experiment``) may group learners
    whose config's device is ``device``: when it resolves to CUDA or MPS as an ensemble
    resolves it. A measured rule: on a 2-core CPU a SHARP ensemble ran 6-13x slower than as
    many separate fused-engine learners, baseline ensembles of M >= 3 were faster for RNN /
    CW-RNN / Transformer, mixed for LSTM / GRU and slower at M = 1, so ``auto`` never groups
    on the CPU."""
    return resolve_device(device, "batched").type in ENSEMBLE_DEVICES


def resolve_ensemble(option: str, specs: list[LearnerSpec], protocol: str, learners: int
                     ) -> bool:
    """Whether each model's learners run as one ensemble job: ``on`` yes, ``off`` no;
    ``auto`` yes when the learners' device (SHARP's, which every learner shares) groups
    (:func:`auto_groups`: CUDA or MPS), the segment protocol runs and every model has
    two or more learners. Raises ValueError for another option, and for ``on``
    with the book protocol (:data:`~sharp.runs.benchmark.BOOKS_NOT_GROUPED`)."""
    if option not in ENSEMBLE_MODES:
        raise ValueError(f"ensemble must be one of {ENSEMBLE_MODES}, got {option!r}")
    if option == "on" and protocol == "books":
        raise ValueError(BOOKS_NOT_GROUPED)
    if option == "on" and learners < 2:
        raise ValueError("--ensemble on (notebook: ensemble) groups each model's learners into "
                         "one job; with --learners 1 there is nothing to group: give "
                         "--learners 2 or more, or --ensemble off")
    if option != "auto":
        return option == "on"
    return (auto_groups(str(specs[0].config.get("device", "auto"))) and protocol == "segment"
            and learners > 1)


def plan_bench(options: BenchOptions, *, check_folder: bool = True) -> BenchPlan:
    """Load the corpus, build the specs and check the whole run before any learner starts
    (and before a notebook kernel does): the protocol and the corpus's splits before the
    corpus is loaded (:func:`~sharp.runs.benchmark.check_corpus_protocol`), the configs
    (:func:`bench_specs`), lengths and books (:func:`~sharp.runs.benchmark.preflight`),
    and, with ``check_folder``, that the output folder holds no report of another run
    (:func:`~sharp.runs.report.check_report_folder`; ``sharp bench`` plans without it and
    checks under the folder's run lock, ``--estimate`` only says what it would refuse).

    With ``options.tokenizer`` the tokenizer is loaded (trained, for ``bpe``) before the
    corpus, and refused for a corpus without books; the corpus is then encoded with it, so
    the book protocol's checks count tokens of that tokenizer.

    Raises ``ValueError`` (configs, lengths, protocol, a cluster address refused by
    :func:`~sharp.runs.executor.check_address`, ensemble mode:
    :func:`resolve_ensemble`, a tokenizer with a corpus without books),
    ``FileNotFoundError`` (corpus, tokenizer path), ``RuntimeError`` (a hub tokenizer
    offline) or ``FileExistsError`` (another run's report in the folder)."""
    started = time.perf_counter()
    policy = options.policy  # a bad checkpoint setting fails before the corpus is read
    if options.address is not None:
        executor.check_address(options.address)
    if not 0 <= options.seed <= MAX_SEED - options.learners + 1:
        raise ValueError(f"--seed {options.seed} with --learners {options.learners}: learner "
                         "m runs with seed + m, which must be in 0..2**63-1; give --seed in "
                         f"0..{MAX_SEED - options.learners + 1}")
    name = options.run_name or default_run_name(options.corpus, options.preset_name,
                                                options.tokenizer)
    if Path(name).name != name or name in (".", ".."):
        raise ValueError(f"run name {name!r} must be a plain folder name (it becomes "
                         "reports/<name>); give a path with --out instead")
    out = Path(options.out_dir or os.path.join("reports", name)).expanduser()  # as locked
    protocol = check_corpus_protocol(options.corpus, options.protocol)  # before any download
    tokenizer = None
    if options.tokenizer is not None:
        if corpus_splits(options.corpus) is None:
            raise ValueError(f"--tokenizer (notebook: tokenizer) reads the raw text of a book "
                             f"corpus ('books', 'pg19' or a folder in PG-19 layout); "
                             f"{options.corpus!r} has no books: run it without a tokenizer")
        tokenizer = load_tokenizer(options.tokenizer, progress=options.progress)
        bench_specs(options, tokenizer.size)  # configs and the input table before encoding
    corpus = load_corpus(options.corpus, progress=options.progress, tokenizer=tokenizer)
    specs = bench_specs(options, corpus.vocab.size)
    runs = options.learners * len(specs)
    workers = min(os.cpu_count() or 1 if options.workers is None else options.workers,
                  max(runs, 1))
    protocol = preflight(specs, corpus, protocol=protocol, segment=options.segment,
                         slice_len=options.slice_len, learners=options.learners,
                         workers=workers)
    ensemble = resolve_ensemble(options.ensemble, specs, protocol, options.learners)
    clip = math.log2(corpus.vocab.size) if options.clip else None
    meta = {
        "run": name, "corpus": corpus.name,
        "corpus_source": corpus_source(options.corpus),
        "corpus_tokens": len(corpus), "corpus_sha256": corpus.sha256, "protocol": protocol,
        **({} if tokenizer is None else {"tokenizer": {
            "source": tokenizer.name, "sha256": tokenizer.sha256, "vocab_size": tokenizer.size,
            "corpus_chars": corpus.characters}}),
        "segment": options.segment, "slice": options.slice_len, "learners": options.learners,
        "seed": options.seed, "clip": clip,
        # with an address the cluster's resources decide, not --workers (per invocation)
        **({} if options.address is None else {"address": options.address}),
        "ensemble": "on" if ensemble else "off", "ensemble_option": options.ensemble,
        "configs": {spec.name: {k: v for k, v in spec.config.items() if k != "seed"}
                    for spec in specs},
        **({} if specs[0].config["input_table"] is None else {
            "input_table_sha256": table_digest(read_table(specs[0].config["input_table"]))}),
        "checkpoints": {"every_tokens": policy.every_tokens,
                        "every_seconds": policy.every_seconds, "keep": policy.keep},
    }
    if protocol == "books":
        books = plan_books(corpus, budget=options.segment, max_eval_tokens=options.slice_len,
                           window=learner_window(specs))
        meta["books"], meta["held_out"] = books.counts(), books.held_out
    if check_folder:
        check_report_folder(out, meta, options.overwrite)
    return BenchPlan(options, corpus, tokenizer, specs, protocol, ensemble, workers, clip, name,
                     out, meta, started)


def run_bench(plan: BenchPlan) -> BenchmarkResult:
    """Run a planned benchmark and write its report to ``plan.out``
    (:func:`~sharp.runs.report.write_benchmark_report`); returns the result.

    The output folder's run lock is held throughout (:func:`~sharp.runs.lock.run_folder_lock`:
    :class:`~sharp.runs.lock.FolderBusy` while another process runs on it; the kernel of
    ``sharp bench``'s notebook inherits its command's lock), and the folder checked again
    under it (:func:`~sharp.runs.report.check_report_folder`: FileExistsError where another
    run's report came in since the plan). ``run.json`` (``"complete":
    false``) is written before any job starts, so that a re-run on the folder is recognised
    as the same run; it keeps every invocation of the run (command, start, wall seconds,
    workers or the Ray cluster's address and CPUs, threads, the jobs found finished or
    checkpointed), rewritten, with
    results.csv and curves.csv (atomically), each time a job finishes, so a partial report
    is readable during the run. Jobs checkpoint under ``<out>/jobs/`` and resume from there
    (see :class:`BenchOptions`). With ``options.address`` the cluster is joined before
    anything in the folder changes (another run's jobs deleted, run.json written), so a
    failed join leaves the folder as it was: raises ConnectionError then
    (:func:`~sharp.runs.executor.init_ray`)."""
    options = plan.options
    with run_folder_lock(plan.out, "sharp bench"):
        check_report_folder(plan.out, plan.meta, options.overwrite)  # again, under the lock
        where: dict[str, Any] = {"workers": plan.workers}
        if options.address is not None:  # a failed join leaves the folder as it was
            where = executor.join_cluster(options.address)
        jobs_dir = plan.out / "jobs"
        try:
            previous = json.loads((plan.out / "run.json").read_text())
        except (OSError, ValueError):
            previous = {}
        if not options.resume or run_identity(previous) != run_identity(plan.meta):
            shutil.rmtree(jobs_dir, ignore_errors=True)  # another run's (--overwrite) jobs
            previous = {}
        manifests = [JobFolder(jobs_dir / job.job_id()).manifest for job in bench_jobs(plan)]
        finished = [bool(m.get("result")) for m in manifests]
        invocation = Invocation(
            options.command, plan.started, **where, threads=options.threads,
            jobs=len(manifests), jobs_finished_before=sum(finished),
            jobs_resumed=sum(bool(m.get("checkpoints")) and not done
                             for m, done in zip(manifests, finished, strict=True)))

        def meta(complete: bool = False, ended: bool = False) -> dict[str, Any]:
            return {**plan.meta, "complete": complete,
                    "invocations": [*previous_invocations(previous),
                                    invocation.record(ended=ended)]}

        def partial(result: BenchmarkResult) -> None:
            atomic_write_text(plan.out / "results.csv", result.results.to_csv(index=False))
            atomic_write_text(plan.out / "curves.csv", result.curves.to_csv(index=False))
            atomic_write_text(plan.out / "run.json", json.dumps(meta(), indent=2))

        atomic_write_text(plan.out / "run.json", json.dumps(meta(), indent=2))
        execution = Execution(address=options.address, jobs_dir=jobs_dir,
                              policy=options.policy, on_partial=partial)
        try:
            result, _ = run_benchmark(
                plan.specs, plan.corpus, protocol=plan.protocol, segment=options.segment,
                slice_len=options.slice_len, learners=options.learners, seed=options.seed,
                workers=plan.workers, clip=plan.clip, progress=options.progress,
                execution=execution, ensemble=plan.ensemble,
            )
        except BaseException:  # Ctrl-C, SIGTERM, an error: this invocation's end, recorded
            atomic_write_text(plan.out / "run.json", json.dumps(meta(ended=True), indent=2))
            raise
        write_benchmark_report(plan.out, result, meta(complete=True, ended=True))
    return result


def bench_jobs(plan: BenchPlan) -> list[Job]:
    """The jobs a planned run runs: one per learner (of each model, segment or book part),
    or, where the plan groups them (``plan.ensemble``), one ensemble job per model."""
    options = plan.options
    jobs = plan_jobs(plan.specs, plan.corpus, protocol=plan.protocol, segment=options.segment,
                     slice_len=options.slice_len, learners=options.learners, seed=options.seed,
                     clip=plan.clip)
    return group_jobs(jobs) if plan.ensemble else list(jobs)


@dataclass(frozen=True)
class Speed:
    """A learner's measured cost: seconds per training step, per evaluated token, and per
    sleep phase (0 for a learner without one); for an ensemble of ``members`` learners,
    per step, token and sleep of all members at once (in lockstep)."""

    step_seconds: float
    eval_seconds: float
    sleep_seconds: float
    members: int = 1


def measure_speed(job: Job, tokens: np.ndarray, steps: int = 200, *,
                  sleep: bool = True) -> Speed:
    """Time what ``job`` will do, on a fresh learner of its spec (or, for an
    :class:`~sharp.runs.jobs.EnsembleJob`, a fresh ensemble of its seeds on the device it
    resolves to, every member reading the same tokens): ``steps`` training steps and an
    evaluation of as many tokens (the first ``steps`` + W + 1 of ``tokens``), then, with
    ``sleep`` and a learner that sleeps, one sleep phase. An ensemble's figures are for all
    its members at once (seconds per lockstep step, per lockstep evaluated token, per sleep
    of every member). Raises ValueError when ``tokens`` is too short."""
    seeds = job.seeds if isinstance(job, EnsembleJob) else None
    learner = build_learner(job.spec) if seeds is None else build_ensemble(job.spec, seeds)
    window = learner.window
    if len(tokens) < steps + window + 1:
        raise ValueError(f"measuring {steps} steps needs {steps + window + 1} tokens, got "
                         f"{len(tokens)}")
    stream = tokens[: steps + window]
    started = time.perf_counter()
    if seeds is None:
        run_stream(learner, stream, sleep_every=0 if isinstance(learner, Sleeper) else None,
                   progress=False)
    else:
        ids = torch.as_tensor(np.stack([stream] * len(seeds)), dtype=torch.int64)
        for i in range(steps):
            last = learner.learn(ids[:, i : i + window], ids[:, i + window])
        last.loss.cpu()  # wait for a device's queued work
    step = (time.perf_counter() - started) / steps
    started = time.perf_counter()
    learner.evaluate(stream if seeds is None else [stream] * len(seeds))
    evaluate = (time.perf_counter() - started) / steps
    sleep_seconds = 0.0
    if sleep and isinstance(learner, Sleeper):
        started = time.perf_counter()
        learner.sleep()
        sleep_seconds = time.perf_counter() - started
    return Speed(step, evaluate, sleep_seconds, job.lanes)


def speed_name(job: Job) -> str:
    """The name :func:`estimate_seconds` gives a job's measured speed: the model's, with
    ``(ensemble of M)`` for an ensemble job."""
    return job.spec.name + (f" (ensemble of {job.lanes})" if job.lanes > 1 else "")


@dataclass(frozen=True)
class _Left:
    """What is left of one job: training steps, sleeps and evaluated tokens (an ensemble
    job's counted per member, its members running in lockstep)."""

    job: Job
    steps: int
    sleeps: int
    eval_tokens: float


def estimate_seconds(plan: BenchPlan, steps: int = 200) -> tuple[float, dict[str, Speed]]:
    """Estimated wall-clock seconds of the work left in a planned run, and the measured
    :class:`Speed` of each model with work left (a warm-up of ``steps`` steps,
    :func:`measure_speed`; where the plan groups a model's learners into one ensemble job,
    ``plan.ensemble``, of that ensemble), named by :func:`speed_name`. A model is timed
    sleeping only when a job of it has a sleep left; a run with nothing left measures
    nothing and is estimated at 0 s.

    Per job: training steps not yet checkpointed × seconds per step, plus its sleeps ×
    seconds per sleep (SHARP), plus evaluated tokens × seconds per token; summed over
    jobs and divided by the workers, assuming each worker runs at the measured speed (on a
    busy machine it will not; Ray's start-up, a few seconds, is not counted)."""
    left: dict[str, list[_Left]] = {}  # by speed_name, in the order the jobs run
    for job in bench_jobs(plan):
        lanes = job.lanes
        train = job.train_steps // lanes
        done = JobFolder(plan.out / "jobs" / job.job_id()).done_tokens(job) // lanes
        every = job.spec.config.get("sleep_every") or 0
        sleeps = (train // every - min(done, train) // every) if every else 0
        evaluate = job.eval_tokens / lanes if done < job.total_tokens // lanes else 0
        if train > done or evaluate:
            left.setdefault(speed_name(job), []).append(
                _Left(job, max(train - done, 0), sleeps, evaluate))
    speeds: dict[str, Speed] = {}
    total = 0.0
    for name, items in left.items():
        speed = speeds[name] = measure_speed(items[0].job, plan.corpus.tokens, steps,
                                             sleep=any(item.sleeps for item in items))
        total += sum(item.steps * speed.step_seconds + item.sleeps * speed.sleep_seconds
                     + item.eval_tokens * speed.eval_seconds for item in items)
    return total / max(plan.workers, 1), speeds
