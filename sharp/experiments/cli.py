"""``sharp experiment NAME|all --preset tiny|quick|paper --out DIR [--workers N] [--seed S]
[--overwrite] [--no-resume] [--checkpoint-tokens N] [--checkpoint-minutes M]
[--keep-checkpoints K] [--ensemble auto|on|off] [--estimate]``; ``all`` also writes the
combined ``index.md`` / ``index.html``. Each finished job is stored under
``DIR/jobs/NAME/``, so the same command run again after a crash resumes (runs only the jobs
not stored; the jobs of experiments 2-4, 8 and 9 also checkpoint inside their loop, under
``DIR/jobs/NAME/<job id>/``, and resume from there, the checkpoint options as ``sharp
bench``'s). ``--ensemble`` says whether experiments 2-4, 8 and 9 run each condition's
repetitions as one ensemble job (``auto``: where ``sharp bench --ensemble auto`` groups, on
CUDA or MPS). ``--estimate`` prints the duration estimate from a short warm-up of the jobs
and exits; ``--preset paper`` prints it before every run."""

from __future__ import annotations

import argparse
import shlex
import sys

from sharp.experiments.common import PRESET_NAMES, REGISTRY, planned_jobs
from sharp.experiments.estimate import estimate_experiment
from sharp.experiments.report import (
    check_experiment_folder,
    ensemble_record,
    run_experiment,
    write_index,
)
from sharp.runs.bench import ENSEMBLE_MODES
from sharp.runs.invocations import wall_time_words
from sharp.runs.jobs import checkpoint_policy
from sharp.runs.lock import run_folder_lock
from sharp.runs.options import (
    HelpFormatter,
    add_checkpoint_options,
    checkpoint_options,
    given_checkpoint_options,
    positive_int,
    seed_int,
)
from sharp.runs.outputs import duration, plural


