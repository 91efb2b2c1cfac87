"""Where a run's jobs run: in this process (one worker, no cluster), or as Ray tasks.

Ray is embedded and local by default (``ray.init`` on this machine's cores, started once
per process and reused by later runs, e.g. in a notebook), or joins a running cluster
(``address="auto"`` or ``"ray://host:port"``). Each job is a Ray task that declares its
resources (CPU threads, a GPU for a CUDA device) and is retried ``max_retries`` times when
its worker dies; a checkpointing job then resumes from its last checkpoint. On a cluster
every node must reach the run's output folder (a shared filesystem path) and have the
same ``sharp`` installed.

One progress bar counts the tokens done over all jobs: workers report to a small Ray
actor that the driver reads while it waits. Stopping the driver (Ctrl-C, SIGTERM) cancels
every task and kills its worker; the embedded cluster stops with the driver.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sharp.runs.progress import tqdm

Item = TypeVar("Item")
Result = TypeVar("Result")
#: A job function: ``function(item, report)``, where ``report(n)`` says n more units
#: (tokens, runs) are done.
JobFunction = Callable[[Item, Callable[[int], None]], Result]


@dataclass(frozen=True)
class Executor:
    """How jobs run. ``workers`` = 1 without ``address``: one after another in this
    process (no Ray start-up cost, about 10 s on a loaded 2-core machine). Otherwise Ray
    tasks: on an embedded local cluster of ``workers`` × the jobs' threads CPUs, or on the
    cluster at ``address`` (then ``workers`` is unused: the cluster's resources decide).
    ``resources`` are Ray custom resources every task requires (e.g. ``{"node2": 1}``);
    ``max_retries`` how often a task whose worker died is run again.

    Raises ValueError for ``workers`` < 1 or ``max_retries`` < 0."""

    workers: int = 1
    address: str | None = None
    resources: Mapping[str, float] = field(default_factory=dict)
    max_retries: int = 3

    def __post_init__(self) -> None:
        if self.workers < 1 or self.max_retries < 0:
            raise ValueError(f"workers must be >= 1 and max_retries >= 0, got {self.workers} "
                             f"and {self.max_retries}")

    @property
    def uses_ray(self) -> bool:
        """Whether jobs run as Ray tasks."""
        return self.address is not None or self.workers > 1


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Start the embedded local Ray (``num_cpus`` logical CPUs, no dashboard; its workers
    import this process's ``sharp``), or join the cluster at ``address``; nothing when
    this process already runs Ray. Raises ConnectionError when no cluster answers at
    ``address``."""
    import ray

    if ray.is_initialized():
        return
    main_thread = threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGTERM) if main_thread else None
    if address is None:
        # the local workers inherit this environment: make them import this sharp (a
        # runtime_env would cost ~10 s more to start them)
        here = str(Path(__file__).resolve().parents[2])
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (here, os.environ.get("PYTHONPATH")) if p)
        ray.init(num_cpus=num_cpus, include_dashboard=False)
    else:
        ray.init(address=address)
    if main_thread:  # ray.init replaces it; the caller's handler decides how a run stops
        signal.signal(signal.SIGTERM, handler)


class _Counter:
    """Units done, reported by the workers (a Ray actor)."""

    def __init__(self) -> None:
        self.done = 0

    def add(self, units: int) -> None:
        """Count ``units`` more."""
        self.done += units

    def read(self) -> int:
        """Units counted so far."""
        return self.done


def _call(function: JobFunction, item: Any, counter: Any) -> Any:
    """A Ray task: run ``function(item, report)``, reporting to the ``counter`` actor."""
    return function(item, lambda units: counter.add.remote(units))


def run_tasks(
    function: JobFunction,
    items: Sequence[Item],
    executor: Executor,
    *,
    cpus: Callable[[Item], float] = lambda item: 1.0,
    gpus: Callable[[Item], float] = lambda item: 0.0,
    total: int,
    initial: int = 0,
    progress: bool = True,
    description: str = "jobs",
    unit: str = "tok",
    on_result: Callable[[int, Result], None] | None = None,
) -> list[Result]:
    """Run ``function(item, report)`` for every item and return the results in item
    order; ``on_result(i, result)`` is called as each finishes (in finishing order).

    One progress bar counts ``total`` units, ``initial`` of them done before (resumed
    jobs), advanced by the jobs' ``report`` calls. Under Ray each task requests
    ``cpus(item)`` CPUs and ``gpus(item)`` GPUs plus the executor's ``resources``. An
    exception raised by a job is raised here (under Ray as a ``RayTaskError`` that is
    also an instance of the job's exception class); any exception, Ctrl-C included,
    cancels the tasks still running and kills their workers.
    """
    bar = tqdm(total=total, initial=initial, desc=description, disable=not progress,
               unit=unit, unit_scale=total >= 10_000, smoothing=0.05, mininterval=1.0)
    results: list[Any] = [None] * len(items)
    try:
        if not executor.uses_ray:
            for i, item in enumerate(items):
                results[i] = function(item, bar.update)
                if on_result is not None:
                    on_result(i, results[i])
            return results
        _run_on_ray(function, items, executor, cpus, gpus, bar, results, on_result)
        return results
    finally:
        bar.close()


def _run_on_ray(function: JobFunction, items: Sequence[Any], executor: Executor,
                cpus: Callable[[Any], float], gpus: Callable[[Any], float], bar: Any,
                results: list[Any], on_result: Callable[[int, Any], None] | None) -> None:
    import ray

    threads = max((cpus(item) for item in items), default=1.0)
    init_ray(executor.address, int(executor.workers * max(threads, 1)))
    counter = ray.remote(num_cpus=0)(_Counter).remote()
    task = ray.remote(_call)
    refs = {
        task.options(num_cpus=cpus(item), num_gpus=gpus(item),
                     resources=dict(executor.resources), max_retries=executor.max_retries,
                     retry_exceptions=False).remote(function, item, counter): i
        for i, item in enumerate(items)
    }
    pending = list(refs)
    start = bar.n
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=0.5)
            for ref in ready:
                i = refs[ref]
                results[i] = ray.get(ref)
                if on_result is not None:
                    on_result(i, results[i])
            bar.update(start + ray.get(counter.read.remote()) - bar.n)
        bar.update(bar.total - bar.n)  # reports still in flight when the last job ended
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    finally:
        ray.kill(counter)
