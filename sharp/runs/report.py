"""Writing a benchmark run to ``reports/<run-name>/``: CSV tables, markdown, figures."""

from __future__ import annotations

import importlib.util
import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from sharp.runs.benchmark import BenchmarkResult, diverged_runs, summary_table
from sharp.runs.checkpoints import atomic_write_text
from sharp.runs.invocations import wall_time_words
from sharp.runs.outputs import check_output_folder, check_replace, plural


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table of ``frame`` (index included). The numbers of a
    column share one format: 3 decimals, or none in a column holding a number >= 1000."""
    frame = frame.reset_index()
    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    large = [any(isinstance(v, float) and abs(v) >= 1000 for v in frame[c]) for c in frame]
    rows = ["| " + " | ".join(_cell(v, big) for v, big in zip(row, large, strict=True)) + " |"
            for row in frame.itertuples(False)]
    return "\n".join([header, rule, *rows])


def _cell(value: Any, large: bool) -> str:
    if value is pd.NA:
        return "—"
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, float):
        if np.isnan(value):
            return "—"
        return f"{value:,.0f}" if large else f"{value:,.3f}"
    return str(value)


def machine_info() -> dict[str, Any]:
    """Cores, torch, Python and platform of this machine."""
    return {
        "cores": os.cpu_count(), "torch": torch.__version__,
        "python": platform.python_version(), "platform": platform.platform(),
    }


def speed_table(results: pd.DataFrame) -> pd.DataFrame:
    """Per learner: parameters, training tokens and seconds, tokens/s, memory update rate
    (SHARP only: "—" for learners without a memory gate) and sleeps (means over runs)."""
    per_run = results.drop_duplicates(["learner", "segment"]).copy()
    if "kind" in per_run:
        per_run.loc[per_run["kind"] != "sharp", "memory_update_rate"] = np.nan
    table = per_run.groupby("learner", sort=False).agg(
        parameters=("parameters", "first"), train_tokens=("train_tokens", "mean"),
        train_seconds=("train_seconds", "mean"), tokens_per_s=("tokens_per_s", "mean"),
        memory_update_rate=("memory_update_rate", "mean"), sleeps=("sleeps", "mean"),
    )
    for count in ("train_tokens", "sleeps"):  # whole numbers when every run agrees
        if (table[count] % 1 == 0).all():
            table[count] = table[count].astype(int)
    return table


def protocol_line(meta: dict[str, Any]) -> str:
    """One sentence saying what was trained and evaluated."""
    if meta.get("protocol") == "books":
        books, held = meta["books"], meta.get("held_out")  # None in reports before it
        source = f" of the {held} split" if held else ""
        return (f"book protocol, {plural(meta['learners'], 'learner')}: "
                f"{plural(books['train'], 'training book')} in order up to "
                f"{meta['segment']:,} tokens, state reset at each book; backward = first "
                f"{plural(books['backward'], 'training book')}, current = last "
                f"{plural(books['current'], 'training book')}, forward = "
                f"{plural(books['forward'], 'held-out book')}{source}, each evaluated from a "
                f"reset state (at most {meta['slice']:,} tokens per book)")
    return (f"{plural(meta['learners'], 'learner')} × segments of {meta['segment']:,} tokens; "
            f"slices of "
            f"{meta['slice']:,} tokens: backward = first, current = last of each segment, "
            "forward = the corpus's last (never trained on); prediction before learning")


#: Report files a run folder may hold (``run.json`` is written last).
REPORT_FILES = ("results.csv", "curves.csv", "figures.html", "summary.md", "run.json",
                "05_evaluation.ipynb", "05_evaluation.html")
#: Metadata that says what ran; the rest (the invocations: command, start, wall time,
#: workers, threads; the seeds actually used) says how it ran.
IDENTITY_KEYS = ("corpus", "corpus_sha256", "corpus_tokens", "tokenizer", "input_table_sha256",
                 "protocol", "segment", "slice", "learners", "seed", "clip", "configs")


def run_identity(meta: dict[str, Any]) -> dict[str, Any]:
    """The part of a report's metadata that defines the run (:data:`IDENTITY_KEYS`, the
    configs without their speed-only ``threads``), in JSON form."""
    identity = {key: meta.get(key) for key in IDENTITY_KEYS}
    identity["configs"] = {name: {k: v for k, v in config.items() if k != "threads"}
                           for name, config in (meta.get("configs") or {}).items()}
    return json.loads(json.dumps(identity))


def check_report_folder(out: str | os.PathLike, meta: dict[str, Any],
                        overwrite: bool = False) -> None:
    """Refuse to let a run replace the report of another run.

    Passes if ``out`` holds no report file, holds the report of the same run (same
    :func:`run_identity`), or ``overwrite`` is set. Otherwise raises ``FileExistsError``
    naming the folder and what differs; ``FileExistsError`` or ``PermissionError`` too
    when ``out`` cannot become a folder of files (a file is in the way, or it is
    read-only)."""
    check_output_folder(out)
    check_replace(out, REPORT_FILES, "run.json", run_identity(meta), overwrite=overwrite,
                  identity_of=run_identity, what="the report",
                  advice="choose another folder with --name or --out (notebook: run_name / "
                  "out_dir), or replace it with --overwrite")


def run_seeds(results: pd.DataFrame) -> dict[str, list[int]]:
    """The seed every learner of each model actually ran with, in segment order."""
    runs = results.drop_duplicates(["learner", "segment"])
    return {str(name): [int(seed) for seed in group["seed"]]
            for name, group in runs.groupby("learner", sort=False)}


def _ensemble_line(meta: dict[str, Any]) -> str:
    """How the learners ran: as one ensemble per model or separately, and the option."""
    how = ("as one ensemble job per model (SPEC §10)" if meta.get("ensemble") == "on"
           else "as separate jobs")
    return f"{how} (--ensemble {meta.get('ensemble_option', 'off')})"


def write_benchmark_report(out: str | os.PathLike, result: BenchmarkResult,
                           meta: dict[str, Any]) -> Path:
    """Write results.csv, curves.csv, figures.html (where plotly is installed; summary.md
    says when it is not), summary.md and run.json (the metadata with the seeds that ran,
    read by :func:`check_report_folder`) under ``out``; ``meta["invocations"]`` (at least
    one, the last this one: :class:`~sharp.runs.invocations.Invocation`) says how it ran.
    Every file is built before the first is written, and each is written atomically."""
    out = Path(out)
    meta = {**meta, "seeds": run_seeds(result.results)}
    bits_column = "bits_clipped" if meta.get("clip") else "bits"
    rule = (f"clipped per token at log2(V) = {meta['clip']:.3f} bits (the authors' rule)"
            if meta.get("clip") else "unclipped")
    title = (f"{'Book protocol' if meta.get('protocol') == 'books' else 'Segment benchmark'}"
             f" — {meta['run']}")
    runs = "learners" if meta.get("protocol") == "books" else "segments"
    figures = _figures(result, bits_column, rule, title)
    figures_line = ("- `figures.html`: slice bars and learning curves (self-contained, opens "
                    "offline)" if figures is not None else
                    "- no `figures.html`: plotly is not installed where this ran (install it "
                    "and run again for the figures; the tables above are complete)")
    seeds = "; ".join(f"{name}: {', '.join(map(str, values))}"
                      for name, values in meta["seeds"].items())
    config = json.dumps(meta.get("configs", {}), indent=2)
    lines = [
        f"# {title}", "",
        f"- command: `{meta['invocations'][-1]['command']}`",
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {json.dumps(machine_info())}",
        f"- corpus: **{meta['corpus']}** ({meta.get('corpus_source', '')}), "
        f"{meta['corpus_tokens']:,} tokens, "
        f"{_tokenizer_words(meta)}"
        f"sha256 `{meta['corpus_sha256']}`",
        f"- protocol: {protocol_line(meta)}",
        f"- seeds (learner m of each model runs with seed {meta.get('seed', 0)} + m): {seeds}",
        f"- bits rule: {rule}",
        *invocation_lines(meta["invocations"]),
        f"- learners ran {_ensemble_line(meta)}", "",
        *_diverged_section(result.results),
        f"## Bits per token (mean ± sample std over {plural(meta['learners'], runs[:-1])})",
        "",
        markdown_table(summary_table(result.results, bits_column)), "",
        *_bits_per_char_section(result.results, meta, runs),
        "## Top-1 accuracy", "",
        markdown_table(summary_table(result.results, "accuracy")), "",
        "## Training speed", "",
        markdown_table(speed_table(result.results)), "",
        "## Files", "",
        "- `results.csv`: one row per learner × segment × slice",
        "- `curves.csv`: training records averaged over blocks of steps",
        figures_line,
        "- `run.json`: this run's metadata and configuration (machine-readable)", "",
        "## Configuration (seeds: see above)", "", "```json", config, "```", "",
    ]
    files = {
        "results.csv": result.results.to_csv(index=False),
        "curves.csv": result.curves.to_csv(index=False),
        **({} if figures is None else {"figures.html": figures}),
        "summary.md": "\n".join(lines),
        "run.json": json.dumps(meta, indent=2),
    }
    for name, text in files.items():
        atomic_write_text(out / name, text)
    return out


def invocation_lines(invocations: list[dict[str, Any]]) -> list[str]:
    """The summary's lines on how the run ran: its wall time over every invocation
    (:func:`~sharp.runs.invocations.wall_time_words`) and, per invocation, where its jobs
    ran (worker processes of this machine, or the Ray cluster at its address, with the
    CPUs Ray reported when the run joined it), its threads and the jobs it found already
    finished (the others it ran, or resumed from their checkpoints, with its settings)."""
    def how(item: dict[str, Any]) -> str:
        threads = f"{item['threads']} torch thread(s)"
        if item.get("address") is None:
            return f"with {item['workers']} worker process(es) of {threads}"
        cpus = item.get("cluster_cpus")
        size = "" if cpus is None else f" ({cpus:g} CPU{'' if cpus == 1 else 's'})"
        return f"on the Ray cluster at {item['address']}{size}, as tasks of {threads}"

    if len(invocations) == 1:
        return [f"- {wall_time_words(invocations)} {how(invocations[0])}"]
    lines = [f"- {wall_time_words(invocations)}; each job ran with the settings of the "
             "invocation that finished it:"]
    for number, item in enumerate(invocations, 1):
        lines.append(f"  {number}. started {item['started']}, "
                     f"{float(item['wall_seconds']):.1f} s {how(item)}; "
                     f"{item['jobs_finished_before']} of {item['jobs']} jobs already finished"
                     f", {item['jobs_resumed']} resumed from checkpoints: `{item['command']}`")
    return lines


def _tokenizer_words(meta: dict[str, Any]) -> str:
    """Words on the corpus line for a token corpus (its tokenizer, V and characters); ""
    for a character corpus."""
    tokenizer = meta.get("tokenizer")
    if not tokenizer:
        return ""
    return (f"of tokenizer `{tokenizer['source']}` (V = {tokenizer['vocab_size']:,}, sha256 "
            f"`{tokenizer['sha256'][:12]}…`) for {tokenizer['corpus_chars']:,} characters, ")


def bits_per_char_column(clip: float | None) -> str:
    """The results column of bits per character under the run's bits rule."""
    return "bits_per_char_clipped" if clip else "bits_per_char"