def add_experiment_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``experiment`` sub-command to ``subparsers``."""
    names = sorted(REGISTRY, key=lambda n: REGISTRY[n].number)
    parser = subparsers.add_parser(
        "experiment", help="run a SPEC §8 experiment (2–10) and write CSV, HTML and markdown",
        formatter_class=HelpFormatter,
        description="experiments: " + ", ".join(f"{REGISTRY[n].number}. {n}" for n in names))
    parser.add_argument("name", choices=[*names, "all"], help="experiment, or all of them")
    parser.add_argument("--preset", default="quick", choices=PRESET_NAMES,
                        help="tiny (smoke test), quick (about a minute), paper (authors' scale)")
    parser.add_argument("--out", default="reports/experiments",
                        help="output folder: <name>.csv, .html, .md and .json (the run's "
                        "record) per experiment; 'all' also writes the combined index.md / "
                        "index.html, which every later experiment written there then "
                        "rebuilds from the folder's files")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the results of another run (other preset, seed or "
                        "parameters) in --out; the same run always may")
    parser.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                        help="reuse the jobs this same run stored in --out/jobs/NAME/ as "
                        "they finished (after a crash, run the same command again); "
                        "--no-resume runs every job afresh")
    parser.add_argument("--workers", type=positive_int, default=None,
                        help="processes in parallel (default: min(runs, cores))")
    parser.add_argument("--seed", type=seed_int, default=None,
                        help="base seed, an integer in 0..2**63-1 (default: 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_checkpoint_options(parser, "each job of experiments 2-4, 8 and 9 (under "
                           "--out/jobs/NAME/<job id>/)")
    parser.add_argument("--ensemble", choices=ENSEMBLE_MODES, default="auto",
                        help="experiments 2-4, 8 and 9: run each condition's repetitions "
                        "(one seed each) as one ensemble job (SPEC §10), the same results up "
                        "to float rounding; auto: where sharp bench --ensemble auto groups "
                        "(CUDA or MPS, not the CPU); on needs 2 or more repetitions; the "
                        "wake-only condition of experiment 8 always runs separately")
    parser.add_argument("--estimate", action="store_true",
                        help="print the run's duration estimate (a short measured warm-up of "
                        "its jobs on this machine) and exit, running no job and writing "
                        "nothing; --preset paper prints it before every run")
    return parser


def print_estimates(names: list[str], preset: str, out: str | None,
                    overrides: dict[str, dict[str, object]]) -> None:
    """Print the duration estimate of each experiment in ``names`` with its
    ``overrides[name]`` (:func:`~sharp.experiments.estimate.estimate_experiment`; jobs
    stored in ``out`` by an earlier run of the same command not counted), and their total
    when there are several (they run one after another)."""
    total = 0.0
    for name in names:
        estimate = estimate_experiment(name, preset, out, **overrides[name])
        print(estimate.line(), flush=True)
        total += estimate.seconds
    if len(names) > 1:
        print(f"all {len(names)} experiments, one after another: estimated duration "
              f"{duration(total)}", flush=True)


def run_experiment_command(args: argparse.Namespace) -> int:
    """Run the experiment(s) named in ``args`` and write their files; returns 0. The
    checkpoint options are checked first (ValueError naming each bad one as typed, as
    ``sharp bench`` does, and for one experiment whose jobs do not checkpoint inside their
    loop, any given at all), then ``--ensemble`` (ValueError: ``on`` or ``off`` for a named
    experiment without the option; ``on`` with one repetition) and every experiment's
    output (:func:`check_experiment_folder`), before the first starts, under the output
    folder's run lock (:func:`~sharp.runs.lock.run_folder_lock`: FolderBusy while another
    process runs on it), held until the last is written; ``--ensemble`` is given to the
    experiments that take it (2-4, 8, 9). With ``--preset paper`` the duration estimate is
    printed before the run (:func:`print_estimates`); ``--estimate`` prints it and stops,
    taking no lock and refusing nothing on the folder's contents (it says when the run
    itself would be refused)."""
    names = (sorted(REGISTRY, key=lambda n: REGISTRY[n].number) if args.name == "all"
             else [args.name])
    command = getattr(args, "command_line", "sharp " + shlex.join(sys.argv[1:]))
    policy = checkpoint_policy(*checkpoint_options(args).values())
    overrides: dict[str, object] = {"progress": not args.quiet}
    if args.workers is not None:
        overrides["workers"] = args.workers
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.name != "all" and args.ensemble != "auto" and not REGISTRY[args.name].ensembles:
        grouping = sorted(e.number for e in REGISTRY.values() if e.ensembles)
        raise ValueError(f"--ensemble {args.ensemble}: {args.name} does not group its "
                         f"repetitions into ensembles (only experiments "
                         f"{', '.join(map(str, grouping))} do); leave --ensemble out")
    options = {name: {**overrides, **({"ensemble": args.ensemble}
                                      if REGISTRY[name].ensembles else {})}
               for name in names}
    given = given_checkpoint_options(args)
    planned = {name: REGISTRY[name].parameters(args.preset, **options[name]) for name in names}
    for name, parameters in planned.items():
        ensemble_record(REGISTRY[name], parameters)  # e.g. --ensemble on with one repetition
        if given and args.name != "all" and not any(
                job.checkpoints_inside for job in planned_jobs(REGISTRY[name].run, parameters)):
            raise ValueError(f"{' and '.join(given)}: {name}'s jobs do not checkpoint inside "
                             "their loop (those of experiments 2-4, 8 and 9 do); its finished "
                             "jobs are stored and a re-run skips them. Drop the option.")
    if args.estimate:
        for name, parameters in planned.items():
            try:
                check_experiment_folder(args.out, name, args.preset, parameters, args.overwrite)
            except OSError as refusal:
                print(f"note: the run itself (without --estimate) would be refused: {refusal}")
        print_estimates(names, args.preset, args.out if args.resume else None, options)
        return 0
    with run_folder_lock(args.out, "sharp experiment") as out:  # ~ expanded
        for name, parameters in planned.items():
            check_experiment_folder(out, name, args.preset, parameters, args.overwrite)
        if args.preset == "paper":
            print_estimates(names, args.preset, str(out) if args.resume else None, options)
        for name in names:
            run = run_experiment(name, args.preset, out, command=command,
                                 overwrite=args.overwrite, resume=args.resume, policy=policy,
                                 **options[name])
            this = (f" (this invocation {run.seconds:.1f} s)" if len(run.invocations) > 1
                    else "")
            print(f"{name}: {plural(len(run.frame), 'row')}, "
                  f"{wall_time_words(run.invocations)}{this} -> {out / f'{name}.md'}")
        if args.name == "all":
            paths = write_index(out)
            print(f"all {len(names)} experiments -> {paths['md']} and {paths['html']}")
    return 0
