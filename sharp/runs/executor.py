"""Where a run's jobs run: in this process (one worker, no cluster), or as Ray tasks.

Ray is embedded and local by default (a new ``ray.init`` of this process's own on this
machine's cores, whatever ``RAY_ADDRESS`` says, started once per process and reused by
later runs, e.g. in a notebook), or joins a running cluster (``address="auto"`` or
``"HOST:PORT"``; not Ray Client's ``ray://``). Each job is a Ray task that declares its
resources (CPU threads, a GPU for a CUDA device) and is retried ``max_retries`` times when
its worker dies; a checkpointing job then resumes from its last checkpoint. On a cluster
every node must reach the run's output folder (a shared filesystem path) and have the
same ``sharp`` installed.

One progress bar counts the tokens done over all jobs: workers report to a small Ray
actor that the driver reads while it waits. Stopping the driver (Ctrl-C, SIGTERM) cancels
every task and kills its worker, also while Ray starts; the embedded cluster stops with
the driver.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
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
    this process already runs Ray for the same ``address`` (Ray that :func:`init_ray`
    started for another one is shut down first).

    Without ``address`` a new Ray of this process's own always starts (``ray.init``'s
    ``address="local"``): neither ``RAY_ADDRESS`` nor a cluster started on this machine
    with ``ray start`` (``/tmp/ray/ray_current_cluster``) is joined. ``address`` is
    ``auto`` (the cluster ``RAY_ADDRESS`` or ``ray start`` on this machine names) or
    ``HOST:PORT`` (the head's GCS port); it is probed over TCP before Ray connects, so that
    an address where nothing answers fails in seconds.

    SIGINT and SIGTERM are deferred while Ray starts (``ray.init`` would otherwise replace
    the caller's SIGTERM handler, and either signal would stop it halfway, orphaning the
    Ray processes started so far): one received meanwhile stops Ray once started, then
    goes to the caller's handler (sharp's CLI: a KeyboardInterrupt); KeyboardInterrupt is
    raised if that handler returns. No Ray process is left.

    Raises ValueError for a ``ray://`` address (Ray Client is not supported) or one that
    is neither ``auto`` nor ``HOST:PORT``; ConnectionError when no cluster is found or
    answers at ``address``, or Ray fails to connect (saying what to check)."""
    import ray

    if ray.is_initialized():
        if _STARTED.get("address", address) == address:
            return
        ray.shutdown()  # this process's Ray is another cluster's or the embedded one
    _STARTED.clear()
    if address is None:
        # the local workers inherit this environment: make them import this sharp (a
        # runtime_env would cost ~10 s more to start them)
        here = str(Path(__file__).resolve().parents[2])
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (here, os.environ.get("PYTHONPATH")) if p)
        _start_ray(lambda: ray.init(address="local", num_cpus=num_cpus,
                                    include_dashboard=False))
    else:
        probe_cluster(address)
        try_join(address)
        try:  # auto as given: Ray then takes a local cluster's token as it finds it
            _start_ray(lambda: ray.init(address=address))
        except ConnectionError as error:
            raise ConnectionError(f"could not join the Ray cluster at {address} ({error})"
                                  f"{_token_hint()}") from error
    _STARTED["address"] = address


def _token_hint() -> str:
    """What a failed join adds about token authentication (nothing where it is set)."""
    return ("" if os.environ.get("RAY_AUTH_MODE") == "token" else
            "; if the head uses token authentication, set RAY_AUTH_MODE=token (and its "
            "token in RAY_AUTH_TOKEN or ~/.ray/auth_token) and run again")


#: Seconds :func:`try_join` gives a trial join.
JOIN_SECONDS = 60.0


def try_join(address: str, timeout: float = JOIN_SECONDS) -> None:
    """Join the Ray cluster at ``address`` once in a child process, which is killed after
    ``timeout`` seconds: something that answers over TCP but is not a Ray head's GCS port
    (a dashboard, a Ray Client port, another service) makes ``ray.init`` retry for many
    minutes, deaf to Ctrl-C; here it fails in ``timeout`` seconds and a stop signal stops
    the trial at once. Raises ConnectionError saying what to check."""
    code = f"import ray; ray.init(address={address!r}, log_to_driver=False)"
    try:
        trial = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise ConnectionError(
            f"no Ray cluster answered at {address} within {timeout:.0f} s, though something "
            "listens there: give the head's GCS port (6379 by default; not the dashboard's "
            f"8265 or Ray Client's 10001){_token_hint()}") from None
    if trial.returncode:
        lines = [line for line in trial.stderr.splitlines() if line.strip()]
        raise ConnectionError(f"could not join the Ray cluster at {address} "
                              f"({lines[-1].strip() if lines else 'no message'})"
                              f"{_token_hint()}")


