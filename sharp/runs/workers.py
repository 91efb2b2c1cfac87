"""Worker processes that never outlive the run: a stopped or killed main process takes
every worker with it (no orphans), and Ctrl-C is left to the main process."""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor


def _exit_with_parent(sentinel: int) -> None:
    multiprocessing.connection.wait([sentinel])
    os._exit(1)


def _init_worker() -> None:
    """In each worker: leave SIGINT to the main process (a terminal's Ctrl-C reaches the
    whole process group) and exit as soon as the main process is gone, however it died."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with_parent, args=(parent.sentinel,), daemon=True).start()


@contextlib.contextmanager
def worker_pool(workers: int) -> Iterator[ProcessPoolExecutor]:
    """A pool of ``workers`` spawned processes that never outlives the run.

    Workers exit when the main process dies. If the body raises anything (an error, a
    ``KeyboardInterrupt`` from Ctrl-C or from the CLI's SIGTERM handler), queued jobs are
    cancelled and running workers terminated at once, instead of waiting for them."""
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker)
    try:
        yield pool
    except BaseException:
        # ProcessPoolExecutor has no public way to stop running workers before Python 3.14
        processes = list((pool._processes or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()
        for process in processes:
            process.join()
        raise
    pool.shutdown()
