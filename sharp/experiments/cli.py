"""``sharp experiment NAME|all --preset tiny|quick|paper --out DIR [--workers N]``; ``all``
also writes the combined ``index.md`` / ``index.html``."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from sharp.experiments.common import PRESET_NAMES, REGISTRY
from sharp.experiments.report import run_experiment, write_index


def add_experiment_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``experiment`` sub-command to ``subparsers``."""
    names = sorted(REGISTRY, key=lambda n: REGISTRY[n].number)
    parser = subparsers.add_parser(
        "experiment", help="run a SPEC §8 experiment (2–10) and write CSV, HTML and markdown",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="experiments: " + ", ".join(f"{REGISTRY[n].number}. {n}" for n in names))
    parser.add_argument("name", choices=[*names, "all"], help="experiment, or all of them")
    parser.add_argument("--preset", default="quick", choices=PRESET_NAMES,
                        help="tiny (smoke test), quick (about a minute), paper (authors' scale)")
    parser.add_argument("--out", default="reports/experiments", help="output folder")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes in parallel (default: min(runs, cores))")
    parser.add_argument("--seed", type=int, default=None, help="base seed (default 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def run_experiment_command(args: argparse.Namespace) -> int:
    """Run the experiment(s) named in ``args`` and write their files; returns 0."""
    names = (sorted(REGISTRY, key=lambda n: REGISTRY[n].number) if args.name == "all"
             else [args.name])
    command = getattr(args, "command_line", "sharp " + shlex.join(sys.argv[1:]))
    overrides: dict[str, object] = {"progress": not args.quiet}
    if args.workers is not None:
        overrides["workers"] = args.workers
    if args.seed is not None:
        overrides["seed"] = args.seed
    runs = []
    for name in names:
        run = run_experiment(name, args.preset, args.out, command=command, **overrides)
        runs.append(run)
        print(f"{name}: {len(run.frame)} rows in {run.seconds:.1f} s -> "
              f"{Path(args.out) / f'{name}.md'}")
    if args.name == "all":
        paths = write_index(args.out, runs, preset=args.preset, command=command)
        print(f"all {len(runs)} experiments -> {paths['md']} and {paths['html']}")
    return 0
