"""Command line: ``sharp bench`` runs the segment benchmark and writes a report."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import json
import os
import shlex
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from sharp.config import preset, preset_names
from sharp.engines.runtime import check_device
from sharp.perf.anatomy import wake_anatomy
from sharp.perf.throughput import machine_line, throughput_table
from sharp.runs.bench import (
    ENSEMBLE_MODES,
    RUN_PRESETS,
    BenchOptions,
    BenchPlan,
    bench_preset_names,
    estimate_seconds,
    plan_bench,
    run_bench,
)
from sharp.runs.benchmark import diverged_runs, summary_table
from sharp.runs.checkpoints import atomic_write_text
from sharp.runs.invocations import HANDED_OVER, hand_over, wall_time_words
from sharp.runs.lock import run_folder_lock
from sharp.runs.options import (
    HelpFormatter,
    add_checkpoint_options,
    checkpoint_options,
    positive_int,
    seed_int,
)
from sharp.runs.outputs import check_output_folder, check_replace, duration
from sharp.runs.progress import one_line_warnings
from sharp.runs.reference import max_abs_difference, reference_curve
from sharp.runs.registry import BASELINE_KINDS
from sharp.runs.report import (
    bits_per_char_column,
    check_report_folder,
    markdown_table,
    speed_table,
)


def _bench_parser(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="segment benchmark (forward/backward/current) + report",
                           formatter_class=HelpFormatter)
    bench.add_argument("--corpus", default="wiki",
                       help="wiki | books | text8 | pg19 | path to a local text file | path to a "
                       "folder in PG-19 layout (train/ plus validation/ or test/)")
    bench.add_argument("--tokenizer", default=None,
                       help="read a book corpus as sub-word tokens: bpe (a byte-level BPE "
                       "trained offline on the bundled books' training split, cached), the "
                       "path of a tokenizer.json or of a folder saved by transformers' "
                       "save_pretrained, or a Hugging Face hub id such as gpt2 (needs the "
                       "network once); the report adds bits per character (default: "
                       "characters)")
    bench.add_argument("--preset", default="quick", choices=bench_preset_names(),
                       help="SHARP config preset, or a run preset that also sets the scale "
                       "(paper: text8 table, 9 x 10M tokens, 1M slices, sleep every 20k, "
                       "H=512, baselines at paper size; with a printed duration estimate)")
    bench.add_argument("--baselines", nargs="*", default=list(BASELINE_KINDS),
                       choices=BASELINE_KINDS, help="baselines to run next to SHARP "
                       "(give the option with no names for SHARP alone)")
    bench.add_argument("--baseline-preset", default=None, choices=["quick", "paper"],
                       help="baseline sizes (default: quick)")
    bench.add_argument("--protocol", choices=["auto", "segment", "books"], default="auto",
                       help="segment benchmark, or the book protocol (auto: books for book "
                       "corpora)")
    bench.add_argument("--segment", type=int, default=None,
                       help="tokens per segment (S); the training budget in the book protocol "
                       "(default 20000, or the run preset's)")
    bench.add_argument("--slice", type=int, default=None,
                       help="tokens per evaluation slice (E); per evaluated book in the book "
                       "protocol (default 2000, or the run preset's)")
    bench.add_argument("--learners", type=int, default=None,
                       help="segments / learners (M) (default 4, or the run preset's)")
    bench.add_argument("--seed", type=seed_int, default=0,
                       help="learner m of each model uses seed + m")
    bench.add_argument("--threads", type=positive_int, default=1, help="torch threads per learner")
    bench.add_argument("--workers", type=int, default=None,
                       help="learners in parallel, as Ray tasks on this machine (default: "
                       "min(runs, cores)); 1 runs them one after another in this process")
    bench.add_argument("--address", default=None,
                       help="join a running Ray cluster instead (auto, or HEAD:PORT: the "
                       "head's GCS port; not ray://); --out must then be a folder every node "
                       "reaches")
    bench.add_argument("--sleep-every", type=int, default=None,
                       help="SHARP's wake steps between sleeps (default: the preset's)")
    bench.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a SHARP config field, e.g. --set hidden=64 --set "
                       "tau=0.001 (values are JSON; repeatable); window and device apply to "
                       "every learner; seed, threads, vocab_size and name are set by the run")
    bench.add_argument("--clip", action="store_true",
                       help="report bits clipped per token at log2(V) (the authors' rule)")
    bench.add_argument("--out", default=None, help="output folder (default reports/<run-name>)")
    bench.add_argument("--name", default=None,
                       help="run name (default bench-<corpus name or file stem>-<preset>)")
    bench.add_argument("--overwrite", action="store_true",
                       help="replace the report of another run in the output folder")
    bench.add_argument("--quiet", action="store_true", help="no progress bars")
    bench.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                       help="resume the unfinished jobs of this run in --out from their "
                       "checkpoints and skip finished ones; --no-resume starts them afresh")
    bench.add_argument("--ensemble", choices=ENSEMBLE_MODES, default="auto",
                       help="run each model's learners as one ensemble job (SPEC §10; the "
                       "segment protocol only): auto groups them when they run on CUDA or "
                       "MPS, never on the CPU, where separate learners were measured faster")
    add_checkpoint_options(bench, "each job")
    bench.add_argument("--estimate", action="store_true",
                       help="print the run's duration estimate (a measured warm-up of each "
                       "model) and exit; a run preset prints it before every run")
    bench.add_argument("--notebook", action=argparse.BooleanOptionalAction, default=True,
                       help="run the benchmark by executing notebooks/05_evaluation.ipynb with "
                       "papermill and keep the executed notebook and its HTML next to the "
                       "report; --no-notebook runs the same benchmark in plain Python")


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["hidden=64", "top_k=null"]`` -> ``{"hidden": 64, "top_k": None}`` (JSON values,
    bare words kept as strings). Raises ``ValueError`` for an item without ``=`` or a key
    given twice."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        if key in overrides:
            raise ValueError(f"--set {key} is given twice; give it once")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


def bench_options(args: argparse.Namespace) -> BenchOptions:
    """The parsed ``sharp bench`` arguments as :class:`~sharp.runs.bench.BenchOptions`;
    options not given take the run preset's value (:data:`~sharp.runs.bench.RUN_PRESETS`),
    else BenchOptions' default."""
    scale = RUN_PRESETS.get(args.preset, {})
    given = {"segment": args.segment, "slice_len": args.slice, "learners": args.learners,
             "sleep_every": args.sleep_every, "baseline_preset": args.baseline_preset,
             "tokenizer": args.tokenizer}
    defaults = BenchOptions()
    chosen = {key: value if value is not None else scale.get(key, getattr(defaults, key))
              for key, value in given.items()}
    return BenchOptions(
        corpus=args.corpus, preset_name=args.preset, protocol=args.protocol, **chosen,
        seed=args.seed, threads=args.threads, workers=args.workers,
        overrides=parse_overrides(args.set), baselines=list(args.baselines),
        clip=args.clip, out_dir=args.out, run_name=args.name, overwrite=args.overwrite,
        command=args.command_line, progress=not args.quiet, address=args.address,
        **checkpoint_options(args), resume=args.resume, ensemble=args.ensemble,
    )


