"""Running a registered experiment and writing its CSV, HTML figure and markdown summary;
the combined index of several experiments."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from sharp.config import SharpConfig
from sharp.experiments.common import (
    REGISTRY,
    Experiment,
    Job,
    JobStore,
    default_workers,
    planned_jobs,
    stored_jobs,
)
from sharp.explore.plots import figures_html
from sharp.runs.checkpoints import atomic_write_text
from sharp.runs.invocations import (
    Invocation,
    previous_invocations,
    total_seconds,
    wall_time_words,
)
from sharp.runs.jobs import CheckpointPolicy
from sharp.runs.lock import run_folder_lock
from sharp.runs.outputs import check_output_folder, check_replace, plural
from sharp.runs.report import machine_info


def get_experiment(name: str) -> Experiment:
    """The registered experiment ``name`` (ValueError listing the names otherwise)."""
    if name not in REGISTRY:
        raise ValueError(f"unknown experiment {name!r}; choose one of {sorted(REGISTRY)}")
    return REGISTRY[name]


@dataclass(frozen=True)
class ExperimentRun:
    """One finished run of a registered experiment; ``seconds``: this invocation's wall
    time; ``ensemble``: how its repetitions ran (:func:`ensemble_record`; empty for an
    experiment without the option); ``invocations``: with an output folder, every
    invocation of the run, this one last (:class:`~sharp.runs.invocations.Invocation`)."""

    experiment: Experiment
    frame: pd.DataFrame
    parameters: dict[str, Any]
    seconds: float
    ensemble: dict[str, Any] = field(default_factory=dict)
    invocations: list[dict[str, Any]] = field(default_factory=list)


def _plain(value: Any) -> Any:
    """JSON form of a parameter value: a configuration's fields, else its text."""
    return value.to_dict() if isinstance(value, SharpConfig) else str(value)


#: Parameters that say how a run ran, not what it computed (repetitions are seeded
#: independently, so the number of worker processes changes no result; an ensemble's
#: members compute what separate learners do, up to floating-point reduction order).
HOW_PARAMETERS = ("workers", "progress", "ensemble")


def experiment_files(name: str) -> tuple[str, ...]:
    """The files one experiment writes, its record ``<name>.json`` (written last) at the end."""
    return tuple(f"{name}.{suffix}" for suffix in ("csv", "html", "md", "json"))


def experiment_identity(name: str, preset: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """What defines a run of experiment ``name`` (JSON form): the experiment, the preset and
    every parameter except :data:`HOW_PARAMETERS`."""
    what = {key: value for key, value in parameters.items() if key not in HOW_PARAMETERS}
    return json.loads(json.dumps({"experiment": name, "preset": preset, **what},
                                 default=_plain))


def jobs_folder(out: str | os.PathLike, name: str) -> Path:
    """Where a run of experiment ``name`` writing to ``out`` stores its finished jobs'
    frames: ``<out>/jobs/<name>/``, with ``run.json`` (the run's identity)."""
    return Path(out) / "jobs" / name


def check_experiment_folder(out: str | os.PathLike, name: str, preset: str,
                            parameters: dict[str, Any], overwrite: bool = False) -> Path:
    """Check, before the run, that experiment ``name`` may write its files under ``out``:
    ``out`` must be a writable folder (or creatable), and may hold only this same run's
    files (results, or the stored jobs of an unfinished run, which it resumes) unless
    ``overwrite``. Raises FileExistsError (a file where the folder should be, or the
    results or stored jobs of another run: other preset, seed or parameters),
    PermissionError (not writable)."""
    out = check_output_folder(out)
    identity = experiment_identity(name, preset, parameters)
    check_replace(out, experiment_files(name), f"{name}.json", identity, overwrite=overwrite,
                  what=f"{name}'s results")
    check_replace(jobs_folder(out, name), ("run.json",), "run.json", identity,
                  overwrite=overwrite, what=f"{name}'s stored jobs")
    return out


def start_jobs(out: str | os.PathLike, name: str, preset: str, parameters: dict[str, Any],
               resume: bool = True) -> list[dict[str, Any]]:
    """Prepare the folder of a run of experiment ``name`` writing to ``out`` for its
    finished jobs (:func:`jobs_folder`): kept when it holds this same run's jobs and
    ``resume`` (less the temporary files of killed writes), else emptied. Returns the
    invocations of this run recorded there (``run.json``, :func:`mark_jobs`) before this
    one; none for a fresh run."""
    store = JobStore(jobs_folder(out, name))
    if resume and holds_jobs_of(out, name, experiment_identity(name, preset, parameters)):
        store.sweep()
        return previous_invocations(json.loads((store.folder / "run.json").read_text()))
    store.clear()
    return []


def mark_jobs(out: str | os.PathLike, identity: dict[str, Any],
              invocations: list[dict[str, Any]]) -> None:
    """Mark :func:`jobs_folder` as the folder of the run with ``identity``
    (:func:`experiment_identity`; its ``experiment`` names the folder) and record its
    ``invocations`` there (``run.json``, written atomically)."""
    folder = jobs_folder(out, identity["experiment"])
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "run.json", json.dumps(
        {"identity": identity, "invocations": invocations}, indent=2))


