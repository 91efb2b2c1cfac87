"""The invocations of one run: a run that resumes is started several times (after a crash,
a SIGKILL, or again once finished), each time perhaps with other speed settings (threads,
workers), so its record keeps every invocation and its report states the total wall time
over them, not the last invocation's alone."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

#: The environment variable through which a command that hands its work to another
#: process (``sharp bench --notebook``: notebook 05's kernel runs ``run_bench``) makes
#: that process's :class:`Invocation` its own: ``"PID START"``, the command's pid and Unix
#: start time (:func:`hand_over`).
HANDED_OVER = "SHARP_INVOCATION"


def hand_over(clock: float) -> dict[str, str]:
    """The environment entry (:data:`HANDED_OVER`) for a process that does this process's
    work, which started at ``clock`` (a :func:`time.perf_counter` reading): its invocation
    is then recorded with this process's pid and start, and its wall time counted from
    there."""
    return {HANDED_OVER: f"{os.getpid()} {time.time() - (time.perf_counter() - clock)!r}"}


class Invocation:
    """This process's invocation of a run, started when it is built (or, where a command
    handed its work over, :data:`HANDED_OVER`, the command's): its ``command``, UTC
    start time, pid, host and ``settings`` (how it runs: threads, workers, ...);
    :meth:`record` adds the wall seconds so far, counted from ``clock`` (a
    :func:`time.perf_counter` reading of when its work began; default: now)."""

    def __init__(self, command: str, clock: float | None = None, **settings: Any) -> None:
        self._clock = time.perf_counter() if clock is None else clock
        pid, started = os.getpid(), time.time() - (time.perf_counter() - self._clock)
        handed = os.environ.get(HANDED_OVER)
        if handed:  # the work of a command that started earlier, in another process
            pid, started = int(handed.split()[0]), float(handed.split()[1])
            self._clock = time.perf_counter() - (time.time() - started)
        self._record: dict[str, Any] = {
            "command": command,
            "started": datetime.fromtimestamp(started, UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
            "pid": pid, "host": socket.gethostname(), **settings}

    @property
    def seconds(self) -> float:
        """Wall seconds since this invocation started."""
        return time.perf_counter() - self._clock

    def record(self, *, ended: bool = False) -> dict[str, Any]:
        """This invocation as its run's record keeps it: the fields above, ``wall_seconds``
        so far and whether it ``ended`` (False while it runs; an invocation killed before its
        end keeps the wall seconds of its last record)."""
        return {**self._record, "wall_seconds": round(self.seconds, 3), "ended": ended}


def previous_invocations(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The invocations a run's record (``run.json``, ``NAME.json``) holds; none for a
    record without them."""
    invocations = record.get("invocations")
    return [dict(item) for item in invocations] if isinstance(invocations, list) else []


def total_seconds(invocations: Sequence[Mapping[str, Any]]) -> float:
    """The wall seconds of every invocation, summed."""
    return sum(float(item.get("wall_seconds") or 0.0) for item in invocations)


def wall_time_words(invocations: Sequence[Mapping[str, Any]]) -> str:
    """``"wall time 30.4 s"`` for one invocation; for several, the total and each
    (``"wall time 30.4 s over 2 invocations: 30.2 s + 0.2 s"``), "at least" where an
    earlier one was stopped before it recorded its end (its time counts to its last
    record), saying how many were."""
    total = total_seconds(invocations)
    if len(invocations) == 1:
        return f"wall time {total:.1f} s"
    each = " + ".join(f"{float(item.get('wall_seconds') or 0.0):.1f} s" for item in invocations)
    killed = sum(not item.get("ended") for item in invocations[:-1])
    if not killed:
        return f"wall time {total:.1f} s over {len(invocations)} invocations: {each}"
    return (f"wall time at least {total:.1f} s over {len(invocations)} invocations: {each} "
            f"({killed} stopped before recording its end, counted to its last record)")