def print_estimate(plan: BenchPlan, steps: int = 200) -> None:
    """Print the duration estimate of a planned run and the speeds it comes from (a warm-up
    of ``steps`` steps of each model, :func:`~sharp.runs.bench.estimate_seconds`)."""
    seconds, speeds = estimate_seconds(plan, steps)
    if not speeds:
        print(f"estimated duration: 0 s: every job of this run is finished in {plan.out}/")
        return
    for name, speed in speeds.items():
        sleep = f", {speed.sleep_seconds:.2f} s per sleep" if speed.sleep_seconds else ""
        each = f" (each, for all {speed.members} members in lockstep)" if speed.members > 1 else ""
        print(f"  {name}: {1 / speed.step_seconds:,.0f} training steps/s, "
              f"{1 / speed.eval_seconds:,.0f} evaluated tokens/s{sleep}{each}")
    grouped = " (as the ensemble its learners run as)" if plan.ensemble else ""
    print(f"estimated duration: {duration(seconds)} on {plan.workers} "
          f"worker(s), from a {steps}-step warm-up of each model{grouped} on this machine")


def bench(args: argparse.Namespace) -> int:
    """Check the whole run, then run the benchmark (SHARP and baselines) and write the
    report, through notebook 05 or in plain Python, holding the output folder's run lock
    (:func:`~sharp.runs.lock.run_folder_lock`: FolderBusy, before any work, while another
    process runs on it). ``--estimate`` prints the estimate and exits, writing nothing and
    refusing nothing on the folder's contents (it says when a run would be refused)."""
    if args.out is not None:  # before the corpus is read
        check_output_folder(args.out)
    options = bench_options(args)
    plan = plan_bench(options, check_folder=False)
    if args.estimate:
        print(plan.headline)
        try:
            check_report_folder(plan.out, plan.meta, options.overwrite)
        except OSError as refusal:
            print(f"note: the run itself (without --estimate) would be refused: {refusal}")
        print_estimate(plan)
        return 0
    with run_folder_lock(plan.out, "sharp bench"):
        check_report_folder(plan.out, plan.meta, options.overwrite)
        return _bench(args, plan)