def holds_jobs_of(out: str | os.PathLike, name: str, identity: dict[str, Any]) -> bool:
    """Whether :func:`jobs_folder` of ``out`` is marked (``run.json``) as the folder of the
    run of experiment ``name`` with ``identity`` (:func:`experiment_identity`)."""
    try:
        marker = json.loads((jobs_folder(out, name) / "run.json").read_text())
        return bool(marker["identity"] == identity)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def ensemble_record(experiment: Experiment, parameters: dict[str, Any],
                    jobs: list[Job] | None = None) -> dict[str, Any]:
    """How a run of ``experiment`` with ``parameters`` runs its repetitions, from its planned
    ``jobs`` (None: :func:`~sharp.experiments.common.planned_jobs`; no job runs): ``{}`` for an
    experiment without the ``ensemble`` option, else ``ensemble`` (``"on"`` when some job
    runs a condition's repetitions as one ensemble, else ``"off"``), ``ensemble_option``
    (as given), and the numbers of ``ensemble_jobs`` and ``separate_jobs``. Raises what the
    experiment raises for its parameters before any job runs (ValueError for
    ``ensemble="on"`` with one repetition)."""
    if not experiment.ensembles:
        return {}
    if jobs is None:
        jobs = planned_jobs(experiment.run, parameters)
    grouped = sum(job.members > 1 for job in jobs)
    return {"ensemble": "on" if grouped else "off",
            "ensemble_option": parameters.get("ensemble", "auto"),
            "ensemble_jobs": grouped, "separate_jobs": len(jobs) - grouped}


def _ensemble_line(record: dict[str, Any]) -> list[str]:
    """The summary's line saying how the repetitions ran (none for an experiment without
    the ``ensemble`` option)."""
    if not record:
        return []
    separate = plural(record["separate_jobs"], "separate job")
    jobs = (f"{plural(record['ensemble_jobs'], 'ensemble job')} (each runs all the "
            f"repetitions of one condition) and {separate}" if record["ensemble"] == "on"
            else f"{separate}, one per repetition and condition")
    return [f"- repetitions: {jobs} (--ensemble {record['ensemble_option']})"]


def _invocation_lines(invocations: list[dict[str, Any]]) -> list[str]:
    """The summary's list of a run's invocations when there were several: each one's
    start, wall time, workers and the jobs it found stored."""
    if len(invocations) < 2:
        return []
    return ["- invocations (the same run, resumed):", *(
        f"  {number}. started {item['started']}, {float(item['wall_seconds']):.1f} s, "
        f"{plural(item['workers'], 'worker')}; {item['jobs_stored_before']} of "
        f"{plural(item['jobs'], 'job')} already stored: `{item['command']}`"
        for number, item in enumerate(invocations, 1))]


