"""Running a registered experiment and writing its CSV, HTML figure and markdown summary;
the combined index of several experiments."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from sharp.config import SharpConfig
from sharp.experiments.common import REGISTRY, Experiment
from sharp.explore.plots import figures_html
from sharp.runs.checkpoints import atomic_write_text
from sharp.runs.report import machine_info


def get_experiment(name: str) -> Experiment:
    """The registered experiment ``name`` (ValueError listing the names otherwise)."""
    if name not in REGISTRY:
        raise ValueError(f"unknown experiment {name!r}; choose one of {sorted(REGISTRY)}")
    return REGISTRY[name]


@dataclass(frozen=True)
class ExperimentRun:
    """One finished run of a registered experiment."""

    experiment: Experiment
    frame: pd.DataFrame
    parameters: dict[str, Any]
    seconds: float


def _plain(value: Any) -> Any:
    """JSON form of a parameter value: a configuration's fields, else its text."""
    return value.to_dict() if isinstance(value, SharpConfig) else str(value)


def write_experiment(out: str | os.PathLike, experiment: Experiment, frame: pd.DataFrame,
                     parameters: dict[str, Any], *, preset: str = "custom",
                     seconds: float | None = None, command: str = "") -> dict[str, Path]:
    """Write ``<name>.csv`` (the tidy frame), ``<name>.html`` (the figure, plotly.js
    inline) and ``<name>.md`` (parameters, seeds, summary) under ``out`` atomically."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    name = experiment.name
    paths = {"csv": out / f"{name}.csv", "html": out / f"{name}.html", "md": out / f"{name}.md"}
    atomic_write_text(paths["csv"], frame.to_csv(index=False))
    title = f"Experiment {experiment.number}: {experiment.title}"
    atomic_write_text(paths["html"], figures_html([experiment.figure(frame)], title))
    seeds = (frame.drop_duplicates("rep")[["rep", "seed"]].sort_values("rep")
             if {"rep", "seed"} <= set(frame.columns) else pd.DataFrame())
    lines = [
        f"# {title}", "",
        f"- preset: **{preset}**" + (f"; wall time {seconds:.1f} s" if seconds else ""),
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {json.dumps(machine_info())}",
        *([f"- command: `{command}`"] if command else []),
        f"- paper's claim: {experiment.claim}", "",
        "## Parameters", "", "```json",
        json.dumps(parameters, indent=2, default=_plain), "```", "",
        "## Seeds (one per repetition, shared by every condition)", "",
        ", ".join(f"rep {int(r.rep)}: {int(r.seed)}" for r in seeds.itertuples()) or "-", "",
        "## Result", "", *experiment.summarise(frame), "",
        "## Files", "",
        f"- `{paths['csv'].name}`: tidy results ({len(frame)} rows; columns "
        f"{', '.join(frame.columns)})",
        f"- `{paths['html'].name}`: the figure (median and interquartile band across "
        "repetitions; self-contained)", "",
    ]
    atomic_write_text(paths["md"], "\n".join(lines))
    return paths


def write_index(out: str | os.PathLike, runs: list[ExperimentRun], *, preset: str,
                command: str = "") -> dict[str, Path]:
    """The combined report of ``runs``: ``index.md`` (each experiment's claim, result, wall
    time and files) and ``index.html`` (all their figures on one self-contained page)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / "index.md", "html": out / "index.html"}
    lines = [
        f"# SHARP experiments, preset {preset}", "",
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {json.dumps(machine_info())}",
        *([f"- command: `{command}`"] if command else []),
        f"- figures: [{paths['html'].name}]({paths['html'].name})", "",
    ]
    for run in runs:
        name = run.experiment.name
        lines += [
            f"## {run.experiment.number}. {run.experiment.title}", "",
            f"- paper's claim: {run.experiment.claim}",
            f"- wall time {run.seconds:.1f} s; [summary]({name}.md), [figure]({name}.html), "
            f"[data]({name}.csv)", "",
            *run.experiment.summarise(run.frame), "",
        ]
    atomic_write_text(paths["md"], "\n".join(lines))
    figures = [run.experiment.figure(run.frame) for run in runs]
    atomic_write_text(paths["html"], figures_html(figures, f"SHARP experiments, preset {preset}"))
    return paths


def run_experiment(name: str, preset: str = "quick", out: str | os.PathLike | None = None,
                   *, command: str = "", **overrides: Any) -> ExperimentRun:
    """Run experiment ``name`` with a preset (``tiny``, ``quick``, ``paper``) and
    overrides; with ``out``, also write its CSV, HTML and markdown there."""
    experiment = get_experiment(name)
    parameters = experiment.parameters(preset, **overrides)
    start = time.perf_counter()
    frame = experiment.run(**parameters)
    run = ExperimentRun(experiment, frame, parameters, time.perf_counter() - start)
    if out is not None:
        write_experiment(out, experiment, frame, parameters, preset=preset,
                         seconds=run.seconds, command=command)
    return run
