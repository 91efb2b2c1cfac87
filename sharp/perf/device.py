"""The device check (issue 13, item 4): on a GPU machine, measure the figures the issue sets
targets for, print each next to its target, then run ``pytest -m cuda``.

Run it from the repository root as ``PYTHONPATH=. python3 tools/device_check.py`` (sized
for about 6 minutes on an H200, ``--quick`` for about one; not yet timed on one). It
imports torch and numpy only (no pandas, plotly, datasets or papermill), so it runs on a
machine set up for training alone; with ``--device cpu --no-tests`` it runs on any machine
(slowly: it keeps the paper's sizes; the default test suite runs it with tiny ones).

Every figure is a short steady-state measurement: a warm-up (excluded) and a few hundred
timed steps, the device synchronised before the clock stops. The figures come in groups
(:func:`groups`), those with the issue's targets first; each group runs on its own: one that
raises is reported (``FAILED``, with the last frames of its traceback) and the next runs;
none starts after ``--budget`` seconds (``SKIPPED``). pytest runs in a fresh process, each
test under pytest-timeout's ``--timeout`` where that plugin is installed, and all of it
stopped at ``--limit`` seconds, so that the summary line is still printed (and ``--out``
written) before a 10-minute wall-clock kill. Timing never decides pass or fail; the exit
code is nonzero if a group failed or pytest failed or was stopped.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import os
import platform
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sharp.baselines.ensemble import BaselineEnsemble
from sharp.config import SharpConfig, preset
from sharp.engines.ensemble import SharpEnsemble
from sharp.model.learner import Sharp
from sharp.protocol import Learner
from sharp.runs.registry import BASELINE_KINDS, baseline_spec, build_ensemble, build_learner


@dataclass(frozen=True)
class Figure:
    """One measured figure: ``value`` in ``unit``; ``target`` (None: none set) is a floor
    when ``higher`` (tokens/s) and a ceiling otherwise (seconds)."""

    name: str
    value: float
    unit: str
    target: float | None = None
    higher: bool = True
    note: str = ""

    @property
    def met(self) -> bool | None:
        """Whether the target is met (None without a target)."""
        if self.target is None:
            return None
        return self.value >= self.target if self.higher else self.value <= self.target


@dataclass(frozen=True)
class Plan:
    """What to measure. ``sharp``: presets measured single-stream and as ensembles of
    each of ``members``, each ensemble also timed through one sleep (every member with a
    full tag buffer) where ``sleeps``; ``overrides``: config fields set
    on every SHARP preset (tests shrink the sizes with them); ``baselines`` at
    ``baseline_preset`` size; ``steps`` timed after ``warmup``; evaluation over
    ``eval_tokens`` (SHARP) and ``baseline_eval_tokens``."""

    sharp: tuple[str, ...] = ("text8", "text8-small")
    members: tuple[int, ...] = (1, 9, 64)
    sleeps: bool = True
    overrides: dict[str, Any] = field(default_factory=dict)
    baselines: tuple[str, ...] = BASELINE_KINDS
    baseline_preset: str = "paper"
    steps: int = 200
    warmup: int = 30
    eval_tokens: int = 1_000_000
    baseline_eval_tokens: int = 100_000


#: The full check, pytest included: sized for about 6 minutes on an H200 (not yet timed on one).
FULL = Plan()
#: ``--quick``: one preset per figure, sized for about a minute.
QUICK = Plan(sharp=("text8",), members=(9,), baselines=("lstm",), steps=60,
             warmup=10, eval_tokens=200_000, baseline_eval_tokens=20_000)

#: The issue's targets (one H200): (preset, members) -> ensemble wake tokens/s.
ENSEMBLE_TARGETS = {("text8", 9): 9_000.0, ("text8-small", 64): 80_000.0}
#: (preset, members) -> seconds of one ensemble sleep.
SLEEP_TARGETS = {("text8", 9): 10.0}
EVAL_TARGET = 1_000_000.0
BASELINE_M9_TARGET = 5_000.0

#: Defaults of ``--budget`` (no figure group starts after it) and ``--limit`` (pytest is
#: stopped there), seconds from the start: the full check fits a 600 s wall-clock limit.
BUDGET_S = 360.0
LIMIT_S = 570.0
#: pytest-timeout's ``--timeout`` for each CUDA test, seconds.
TEST_TIMEOUT_S = 240
#: Frames of a failed group's traceback printed.
TRACEBACK_FRAMES = 6


def machine_line(device: torch.device) -> str:
    """The accelerator (name, memory), torch, CUDA, Python and CPU cores."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        where = f"{props.name} ({props.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}"
    else:
        where = f"{device.type} ({platform.processor() or platform.machine()})"
    return (f"{where}, torch {torch.__version__}, Python {platform.python_version()}, "
            f"{os.cpu_count()} CPU cores")


def synchronize(device: torch.device) -> None:
    """Wait for ``device``'s queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rate(step: Callable[[int], Any], steps: int, warmup: int, device: torch.device) -> float:
    """Calls of ``step(i)`` per second over ``steps`` timed calls after ``warmup`` untimed
    ones (i counts on across both)."""
    for i in range(warmup):
        step(i)
    synchronize(device)
    start = time.perf_counter()
    for i in range(warmup, warmup + steps):
        step(i)
    synchronize(device)
    return steps / (time.perf_counter() - start)


def random_tokens(n: int, vocab: int, seed: int = 0) -> np.ndarray:
    """``n`` uniformly random token ids below ``vocab`` (int64)."""
    return np.random.default_rng(seed).integers(0, vocab, n).astype(np.int64)


def stream_rate(learner: Learner, steps: int, warmup: int, device: torch.device) -> float:
    """Wake tokens/s of one learner on a random stream."""
    ids = random_tokens(warmup + steps + learner.window + 1, learner.vocab_size)
    w = learner.window
    return rate(lambda i: learner.learn(ids[i : i + w], int(ids[i + w])), steps, warmup, device)


def sharp_config(preset_name: str, plan: Plan, **fields: Any) -> SharpConfig:
    """``preset_name`` with the plan's overrides and ``fields``; tau = 0 keeps memory 0
    learning (and storing tags) at every step, the costliest wake step."""
    return preset(preset_name, **{"tau": 0.0, **plan.overrides, **fields})


def single_stream(preset_name: str, plan: Plan, device: torch.device) -> list[Figure]:
    """Wake tokens/s of one SHARP learner on the CPU (fused engine where it builds) and on
    ``device`` (when that is not the CPU)."""
    figures = []
    for where in dict.fromkeys(["cpu", str(device)]):
        learner = Sharp(sharp_config(preset_name, plan, device=where))
        value = stream_rate(learner, plan.steps, plan.warmup, learner.device)
        figures.append(Figure(f"SHARP {preset_name} wake, 1 stream, {where} {learner.engine} "
                              "engine",
                              value, "tokens/s"))
    return figures


def ensemble_rate(ensemble: SharpEnsemble | BaselineEnsemble, tokens: np.ndarray, steps: int
                  ) -> float:
    """Ensemble steps/s over ``steps`` steps of ``ensemble`` (each step advances every
    member) on ``tokens`` (M, >= steps + W), member m reading row m, as the job runner
    streams it: a SHARP ensemble in device blocks
    (:meth:`~sharp.engines.ensemble.SharpEnsemble.learn_block`, replayed CUDA graphs on
    CUDA), a baseline ensemble step by step. The clock stops once the device is done."""
    w = ensemble.window
    begin = time.perf_counter()
    if isinstance(ensemble, SharpEnsemble):
        ids = torch.as_tensor(tokens[:, : steps + w])
        ensemble.learn_block(ids.unfold(1, w, 1)[:, :steps].transpose(0, 1),
                             ids[:, w : steps + w].T)
    else:
        for i in range(steps):
            ensemble.learn(tokens[:, i : i + w], tokens[:, i + w])
    synchronize(ensemble.device)
    return steps / (time.perf_counter() - begin)


def plan_ensemble_rate(ensemble: SharpEnsemble | BaselineEnsemble, plan: Plan) -> float:
    """:func:`ensemble_rate` of ``plan.steps`` steps after ``plan.warmup`` untimed ones (in
    one block for a SHARP ensemble, which captures its CUDA graphs), every member on its own
    random stream."""
    members, w = len(ensemble.seeds), ensemble.window
    ids = np.stack([random_tokens(plan.warmup + plan.steps + w + 1, ensemble.vocab_size, seed)
                    for seed in range(members)])
    ensemble_rate(ensemble, ids, plan.warmup)
    return ensemble_rate(ensemble, ids[:, plan.warmup :], plan.steps)


def ensemble_figures(preset_name: str, members: int, plan: Plan, device: torch.device
                     ) -> list[Figure]:
    """Ensemble wake steps/s and tokens/s (members × steps/s) of ``members`` learners,
    named with the path that ran (CUDA graphs or eager device blocks)."""
    config = sharp_config(preset_name, plan, device=str(device))
    ensemble = SharpEnsemble(config, list(range(members)))
    steps = plan_ensemble_rate(ensemble, plan)
    target = ENSEMBLE_TARGETS.get((preset_name, members))
    path = "CUDA graphs" if ensemble.captured["wake"] else "eager"
    name = f"SharpEnsemble {preset_name} M={members} wake ({path}, H={config.hidden[0]})"
    return [Figure(name, steps, "steps/s"), Figure(name, steps * members, "tokens/s", target)]


def fill_tags(ensemble: SharpEnsemble, seed: int) -> None:
    """Wake every member on a random stream until its tag ring is full (tau = 0: one tag
    per step). Raises RuntimeError if a ring is not full then."""
    c = ensemble.config
    ids = np.stack([random_tokens(c.tag_buffer + c.window + 2, c.vocab_size, seed + m)
                    for m in range(ensemble.members)])
    for i in range(c.tag_buffer + 1):
        ensemble.learn(ids[:, i : i + c.window], ids[:, i + c.window])
    if any(count != c.tag_buffer for count in ensemble.tag_count.tolist()):
        raise RuntimeError("the tag buffers did not fill before the timed sleep")


def ensemble_sleep(preset_name: str, members: int, plan: Plan, device: torch.device
                   ) -> Figure:
    """Seconds of one sleep of ``members`` ensemble members, each with a full tag buffer
    (tau = 0: every replay window learns, the costliest sleep): the second sleep, after a
    first that warms up (and on CUDA captures the replay step's graphs)."""
    config = sharp_config(preset_name, plan, device=str(device))
    ensemble = SharpEnsemble(config, list(range(members)))
    fill_tags(ensemble, 0)
    synchronize(device)
    start = time.perf_counter()
    ensemble.sleep()
    synchronize(device)
    first = time.perf_counter() - start
    fill_tags(ensemble, members)
    synchronize(device)
    start = time.perf_counter()
    ensemble.sleep()
    synchronize(device)
    seconds = time.perf_counter() - start
    target = SLEEP_TARGETS.get((preset_name, members))
    replays = [captured for step, captured in ensemble.captured.items() if step != "wake"]
    path = ("CUDA graphs" if all(replays) else "eager" if not any(replays) else
            f"CUDA graphs for {sum(replays)} of {len(replays)} replay steps")
    return Figure(f"SharpEnsemble {preset_name} sleep of M={members} ({config.tag_buffer} tags "
                  f"each, {config.replay_steps} replay steps)", seconds, "s", target,
                  higher=False, note=f"{path}; the first sleep took {first:.2f} s")


def evaluation(label: str, learner: Learner, tokens: int, device: torch.device,
               target: float | None) -> Figure:
    """Evaluation tokens/s of ``learner`` on a random slice of ``tokens`` tokens already on
    ``device`` (the second of two runs: the first, on a short slice, warms up)."""
    ids = torch.as_tensor(random_tokens(tokens, learner.vocab_size, seed=1), device=device)
    learner.evaluate(ids[: min(tokens, 10_000)])
    result = learner.evaluate(ids)
    return Figure(f"{label} evaluation ({tokens:,} tokens)", result.tokens / result.seconds,
                  "tokens/s", target)


def sharp_evaluation(plan: Plan, device: torch.device) -> Figure:
    """Evaluation tokens/s of one SHARP learner of the plan's first preset on ``device``."""
    name = plan.sharp[0]
    learner = Sharp(sharp_config(name, plan, device=str(device)))
    return evaluation(f"SHARP {name}, 1 learner on {device}", learner, plan.eval_tokens,
                      device, EVAL_TARGET)


def baseline_ensemble(kind: str, plan: Plan, device: torch.device) -> Figure:
    """Wake tokens/s of an ensemble of 9 ``kind`` baselines at the plan's preset (the
    issue's target)."""
    spec = baseline_spec(kind, plan.baseline_preset, device=str(device))
    steps = plan_ensemble_rate(build_ensemble(spec, list(range(9))), plan)
    return Figure(f"{kind} ({plan.baseline_preset} size) ensemble M=9 wake", steps * 9,
                  "tokens/s", BASELINE_M9_TARGET)


def baseline_stream(kind: str, plan: Plan, device: torch.device) -> list[Figure]:
    """Wake tokens/s of one ``kind`` baseline at the plan's preset on one stream, and its
    evaluation tokens/s."""
    learner = build_learner(baseline_spec(kind, plan.baseline_preset, device=str(device)))
    name = f"{kind} ({plan.baseline_preset} size)"
    return [Figure(f"{name} wake, 1 stream", stream_rate(learner, plan.steps, plan.warmup,
                                                         device), "tokens/s"),
            evaluation(name, learner, plan.baseline_eval_tokens, device, None)]


@dataclass(frozen=True)
class Group:
    """Figures measured together: ``what`` they are, ``measure()`` measures them (one
    figure or several), and ``targeted`` says whether one has a target of the issue's."""

    what: str
    measure: Callable[[], Figure | Sequence[Figure]]
    targeted: bool = False


def groups(plan: Plan, device: torch.device) -> list[Group]:
    """The plan's figure groups: those with the issue's targets first, each part in plan
    order."""
    found = []
    for name in plan.sharp:
        found.append(Group(f"SHARP {name} wake, 1 stream",
                           partial(single_stream, name, plan, device)))
        for members in plan.members:
            found.append(Group(f"SharpEnsemble {name} M={members} wake",
                               partial(ensemble_figures, name, members, plan, device),
                               (name, members) in ENSEMBLE_TARGETS))
            if plan.sleeps:
                found.append(Group(f"SharpEnsemble {name} M={members} sleep",
                                   partial(ensemble_sleep, name, members, plan, device),
                                   (name, members) in SLEEP_TARGETS))
    found.append(Group(f"SHARP {plan.sharp[0]} evaluation",
                       partial(sharp_evaluation, plan, device), True))
    for kind in plan.baselines:
        size = f"{kind} ({plan.baseline_preset} size)"
        found.append(Group(f"{size} ensemble M=9 wake",
                           partial(baseline_ensemble, kind, plan, device), True))
        found.append(Group(f"{size} wake, 1 stream, and evaluation",
                           partial(baseline_stream, kind, plan, device)))
    return sorted(found, key=lambda group: not group.targeted)


def release(device: torch.device) -> bool:
    """Free what the last group left on ``device`` (collect, then empty the CUDA cache);
    False if CUDA is unusable (a sticky error, e.g. a device-side assert, which no call in
    this process recovers from)."""
    gc.collect()
    if device.type != "cuda":
        return True
    try:
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
    except Exception:  # torch raises RuntimeError or AcceleratorError
        return False
    return True


@dataclass
class Measured:
    """What :func:`measure` did: the figures, and the groups that failed or were skipped."""

    figures: list[Figure] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def measure(plan: Plan, device: torch.device, log: Callable[[str], None] = print,
            budget: float = float("inf"), start: float | None = None) -> Measured:
    """Every figure group of ``plan`` on ``device`` (:func:`groups`), printed through
    ``log`` as it is measured, with its seconds; a group that raises is logged as
    ``FAILED`` with the last frames of its traceback, and none starts once ``budget``
    seconds have passed since ``start`` (a :func:`time.perf_counter` reading; default:
    now) or after CUDA became unusable."""
    start = time.perf_counter() if start is None else start
    measured = Measured()
    usable = True
    for group in groups(plan, device):
        elapsed = time.perf_counter() - start
        if not usable or elapsed > budget:
            why = (f"over the --budget of {budget:g} s" if usable else
                   "CUDA is unusable after an earlier error")
            log(f"SKIPPED {group.what}: {why}")
            measured.skipped.append(group.what)
            continue
        began = time.perf_counter()
        try:
            result = group.measure()
            figures = [result] if isinstance(result, Figure) else list(result)
        except Exception as error:  # reported; the next group runs
            message = (str(error).splitlines() or [""])[0]
            log(f"FAILED {group.what}: {type(error).__name__}: {message}")
            for line in "".join(traceback.format_exception(error, limit=-TRACEBACK_FRAMES)
                                ).splitlines():
                log(f"    {line}")
            measured.failed.append(group.what)
        else:
            for figure in figures:
                log(format_figure(figure))
            measured.figures.extend(figures)
        now = time.perf_counter()
        log(f"  ({group.what}: {now - began:.1f} s; {now - start:.0f} s elapsed)")
        if not release(device):
            usable = False
            log("CUDA is unusable in this process now (a sticky error, e.g. a device-side "
                "assert, cannot be recovered): the remaining figure groups are skipped; "
                "pytest runs in a fresh process")
    return measured


def format_figure(figure: Figure) -> str:
    """One line: name, value and unit, and the target with whether it is met."""
    line = f"{figure.name:<72} {figure.value:>14,.1f} {figure.unit:<9}"
    if figure.target is not None:
        sign = "≥" if figure.higher else "≤"
        line += f" target {sign} {figure.target:,.0f}: {'met' if figure.met else 'NOT met'}"
    if figure.note:
        line += f" ({figure.note})"
    return line


def run_logged(command: Sequence[str], cwd: Path, env: dict[str, str], timeout: float,
               log: Callable[[str], None]) -> int | None:
    """Run ``command`` in ``cwd`` with ``env``, passing each line of its output (stdout and
    stderr) to ``log`` as it comes; its exit code, or None if it was still running after
    ``timeout`` seconds (then it is killed, with its process group)."""
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, errors="replace",
                               start_new_session=True)

    def forward() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            log(line.rstrip("\n"))

    reader = threading.Thread(target=forward, daemon=True)
    reader.start()
    try:
        code: int | None = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        code = None
    reader.join(timeout=10)
    return code


def run_cuda_tests(root: Path, timeout: float, log: Callable[[str], None] = print
                   ) -> int | None:
    """``pytest -m cuda`` on tests/test_cuda.py from ``root``, its output passed to ``log``;
    its exit code, or None if it was stopped after ``timeout`` seconds. Each test runs under
    pytest-timeout's ``--timeout`` of ``TEST_TIMEOUT_S`` where that plugin is installed. The
    project's own pytest options are dropped (they name plugins, e.g. nbval, that a GPU
    machine set up for training may lack)."""
    command = [sys.executable, "-m", "pytest", "-o", "addopts=", "-p", "no:cacheprovider",
               "--strict-markers", "-ra", "-q", "-m", "cuda"]
    if importlib.util.find_spec("pytest_timeout") is not None:
        command += ["--timeout", str(TEST_TIMEOUT_S)]
    else:
        log("(pytest-timeout is not installed: no per-test timeout, only the --limit)")
    command.append("tests/test_cuda.py")
    log("$ " + " ".join(command))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(
        filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    return run_logged(command, root, env, timeout, log)


class Log:
    """Prints each line (flushed) and, given ``path``, writes it to ``path``.partial too
    (flushed); :meth:`close` renames that file to ``path``."""

    def __init__(self, path: str | None) -> None:
        self.path = Path(path) if path else None
        self.file = None
        if self.path is not None:
            self.partial = self.path.with_name(self.path.name + ".partial")
            self.file = self.partial.open("w", encoding="utf-8")

    def __call__(self, line: str) -> None:
        print(line, flush=True)
        if self.file is not None:
            self.file.write(line + "\n")
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.partial.replace(self.path)


def main(argv: Sequence[str] | None = None, plan: Plan | None = None) -> int:
    """Entry point of ``tools/device_check.py``: print the machine line and every figure
    group (:func:`measure`), then (unless ``--no-tests``) run ``pytest -m cuda``
    (:func:`run_cuda_tests`), then a summary line; with ``--out`` every line is also
    written to that file. Returns 0, or nonzero if a figure group failed or pytest failed
    or was stopped (pytest's exit code where it failed, else 1); 2 if ``--device cuda``
    names a device this machine lacks. ``plan`` replaces the one ``--quick`` selects
    (tests pass tiny ones)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="device to measure (cuda, cpu, mps)")
    parser.add_argument("--quick", action="store_true", help="a one-minute subset")
    parser.add_argument("--no-tests", action="store_true", help="measure only")
    parser.add_argument("--budget", type=float, default=BUDGET_S, metavar="SECONDS",
                        help="no figure group starts after this many seconds from the start "
                        f"(default {BUDGET_S:g})")
    parser.add_argument("--limit", type=float, default=LIMIT_S, metavar="SECONDS",
                        help="pytest is stopped this many seconds from the start, so that the "
                        f"summary is still written (default {LIMIT_S:g})")
    parser.add_argument("--out", metavar="FILE",
                        help="also write every line printed, pytest's included, to FILE")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("device check: this machine has no CUDA; run it on a GPU machine, or pass "
              "--device cpu for a smoke test", file=sys.stderr)
        return 2
    plan = plan or (QUICK if args.quick else FULL)
    log = Log(args.out)
    try:
        log(f"machine: {machine_line(device)}")
        measured = measure(plan, device, log, args.budget, start)
        log(f"measured in {time.perf_counter() - start:.0f} s")
        code: int | None = 0
        if args.no_tests:
            tests = "pytest not run (--no-tests)"
        elif time.perf_counter() - start >= args.limit:
            code, tests = None, f"pytest SKIPPED: over the --limit of {args.limit:g} s"
            log(tests)
        else:
            began = time.perf_counter()
            code = run_cuda_tests(Path(__file__).resolve().parents[2],
                                  args.limit - (began - start), log)
            seconds = time.perf_counter() - began
            tests = (f"pytest stopped at the --limit of {args.limit:g} s" if code is None
                     else f"pytest {'passed' if code == 0 else 'FAILED'} (exit {code})")
            log(f"{tests} in {seconds:.0f} s")
        exit_code = 0 if code == 0 and not measured.failed else (code or 1)
        groups_line = f"{len(measured.figures)} figures"
        if measured.failed:
            groups_line += f"; FAILED: {' | '.join(measured.failed)}"
        if measured.skipped:
            groups_line += f"; SKIPPED: {' | '.join(measured.skipped)}"
        log(f"summary: {groups_line}; {tests}; {time.perf_counter() - start:.0f} s in all; "
            f"exit code {exit_code}")
    finally:
        log.close()
    return exit_code
