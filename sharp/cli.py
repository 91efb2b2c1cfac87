"""Command line: ``sharp bench`` runs the segment benchmark and writes a report."""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import time
from collections.abc import Sequence
from typing import Any

from sharp.benchmark import book_benchmark, segment_benchmark, summary_table
from sharp.config import preset_names
from sharp.data.corpus import load_corpus
from sharp.io import atomic_write_text
from sharp.learners import sharp_spec
from sharp.reference import max_abs_difference, reference_curve
from sharp.report import markdown_table, speed_table, write_benchmark_report
from sharp.throughput import machine_line, throughput_table


def _bench_parser(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="segment benchmark (forward/backward/current) + report",
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    bench.add_argument("--corpus", default="wiki",
                       help="wiki | books | text8 | pg19 | path to a local text file")
    bench.add_argument("--preset", default="quick", choices=preset_names())
    bench.add_argument("--protocol", choices=["auto", "segment", "books"], default="auto",
                       help="segment benchmark, or the book protocol (auto: books for book "
                       "corpora)")
    bench.add_argument("--segment", type=int, default=20_000,
                       help="tokens per segment (S); the training budget in the book protocol")
    bench.add_argument("--slice", type=int, default=2_000,
                       help="tokens per evaluation slice (E); per evaluated book in the book "
                       "protocol")
    bench.add_argument("--learners", type=int, default=4, help="segments / learners (M)")
    bench.add_argument("--seed", type=int, default=0, help="learner m uses seed + m")
    bench.add_argument("--threads", type=int, default=1, help="torch threads per learner")
    bench.add_argument("--workers", type=int, default=None,
                       help="learner processes in parallel (default: min(learners, cores))")
    bench.add_argument("--sleep-every", type=int, default=None,
                       help="override the preset's wake steps between sleeps")
    bench.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config field, e.g. --set hidden=64 --set tau=0.001 "
                       "(values are JSON; repeatable)")
    bench.add_argument("--clip", action="store_true",
                       help="report bits clipped per token at log2(V) (the authors' rule)")
    bench.add_argument("--out", default=None, help="output folder (default reports/<run-name>)")
    bench.add_argument("--name", default=None, help="run name (default bench-<corpus>-<preset>)")
    bench.add_argument("--quiet", action="store_true", help="no progress bars")


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["hidden=64", "top_k=null"]`` -> ``{"hidden": 64, "top_k": None}`` (JSON values,
    bare words kept as strings)."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


def bench(args: argparse.Namespace) -> int:
    """Run the segment benchmark for SHARP and write the report."""
    start = time.perf_counter()
    corpus = load_corpus(args.corpus)
    overrides = {"threads": args.threads, "vocab_size": corpus.vocab.size}
    if args.sleep_every:
        overrides["sleep_every"] = args.sleep_every
    overrides.update(parse_overrides(args.set))
    spec = sharp_spec(args.preset, **overrides)
    workers = args.workers or max(1, min(args.learners, os.cpu_count() or 1))
    clip = math.log2(corpus.vocab.size) if args.clip else None
    corpus_label = os.path.basename(str(args.corpus)).split(".")[0]
    name = args.name or f"bench-{corpus_label}-{args.preset}"
    out = args.out or os.path.join("reports", name)
    print(f"corpus {corpus.name}: {len(corpus):,} tokens; {args.learners} learners × "
          f"{args.segment:,} tokens on {workers} worker(s), {args.threads} thread(s) each")
    books = args.protocol == "books" or (args.protocol == "auto" and corpus.documents is not None)
    if books:
        result = book_benchmark(
            [spec], corpus, budget=args.segment, learners=args.learners,
            max_eval_tokens=args.slice, seed=args.seed, workers=workers, clip=clip,
            progress=not args.quiet,
        )
    else:
        result = segment_benchmark(
            [spec], corpus.tokens, segment=args.segment, slice_len=args.slice,
            learners=args.learners, seed=args.seed, workers=workers, clip=clip,
            progress=not args.quiet,
        )
    wall = time.perf_counter() - start
    meta = {
        "run": name, "command": shlex.join(["sharp", *sys.argv[1:]]), "corpus": corpus.name,
        "corpus_tokens": len(corpus), "corpus_sha256": corpus.sha256,
        "protocol": "books" if books else "segment",
        "segment": args.segment, "slice": args.slice, "learners": args.learners,
        "workers": workers, "threads": args.threads, "clip": clip, "wall_seconds": wall,
        "configs": {spec.name: spec.config},
    }
    path = write_benchmark_report(out, result, meta)
    column = "bits_clipped" if clip else "bits"
    print(markdown_table(summary_table(result.results, column)))
    print(markdown_table(speed_table(result.results)))
    print(f"wall time {wall:.1f} s; report written to {path}/")
    return 0


def _reference_parser(sub: argparse._SubParsersAction) -> None:
    ref = sub.add_parser("reference", help="trace the authors' learning curve (REFERENCE.md)",
                         formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ref.add_argument("--preset", default="text8-small", choices=["text8-small", "text8"])
    ref.add_argument("--seed", type=int, default=0)
    ref.add_argument("--threads", type=int, default=1)
    ref.add_argument("--out", default=None, help="also write the table as CSV here")


def reference(args: argparse.Namespace) -> int:
    """Print this kit's curve next to the authors' on the licence text."""
    frame = reference_curve(args.preset, seed=args.seed, threads=args.threads)
    print(markdown_table(frame.set_index("tokens")))
    print(f"largest |difference|: {max_abs_difference(frame):.3f} bits")
    if args.out:
        atomic_write_text(args.out, frame.to_csv(index=False))
    return 0


def _throughput_parser(sub: argparse._SubParsersAction) -> None:
    tp = sub.add_parser("throughput", help="measure wake/eval tokens/s and sleep time",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    tp.add_argument("--presets", nargs="+", default=["text8-small", "text8"],
                    choices=preset_names())
    tp.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    tp.add_argument("--steps", type=int, default=1_000, help="timed wake steps per repeat")
    tp.add_argument("--repeats", type=int, default=3)
    tp.add_argument("--out", default="reports/throughput", help="folder for CSV + markdown")


def throughput(args: argparse.Namespace) -> int:
    """Print and write the throughput table."""
    configs = [{"preset_name": p, "threads": t} for p in args.presets for t in args.threads]
    table = throughput_table(configs, steps=args.steps, repeats=args.repeats)
    text = f"Machine: {machine_line()}\n\n{markdown_table(table.set_index('learner'))}\n"
    print(text)
    atomic_write_text(os.path.join(args.out, "throughput.csv"), table.to_csv(index=False))
    atomic_write_text(os.path.join(args.out, "throughput.md"),
                      f"Command: `{shlex.join(['sharp', *sys.argv[1:]])}`\n\n{text}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sharp`` command."""
    parser = argparse.ArgumentParser(prog="sharp", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _bench_parser(sub)
    _reference_parser(sub)
    _throughput_parser(sub)
    args = parser.parse_args(argv)
    commands = {"bench": bench, "reference": reference, "throughput": throughput}
    try:
        return commands[args.command](args)
    except (ValueError, TypeError, FileNotFoundError, RuntimeError) as error:
        print(f"sharp {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