def _bits_per_char_section(results: pd.DataFrame, meta: dict[str, Any], runs: str
                           ) -> list[str]:
    """The bits-per-character table of a token run (a slice's total bits over its
    characters; the same rule as bits per token); none for a character run, whose bits
    per character are its bits per token."""
    if not meta.get("tokenizer"):
        return []
    return [f"## Bits per character (a slice's total bits over its characters; mean ± sample "
            f"std over {plural(meta['learners'], runs[:-1])})", "",
            markdown_table(summary_table(results, bits_per_char_column(meta.get("clip")))), ""]


def _figures(result: BenchmarkResult, bits_column: str, rule: str, title: str) -> str | None:
    """figures.html's text (slice bars and learning curves), or None where plotly is not
    installed (e.g. a GPU machine set up for training only): the report is then written
    without figures."""
    if importlib.util.find_spec("plotly") is None:
        return None
    from sharp.explore.plots import figures_html, learning_curves, slice_bars

    return figures_html([
        slice_bars(result.results, bits_column,
                   title=f"Bits per token on the three slices ({rule})"),
        learning_curves(result.curves),
    ], title)


def _diverged_section(results: pd.DataFrame) -> list[str]:
    """A warning section listing the runs that diverged (none: no lines); their rows are
    left out of every mean in the tables."""
    runs = diverged_runs(results)
    if not runs:
        return []
    return ["## ⚠ Diverged runs (left out of every mean below)", "",
            *(f"- {run}" for run in runs), ""]
