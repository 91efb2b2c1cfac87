"""One run per output folder at a time: an OS advisory lock (``fcntl.flock``) on
``<out>/.sharp.lock``, held for the run's life. The kernel releases it when the holder
ends, however it ends (SIGKILL included), so a killed run never blocks its resume; the
file stays (it is never the lock itself) and records who holds it, for the refusal.

A process holding the lock exports a token in :data:`LOCKS_VARIABLE`; its children (the
notebook kernel papermill starts for ``sharp bench``) inherit it, and their own
:func:`run_folder_lock` on that folder passes without locking again."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from sharp.runs.outputs import check_output_folder

#: The lock file's name inside a run folder.
LOCK_FILE = ".sharp.lock"
#: Environment variable holding ``{folder: token}`` of the locks this process (or an
#: ancestor) holds, as JSON.
LOCKS_VARIABLE = "SHARP_RUN_LOCKS"


class FolderBusy(RuntimeError):
    """Another live process is running a command on the output folder."""


def _held() -> dict[str, str]:
    """The locks this process inherited or took: folder -> token."""
    try:
        held = json.loads(os.environ.get(LOCKS_VARIABLE, "{}"))
    except ValueError:
        return {}
    return held if isinstance(held, dict) else {}


def _holder(handle: int) -> dict[str, object]:
    """What the lock file behind ``handle`` says about its holder ({} if unreadable)."""
    try:
        text = os.pread(handle, 4096, 0).decode()
        holder = json.loads(text)
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _refusal(out: Path, holder: dict[str, object], option: str) -> str:
    """The one-line refusal naming the holder."""
    where = ("" if holder.get("host") in (None, socket.gethostname())
             else f" on {holder['host']}")
    who = (f"{holder.get('command', 'sharp')} (pid {holder.get('pid', '?')}{where}, started "
           f"{holder.get('started', '?')})")
    return (f"{out}: another {who} is running on this folder; wait for it or use another "
            f"{option}")


@contextlib.contextmanager
def run_folder_lock(out: str | os.PathLike, command: str, option: str = "--out"
                    ) -> Iterator[Path]:
    """Hold the run lock of the output folder ``out`` (created if missing) for the block;
    ``command`` (e.g. ``"sharp bench"``) is recorded for a refused process's message, and
    ``option`` names the folder's option there. Passes without locking again where this
    process or an ancestor already holds it (:data:`LOCKS_VARIABLE`). Yields the folder.

    Raises :class:`FolderBusy` (a RuntimeError: "another sharp bench (pid N, started ...)
    is running on this folder; wait for it or use another --out") when another process
    holds it, and what :func:`~sharp.runs.outputs.check_output_folder` raises
    (FileExistsError, PermissionError) when ``out`` cannot be a folder."""
    out = check_output_folder(out, option)
    key = str(out.resolve())
    held = _held()
    out.mkdir(parents=True, exist_ok=True)
    handle = os.open(out / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(handle)
            if key not in held or holder.get("token") != held[key]:
                raise FolderBusy(_refusal(out, holder, option)) from None
        else:
            holder = {}
        if holder:  # an ancestor's lock (the kernel of sharp bench's notebook): already held
            yield out
            return
        token = secrets.token_hex(8)
        started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        record = json.dumps({"command": command, "pid": os.getpid(),
                             "host": socket.gethostname(), "started": started,
                             "token": token}).encode()
        os.ftruncate(handle, 0)
        os.pwrite(handle, record, 0)
        previous = os.environ.get(LOCKS_VARIABLE)
        os.environ[LOCKS_VARIABLE] = json.dumps({**held, key: token})
        try:
            yield out
        finally:
            if previous is None:
                os.environ.pop(LOCKS_VARIABLE, None)
            else:
                os.environ[LOCKS_VARIABLE] = previous
            os.ftruncate(handle, 0)
    finally:
        os.close(handle)  # releases the lock