def _bench(args: argparse.Namespace, plan: BenchPlan) -> int:
    """Run the planned benchmark (:func:`bench`) and print its tables; 1 when a run
    diverged."""
    print(plan.headline)
    if args.preset in RUN_PRESETS:
        print_estimate(plan)
    if args.notebook:
        from sharp.explore.notebooks import execute_notebook

        parameters = {**dataclasses.asdict(plan.options), "out_dir": str(plan.out.resolve()),
                      "run_sweep": False, "run_tokens": False, "interactive": False}
        os.environ.update(hand_over(plan.started))  # the kernel's run is this invocation
        try:
            execute_notebook("05_evaluation", plan.out, parameters, progress=not args.quiet,
                             cwd=os.getcwd())
        finally:
            os.environ.pop(HANDED_OVER, None)
        results = pd.read_csv(plan.out / "results.csv")
    else:
        results = run_bench(plan).results
    rule = f"clipped per token at log2 V = {plan.clip:.3f}" if plan.clip else "unclipped"
    print(f"bits per token ({rule}; mean ± sample std over runs):")
    print(markdown_table(summary_table(results, "bits_clipped" if plan.clip else "bits")))
    if plan.tokenizer is not None:
        print(f"bits per character ({rule}; a slice's total bits over its characters):")
        print(markdown_table(summary_table(results, bits_per_char_column(plan.clip))))
    print("training:")
    print(markdown_table(speed_table(results)))
    invocations = json.loads((plan.out / "run.json").read_text())["invocations"]
    overall = (f" for this invocation; the run's {wall_time_words(invocations)}"
               if len(invocations) > 1 else "")
    print(f"wall time {time.perf_counter() - plan.started:.1f} s{overall}; report written to "
          f"{plan.out}/" + (" (with the executed notebook and its HTML)" if args.notebook else ""))
    failed = diverged_runs(results)
    for run in failed:
        print(f"sharp bench: {run}", file=sys.stderr)
    return 1 if failed else 0


def _reference_parser(sub: argparse._SubParsersAction) -> None:
    ref = sub.add_parser("reference", help="trace the authors' learning curve (REFERENCE.md)",
                         formatter_class=HelpFormatter)
    ref.add_argument("--preset", default="text8-small", choices=["text8-small", "text8"],
                     help="SHARP preset whose curve the authors published")
    ref.add_argument("--seed", type=seed_int, default=0,
                     help="learner seed (the authors' curve is seed 0)")
    ref.add_argument("--threads", type=positive_int, default=1, help="torch threads")
    ref.add_argument("--out", default=None,
                     help="also write the table to OUT/reference.csv and the run's record "
                     "to OUT/reference.json (a folder, as for every command; checked "
                     "before the run)")
    ref.add_argument("--overwrite", action="store_true",
                     help="replace another run's table (other preset or seed) in --out")
    ref.add_argument("--quiet", action="store_true", help="no progress bar")


