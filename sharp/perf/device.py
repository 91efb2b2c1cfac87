"""The device check (issue 13, item 4): on a GPU machine, measure the figures the issue sets
targets for, print each next to its target, then run ``pytest -m cuda``.

Run it from the repository root as ``PYTHONPATH=. python3 tools/device_check.py`` (sized
for about 6 minutes on an H200, ``--quick`` for about one; not yet timed on one). It
imports torch and numpy only (no pandas, plotly, datasets or papermill), so it runs on a
machine set up for training alone; with ``--device cpu --no-tests`` it runs on any machine
(slowly: it keeps the paper's sizes; the default test suite runs it with tiny ones).

Every figure is a short steady-state measurement: a warm-up (excluded) and a few hundred
timed steps, the device synchronised before the clock stops. Timing never decides pass or
fail; the exit code is pytest's.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
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
SLEEP_TARGET_S = 10.0
EVAL_TARGET = 1_000_000.0
BASELINE_M9_TARGET = 5_000.0


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


def ensemble_rate(ensemble: SharpEnsemble | BaselineEnsemble, plan: Plan,
                  device: torch.device) -> float:
    """Wake steps/s of an ensemble, every member on its own random stream, as the job
    runner streams it: a SHARP ensemble in device blocks
    (:meth:`~sharp.engines.ensemble.SharpEnsemble.learn_block`, replayed CUDA graphs on
    CUDA; one block of ``plan.warmup`` steps, which captures them, then one timed block of
    ``plan.steps``), a baseline ensemble step by step."""
    members, w = len(ensemble.seeds), ensemble.window
    ids = np.stack([random_tokens(plan.warmup + plan.steps + w + 1, ensemble.vocab_size, seed)
                    for seed in range(members)])
    if not isinstance(ensemble, SharpEnsemble):
        return rate(lambda i: ensemble.learn(ids[:, i : i + w], ids[:, i + w]), plan.steps,
                    plan.warmup, device)
    windows = torch.as_tensor(ids).unfold(1, w, 1).transpose(0, 1)  # (steps, M, W)
    targets = torch.as_tensor(ids[:, w:]).T
    ensemble.learn_block(windows[: plan.warmup], targets[: plan.warmup])
    synchronize(device)
    start = time.perf_counter()
    end = plan.warmup + plan.steps
    ensemble.learn_block(windows[plan.warmup : end], targets[plan.warmup : end])
    synchronize(device)
    return plan.steps / (time.perf_counter() - start)


def ensemble_figures(preset_name: str, members: int, plan: Plan, device: torch.device
                     ) -> list[Figure]:
    """Ensemble wake steps/s and tokens/s (members × steps/s) of ``members`` learners,
    named with the path that ran (CUDA graphs or eager device blocks)."""
    config = sharp_config(preset_name, plan, device=str(device))
    ensemble = SharpEnsemble(config, list(range(members)))
    steps = ensemble_rate(ensemble, plan, device)
    target = ENSEMBLE_TARGETS.get((preset_name, members))
    path = "CUDA graphs" if ensemble.graphs else "eager"
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
    target = SLEEP_TARGET_S if (preset_name, members) == ("text8", 9) else None
    path = "CUDA graphs" if ensemble.graphs else "eager"
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


def baseline_figures(kind: str, plan: Plan, device: torch.device) -> list[Figure]:
    """Streaming tokens/s of one ``kind`` baseline at the plan's preset, alone and as an
    ensemble of 9 (the issue's target), and its evaluation tokens/s."""
    spec = baseline_spec(kind, plan.baseline_preset, device=str(device))
    learner = build_learner(spec)
    name = f"{kind} ({plan.baseline_preset} size)"
    steps = ensemble_rate(build_ensemble(spec, list(range(9))), plan, device)
    return [Figure(f"{name} wake, 1 stream", stream_rate(learner, plan.steps, plan.warmup,
                                                         device), "tokens/s"),
            Figure(f"{name} ensemble M=9 wake", steps * 9, "tokens/s", BASELINE_M9_TARGET),
            evaluation(name, learner, plan.baseline_eval_tokens, device, None)]


def measure(plan: Plan, device: torch.device, log: Callable[[str], None] = print
            ) -> list[Figure]:
    """Every figure of ``plan`` on ``device``, printed through ``log`` as it is measured."""
    figures: list[Figure] = []

    def add(new: Sequence[Figure]) -> None:
        for figure in new:
            log(format_figure(figure))
        figures.extend(new)

    for name in plan.sharp:
        add(single_stream(name, plan, device))
        for members in plan.members:
            add(ensemble_figures(name, members, plan, device))
            if plan.sleeps:
                add([ensemble_sleep(name, members, plan, device)])
    learner = Sharp(sharp_config(plan.sharp[0], plan, device=str(device)))
    add([evaluation(f"SHARP {plan.sharp[0]}, 1 learner on {device}", learner, plan.eval_tokens,
                    device, EVAL_TARGET)])
    for kind in plan.baselines:
        add(baseline_figures(kind, plan, device))
    return figures


def format_figure(figure: Figure) -> str:
    """One line: name, value and unit, and the target with whether it is met."""
    line = f"{figure.name:<72} {figure.value:>14,.1f} {figure.unit:<9}"
    if figure.target is not None:
        sign = "≥" if figure.higher else "≤"
        line += f" target {sign} {figure.target:,.0f}: {'met' if figure.met else 'NOT met'}"
    if figure.note:
        line += f" ({figure.note})"
    return line


def run_cuda_tests(root: Path) -> int:
    """``pytest -m cuda`` on tests/test_cuda.py from ``root``; its exit code. The project's
    own pytest options are dropped (they name plugins, e.g. nbval, that a GPU machine set up
    for training may lack)."""
    command = [sys.executable, "-m", "pytest", "-o", "addopts=", "-p", "no:cacheprovider",
               "--strict-markers", "-ra", "-q", "-m", "cuda", "tests/test_cuda.py"]
    print("$", " ".join(command), flush=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(command, cwd=root, env=env, check=False).returncode


def main(argv: Sequence[str] | None = None, plan: Plan | None = None) -> int:
    """Entry point of ``tools/device_check.py``: print the machine line and every figure,
    then (unless ``--no-tests``) run ``pytest -m cuda`` and return its exit code. ``plan``
    replaces the one ``--quick`` selects (tests pass tiny ones)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="device to measure (cuda, cpu, mps)")
    parser.add_argument("--quick", action="store_true", help="a one-minute subset")
    parser.add_argument("--no-tests", action="store_true", help="measure only")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("device check: this machine has no CUDA; run it on a GPU machine, or pass "
              "--device cpu for a smoke test", file=sys.stderr)
        return 2
    plan = plan or (QUICK if args.quick else FULL)
    print(f"machine: {machine_line(device)}", flush=True)
    start = time.perf_counter()
    measure(plan, device, lambda line: print(line, flush=True))
    print(f"measured in {time.perf_counter() - start:.0f} s", flush=True)
    if args.no_tests:
        return 0
    return run_cuda_tests(Path(__file__).resolve().parents[2])