def write_experiment(out: str | os.PathLike, experiment: Experiment, frame: pd.DataFrame,
                     parameters: dict[str, Any], *, preset: str = "custom",
                     invocations: list[dict[str, Any]] | None = None, command: str = "",
                     ensemble: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write ``<name>.csv`` (the tidy frame), ``<name>.html`` (the figure, plotly.js
    inline), ``<name>.md`` (parameters, seeds, summary) and, last, ``<name>.json`` (the
    run's record: identity, parameters, preset, command, date, the ``invocations`` of the
    run (:class:`~sharp.runs.invocations.Invocation`) and their total wall time
    ``seconds``, and for an experiment whose repetitions may run as ensembles how they ran,
    ``ensemble``: :func:`ensemble_record`; read by :func:`check_experiment_folder` and
    :func:`write_index`) under ``out``, each atomically. Where ``out`` holds a combined
    ``index.md``, it is rebuilt from the files on disk, so it never contradicts them."""
    out = Path(out)
    name = experiment.name
    paths = {suffix: out / file for suffix, file in
             zip(("csv", "html", "md", "json"), experiment_files(name), strict=True)}
    title = f"Experiment {experiment.number}: {experiment.title}"
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    seeds = (frame.drop_duplicates("rep")[["rep", "seed"]].sort_values("rep")
             if {"rep", "seed"} <= set(frame.columns) else pd.DataFrame())
    lines = [
        f"# {title}", "",
        f"- preset: **{preset}**" + (f"; {wall_time_words(invocations)}" if invocations
                                     else ""),
        f"- date: {date}",
        f"- machine: {json.dumps(machine_info())}",
        *([f"- command: `{command}`"] if command else []),
        *_invocation_lines(invocations or []),
        *_ensemble_line(ensemble or {}),
        f"- paper's claim: {experiment.claim}", "",
        "## Parameters", "", "```json",
        json.dumps(parameters, indent=2, default=_plain), "```", "",
        "## Seeds (one per repetition, shared by every condition)", "",
        ", ".join(f"rep {int(r.rep)}: {int(r.seed)}" for r in seeds.itertuples()) or "-", "",
        "## Result", "", *experiment.summarise(frame), "",
        "## Files", "",
        f"- `{paths['csv'].name}`: tidy results ({plural(len(frame), 'row')}; columns "
        f"{', '.join(frame.columns)})",
        f"- `{paths['html'].name}`: the figure (median and interquartile band across "
        "repetitions; self-contained)",
        f"- `{paths['json'].name}`: this run's record (parameters, preset, command; "
        "machine-readable)",
        *([f"- `jobs/{name}/`: each job's frame, stored as it finished (what a re-run "
           "resumes from)"] if jobs_folder(out, name).is_dir() else []), "",
    ]
    record = {
        "experiment": name, "number": experiment.number, "preset": preset,
        "identity": experiment_identity(name, preset, parameters),
        "parameters": json.loads(json.dumps(parameters, default=_plain)),
        "seconds": total_seconds(invocations) if invocations else None,
        "invocations": invocations or [], "command": command, "date": date,
        "machine": machine_info(),
        **(ensemble or {}),
    }
    texts = {
        "csv": frame.to_csv(index=False),
        "html": figures_html([experiment.figure(frame)], title),
        "md": "\n".join(lines),
        "json": json.dumps(record, indent=2),
    }
    for suffix, text in texts.items():
        atomic_write_text(paths[suffix], text)
    if (out / "index.md").exists():
        write_index(out)
    return paths


def indexed_experiments(out: str | os.PathLike) -> list[tuple[Experiment, dict[str, Any],
                                                              pd.DataFrame]]:
    """The experiments whose record (``<name>.json``) and results (``<name>.csv``) are in
    ``out``, in SPEC order: (experiment, record, frame read from the CSV)."""
    out = Path(out)
    found = []
    for experiment in sorted(REGISTRY.values(), key=lambda e: e.number):
        record, data = out / f"{experiment.name}.json", out / f"{experiment.name}.csv"
        if record.is_file() and data.is_file():
            found.append((experiment, json.loads(record.read_text()), pd.read_csv(data)))
    return found


def write_index(out: str | os.PathLike) -> dict[str, Path]:
    """Rebuild the combined report of the experiments in ``out`` from their files on disk
    (:func:`indexed_experiments`): ``index.md`` (each experiment's claim, preset, command,
    result, wall time and files) and ``index.html`` (all their figures on one
    self-contained page). Raises FileNotFoundError if ``out`` holds no experiment's
    results."""
    out = Path(out)
    found = indexed_experiments(out)
    if not found:
        raise FileNotFoundError(f"{out} holds no experiment's results (<name>.csv with its "
                                "<name>.json); run sharp experiment NAME --out there first")
    presets = sorted({record["preset"] for _, record, _ in found})
    title = f"SHARP experiments, preset{'s' * (len(presets) > 1)} {', '.join(presets)}"
    paths = {"md": out / "index.md", "html": out / "index.html"}
    lines = [
        f"# {title}", "",
        f"- rebuilt: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} from the files of "
        f"{plural(len(found), 'experiment')} in this folder",
        f"- figures: [{paths['html'].name}]({paths['html'].name})", "",
    ]
    for experiment, record, frame in found:
        name = experiment.name
        seconds = record.get("seconds")
        lines += [
            f"## {experiment.number}. {experiment.title}", "",
            f"- paper's claim: {experiment.claim}",
            f"- preset **{record['preset']}**, run {record.get('date', '?')}"
            + (f" in {seconds:.1f} s" if seconds else "")
            + (f" by `{record['command']}`" if record.get("command") else ""),
            f"- [summary]({name}.md), [figure]({name}.html), [data]({name}.csv), "
            f"[record]({name}.json)", "",
            *experiment.summarise(frame), "",
        ]
    figures = [experiment.figure(frame) for experiment, _, frame in found]
    atomic_write_text(paths["md"], "\n".join(lines))
    atomic_write_text(paths["html"], figures_html(figures, title))
    return paths


def run_experiment(name: str, preset: str = "quick", out: str | os.PathLike | None = None,
                   *, command: str = "", overwrite: bool = False, resume: bool = True,
                   policy: CheckpointPolicy | None = None, **overrides: Any) -> ExperimentRun:
    """Run experiment ``name`` with a preset (``tiny``, ``quick``, ``paper``) and
    overrides; with ``out``, also write its CSV, HTML, markdown and record there
    (:func:`write_experiment`). ``out``'s run lock is held throughout
    (:func:`~sharp.runs.lock.run_folder_lock`: FolderBusy while another process runs on the
    folder), and ``out`` is checked before the run (:func:`check_experiment_folder`:
    FileExistsError / PermissionError, e.g. when it holds the results of another run and
    ``overwrite`` is not set); ValueError for an unknown experiment or preset. Every
    invocation of the run (command, start, wall time, workers, the jobs found stored) is
    recorded in ``jobs_folder/run.json`` as it starts, as each job is stored and as it
    ends, and written to its record.

    With ``out``, each job (repetition × condition) stores its frame under
    :func:`jobs_folder` as soon as it finishes; when ``resume``, the jobs of this same
    run stored there (by an earlier run that was killed) are reused, not run again, and
    the results equal an uninterrupted run's. The jobs of the community-task (2-4) and
    text (8, 9) experiments also checkpoint inside their loop, by ``policy`` (default
    :class:`~sharp.runs.jobs.CheckpointPolicy`), under ``jobs_folder/<job id>/``, and a
    killed one resumes from its last checkpoint; the other experiments' jobs killed
    mid-way run again from their start. For an experiment whose repetitions may run as
    ensembles (``ensemble`` override: ``auto``, ``on``, ``off``), its record says how they
    ran (:func:`ensemble_record`; ValueError before any job for ``on`` with one
    repetition)."""
    experiment = get_experiment(name)
    parameters = experiment.parameters(preset, **overrides)
    if out is None:
        ensemble = ensemble_record(experiment, parameters)
        start = time.perf_counter()
        frame = experiment.run(**parameters)
        return ExperimentRun(experiment, frame, parameters, time.perf_counter() - start,
                             ensemble)
    jobs = planned_jobs(experiment.run, parameters)
    ensemble = ensemble_record(experiment, parameters, jobs)
    with run_folder_lock(out, "sharp experiment"):
        check_experiment_folder(out, name, preset, parameters, overwrite)
        identity = experiment_identity(name, preset, parameters)
        previous = start_jobs(out, name, preset, parameters, resume)
        store = JobStore(jobs_folder(out, name))
        stored = sum(store.path(job).exists() for job in jobs)
        invocation = Invocation(command, workers=parameters.get("workers")
                                or default_workers(len(jobs) - stored),
                                **({"ensemble": parameters["ensemble"]}
                                   if "ensemble" in parameters else {}),
                                jobs=len(jobs), jobs_stored_before=stored)
        mark_jobs(out, identity, [*previous, invocation.record()])
        try:
            with stored_jobs(store.folder, policy, lambda: mark_jobs(
                    out, identity, [*previous, invocation.record()])):
                frame = experiment.run(**parameters)
        except BaseException:  # Ctrl-C, SIGTERM, an error: this invocation's end, recorded
            mark_jobs(out, identity, [*previous, invocation.record(ended=True)])
            raise
        invocations = [*previous, invocation.record(ended=True)]
        mark_jobs(out, identity, invocations)
        write_experiment(out, experiment, frame, parameters, preset=preset,
                         invocations=invocations, command=command, ensemble=ensemble)
    return ExperimentRun(experiment, frame, parameters, invocations[-1]["wall_seconds"],
                         ensemble, invocations)