#: The files ``sharp reference --out`` writes (its record last).
REFERENCE_FILES = ("reference.csv", "reference.json")


def reference(args: argparse.Namespace) -> int:
    """Print this kit's curve next to the authors' on the licence text; with ``--out``, also
    write it there (the folder is checked before the run, and its run lock held:
    :func:`~sharp.runs.lock.run_folder_lock`, FolderBusy while another process runs on
    it)."""
    identity = {"preset": args.preset, "seed": args.seed}
    with contextlib.ExitStack() as stack:
        out = None
        if args.out is not None:
            out = stack.enter_context(run_folder_lock(args.out, "sharp reference"))
            check_replace(out, REFERENCE_FILES, "reference.json", identity,
                          overwrite=args.overwrite, what="the reference table")
        return _reference(args, identity, out)


def _reference(args: argparse.Namespace, identity: dict[str, Any], out: Path | None) -> int:
    """Trace the curve and print (and, with ``--out``: the locked folder ``out``, write) it:
    :func:`reference`."""
    frame = reference_curve(args.preset, seed=args.seed, threads=args.threads,
                            progress=not args.quiet)
    print(markdown_table(frame.set_index("tokens")))
    print(f"largest |difference|: {max_abs_difference(frame):.3f} bits")
    if out is not None:
        _write_outputs(out, {"reference.csv": frame.to_csv(index=False)},
                       "reference.json", identity, args.command_line)
        print(f"written to {out / 'reference.csv'}")
    return 0


def _write_outputs(out: str | os.PathLike, texts: dict[str, str], record: str,
                   identity: dict[str, Any], command: str) -> None:
    """Write ``texts`` (file name -> text) under ``out`` atomically, then ``record``: the
    run's identity, command and date, which :func:`check_replace` compares."""
    for name, text in texts.items():
        atomic_write_text(os.path.join(out, name), text)
    meta = {"identity": identity, "command": command, "date": time.strftime("%Y-%m-%d %H:%M")}
    atomic_write_text(os.path.join(out, record), json.dumps(meta, indent=2))


def _throughput_parser(sub: argparse._SubParsersAction) -> None:
    tp = sub.add_parser("throughput", help="measure wake/eval tokens/s and sleep time",
                        formatter_class=HelpFormatter)
    tp.add_argument("--presets", nargs="*", default=["text8-small", "text8"],
                    choices=preset_names(), help="SHARP presets to measure (give the option "
                    "with no names to measure only --baselines)")
    tp.add_argument("--threads", nargs="+", type=positive_int, default=[1, 2],
                    help="torch thread counts to measure each configuration with")
    tp.add_argument("--engines", nargs="+", default=["fused"], choices=["fused", "torch"],
                    help="SHARP engines to measure (fused kernels, or the torch reference)")
    tp.add_argument("--baselines", nargs="*", default=[],
                    choices=BASELINE_KINDS,
                    help="also measure these baselines (at --baseline-preset)")
    tp.add_argument("--baseline-preset", default="paper", choices=["quick", "paper"],
                    help="size of the --baselines")
    tp.add_argument("--ensemble", nargs="*", type=positive_int, default=[], metavar="M",
                    help="also measure ensembles of these sizes (e.g. 1 9 64) of SHARP at each "
                    "preset and of each --baselines kind: ensemble steps/s and tokens/s")
    tp.add_argument("--device", default="auto",
                    help="device of every measured learner: auto (SHARP on one stream on the "
                    "CPU; ensembles and baselines on CUDA, then MPS, then the CPU), cpu, "
                    "cuda, cuda:N or mps; the fused engine runs on the CPU only")
    tp.add_argument("--steps", type=positive_int, default=1_000,
                    help="timed wake steps per repeat; also bounds the rest of a "
                    "measurement: warm-up min(steps, 200) steps for SHARP, "
                    "min(steps, 100) for baselines, "
                    "min(steps, 50) for ensembles; evaluation of min(50 x steps, 50,000) "
                    "tokens for SHARP, min(20 x steps, 20,000) for baselines; SHARP's one "
                    "timed sleep (a full tag buffer, topped up untimed when --steps is "
                    "below its size; the preset's replay steps) does not scale "
                    "(default: 1000)")
    tp.add_argument("--repeats", type=positive_int, default=3,
                    help="timed runs of --steps steps per configuration; the median is "
                    "reported")
    tp.add_argument("--anatomy", action="store_true",
                    help="instead: where one wake step's and one sleep window's time goes per "
                    "preset and thread count, with the launch and bandwidth floors")
    tp.add_argument("--out", default="reports/throughput",
                    help="folder for throughput.csv/.md/.json (anatomy.* with --anatomy); "
                    "checked before any measurement")
    tp.add_argument("--overwrite", action="store_true",
                    help="replace another measurement's files (other presets, engines, "
                    "threads, baselines, ensembles, steps or repeats) in --out")