#: The ``address`` :func:`init_ray` last started or joined Ray with (None: embedded).
_STARTED: dict[str, str | None] = {}


def join_cluster(address: str) -> dict[str, Any]:
    """Join the Ray cluster at ``address`` (:func:`init_ray`) and return where it is and how
    big, as Ray reports them: ``{"address": HOST:PORT (also for auto), "cluster_cpus":
    CPUs}``. Raises what :func:`init_ray` raises."""
    import ray

    init_ray(address)
    return {"address": ray.get_runtime_context().gcs_address,
            "cluster_cpus": float(ray.cluster_resources().get("CPU", 0.0))}


def check_address(address: str, given: str = "--address") -> None:
    """Refuse, before any work, a cluster address :func:`init_ray` cannot join: a Ray
    Client address (``ray://``; its ``ray[client]`` extra is not installed, and a driver on
    a node of the cluster does the same), or one that is neither ``auto`` nor
    ``HOST:PORT``. Raises ValueError naming where it was ``given`` and what to give
    instead."""
    if "://" in address:
        raise ValueError(f"{given} {address}: Ray Client (ray://) is not supported; run "
                         "sharp on a node of the cluster with --address auto or --address "
                         "HEAD:6379 (the head's GCS port)")
    host, _, port = address.rpartition(":")
    if address != "auto" and (not host or not port.isdigit()):
        raise ValueError(f"{given} {address!r} must be auto or HOST:PORT (the head's GCS "
                         "port, 6379 by default)")


def probe_cluster(address: str, timeout: float = 5.0) -> None:
    """Check that something answers, within ``timeout`` seconds over TCP, at the Ray
    cluster ``address`` names (``auto``: the one ``RAY_ADDRESS`` or ``ray start`` on this
    machine names), so that joining nothing fails in seconds rather than Ray's minutes.

    Raises ValueError for a ``ray://`` address or one that is neither ``auto`` nor
    ``HOST:PORT``; ConnectionError when ``auto`` finds no cluster or nothing answers."""
    check_address(address)
    if address == "auto" and os.environ.get("RAY_ADDRESS"):  # what auto stands for
        check_address(os.environ["RAY_ADDRESS"], "RAY_ADDRESS (taken by --address auto)")
    if address == "auto":
        # Ray's own resolution of "auto" (RAY_ADDRESS, then the `ray start` of this machine)
        from ray._private.services import canonicalize_bootstrap_address

        try:
            resolved = canonicalize_bootstrap_address("auto")
        except ConnectionError as error:
            raise ConnectionError("--address auto found no running Ray cluster (RAY_ADDRESS "
                                  "is unset and no `ray start` runs on this machine): start "
                                  "one, or give --address HEAD:PORT") from error
        address = resolved or address
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as error:
        raise ConnectionError(
            f"no Ray cluster answers at {address} ({error.strerror or error}): check that "
            f"`ray start --head --port {port}` runs on {host} and that this machine reaches "
            "it") from error


#: The signals that stop a run; deferred while Ray starts.
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _start_ray(start: Callable[[], object]) -> None:
    """Run ``start`` (a ``ray.init``) with the stop signals deferred: one received meanwhile
    stops Ray once it has started, then goes to the caller's handler (sharp's CLI turns
    SIGTERM into a KeyboardInterrupt), and a KeyboardInterrupt is raised if that handler
    returns. ``ray.init`` would install its own SIGTERM handler (an exit mid-start, which
    orphans the Ray processes started so far); the caller's handlers are kept instead.
    Raises what ``start`` raised, or KeyboardInterrupt."""
    import ray
    import ray._private.utils as ray_utils

    if threading.current_thread() is not threading.main_thread():
        start()  # only the main thread receives signals, and ray.init leaves them alone
        return
    received: list[int] = []
    handlers = {number: signal.getsignal(number) for number in _STOP_SIGNALS}
    deferred = [number for number, handler in handlers.items()
                if handler not in (None, signal.SIG_IGN)]  # an ignored signal stays ignored
    install = ray_utils.set_sigterm_handler
    ray_utils.set_sigterm_handler = lambda handler: None  # ray.init's, looked up per call
    try:
        for number in deferred:
            signal.signal(number, lambda number, frame: received.append(number))
        start()
    finally:
        ray_utils.set_sigterm_handler = install
        if received:
            ray.shutdown()
        for number in deferred:  # after Ray's start and stop, which set C-level handlers
            signal.signal(number, handlers[number])
        if received:
            signal.raise_signal(received[0])
            raise KeyboardInterrupt(signal.Signals(received[0]).name)


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