def throughput(args: argparse.Namespace) -> int:
    """Print and write the throughput table (or, with ``--anatomy``, the breakdown). The
    options and the output folder are checked before any measurement: ValueError when
    there is nothing to measure, FileExistsError / PermissionError for --out, FolderBusy
    while another process runs on it (its run lock is held throughout:
    :func:`~sharp.runs.lock.run_folder_lock`)."""
    stem = "anatomy" if args.anatomy else "throughput"
    identity = {key: getattr(args, key) for key in (
        "presets", "threads", "steps", "repeats", "anatomy",
        *(() if args.anatomy else ("engines", "baselines", "baseline_preset", "ensemble",
                                   "device")))}
    if args.anatomy and not args.presets:
        raise ValueError("nothing to measure: --anatomy measures SHARP presets; give "
                         "--presets NAMES")
    if not args.anatomy and not args.presets and not args.baselines:
        raise ValueError("nothing to measure: give --presets NAMES or --baselines KINDS")
    if not args.anatomy:
        check_device(args.device)
        if args.presets and "fused" in args.engines and args.device not in ("auto", "cpu"):
            raise ValueError(f"the fused engine runs on the CPU only: measure SHARP on "
                             f"--device {args.device} with --engines torch")
        dense = [p for p in args.presets if preset(p).inputs == "dense"]
        if dense and "fused" in args.engines:
            raise ValueError(f"preset(s) {', '.join(dense)} read dense input vectors, which "
                             "the fused engine does not: measure them with --engines torch")
    with run_folder_lock(args.out, "sharp throughput") as out:
        check_replace(out, [f"{stem}.{s}" for s in ("csv", "md", "json")],
                      f"{stem}.json", identity, overwrite=args.overwrite,
                      what=f"the {stem} tables")
        return (_anatomy(args, identity, out) if args.anatomy
                else _throughput(args, identity, out))


def _throughput(args: argparse.Namespace, identity: dict[str, Any], out: Path) -> int:
    """Measure and print (and write under the locked folder ``out``) the throughput table:
    :func:`throughput`."""
    device = args.device
    configs: list[dict[str, Any]] = [
        {"preset_name": p, "threads": t, "engine": e, "device": device}
        for p in args.presets for e in args.engines for t in args.threads
    ]
    configs += [{"kind": k, "preset_name": args.baseline_preset, "threads": t, "device": device}
                for k in args.baselines for t in args.threads]
    configs += [{"members": m, "kind": "sharp", "preset_name": p, "threads": t, "device": device}
                for m in args.ensemble for p in args.presets for t in args.threads]
    configs += [{"members": m, "kind": k, "preset_name": args.baseline_preset, "threads": t,
                 "device": device}
                for m in args.ensemble for k in args.baselines for t in args.threads]
    table = throughput_table(configs, steps=args.steps, repeats=args.repeats)
    text = f"Machine: {machine_line()}\n\n{markdown_table(table.set_index('learner'))}\n"
    print(text)
    _write_outputs(out, {"throughput.csv": table.to_csv(index=False),
                              "throughput.md": f"Command: `{args.command_line}`\n\n{text}"},
                   "throughput.json", identity, args.command_line)
    return 0


def _anatomy(args: argparse.Namespace, identity: dict[str, Any], out: Path) -> int:
    frames = [wake_anatomy(p, threads=t, steps=args.steps)
              for p in args.presets for t in args.threads]
    table = pd.concat(frames, ignore_index=True)
    wide = table.pivot_table(index=["quantity", "unit"], columns=["preset", "threads"],
                             values="value", sort=False)
    wide.columns = [f"{p}, {t} thread{'s' * (t > 1)}" for p, t in wide.columns]
    text = (f"Machine: {machine_line()}\n\n"
            f"{markdown_table(wide.reset_index().set_index('quantity'))}\n")
    print(text)
    _write_outputs(out, {"anatomy.csv": table.to_csv(index=False),
                              "anatomy.md": f"Command: `{args.command_line}`\n\n{text}"},
                   "anatomy.json", identity, args.command_line)
    return 0


def _experiment_parser(sub: argparse._SubParsersAction) -> None:
    """The ``experiment`` sub-command; where plotly (its figures) is not installed, e.g. on a
    GPU machine set up for training only, a stand-in that says so, so that the other
    commands still run there."""
    if importlib.util.find_spec("plotly") is None:
        stand_in = sub.add_parser("experiment", help="SPEC §8 experiments (need plotly)")
        stand_in.add_argument("rest", nargs=argparse.REMAINDER)
        return
    from sharp.experiments.cli import add_experiment_parser

    add_experiment_parser(sub)


def experiment(args: argparse.Namespace) -> int:
    """Run ``sharp experiment`` (:func:`sharp.experiments.cli.run_experiment_command`);
    RuntimeError where plotly is not installed."""
    if importlib.util.find_spec("plotly") is None:
        raise RuntimeError("the experiments write figures with plotly, which is not installed "
                           "here: pip install plotly")
    from sharp.experiments.cli import run_experiment_command

    return run_experiment_command(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sharp`` command."""
    parser = argparse.ArgumentParser(prog="sharp", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _bench_parser(sub)
    _reference_parser(sub)
    _throughput_parser(sub)
    _experiment_parser(sub)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.command_line = shlex.join(["sharp", *argv])
    commands = {"bench": bench, "reference": reference, "throughput": throughput,
                "experiment": experiment}
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with one_line_warnings(args.command):
            return commands[args.command](args)
    except (ValueError, TypeError, OSError, RuntimeError) as error:
        print(f"sharp {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:
        # Ray's waits re-raise a KeyboardInterrupt of their own: ask the handler too
        name = next((a for a in (*stop.args, *_RECEIVED[-1:])
                     if a in signal.Signals.__members__), "SIGINT")
        print(f"sharp {args.command}: stopped by {name}; every worker was stopped, and files "
              "are written only complete", file=sys.stderr)
        return 128 + signal.Signals[name].value
    finally:
        signal.signal(signal.SIGTERM, previous)


#: Signals :func:`_interrupt` turned into a KeyboardInterrupt, by name.
_RECEIVED: list[str] = []


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM handler: stop like Ctrl-C does, so that ``finally`` blocks and the
    executor's cleanup run (the default action would end this process alone)."""
    _RECEIVED.append(signal.Signals(signum).name)
    raise KeyboardInterrupt(signal.Signals(signum).name)


if __name__ == "__main__":
    sys.exit(main())
