"""Console output. Progress bars: tqdm's widgets in Jupyter and text bars elsewhere, and text
bars in a notebook run headlessly with ``SHARP_PROGRESS=text`` (what
:func:`sharp.explore.notebooks.execute_notebook` sets when it relays the kernel's stderr to the
terminal, where a widget would show nothing). Warnings: one line each under a ``sharp``
command (:func:`one_line_warnings`), in its Ray workers too (:func:`worker_warnings`)."""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator
from typing import Any, TextIO

from tqdm import std
from tqdm.auto import tqdm as auto_tqdm

#: The environment variable naming the running ``sharp`` command, which the local Ray
#: workers inherit (:func:`worker_warnings`).
COMMAND_VARIABLE = "SHARP_COMMAND"

#: The command whose warnings this process prints as one line (None: Python's warnings).
_command: str | None = None


def tqdm(*args: Any, **kwargs: Any) -> std.tqdm:
    """A tqdm bar of the kind this process should show (see the module docstring)."""
    if os.environ.get("SHARP_PROGRESS") == "text":
        kwargs.setdefault("mininterval", 2.0)  # the relayed text is also kept in the notebook
        return std.tqdm(*args, **kwargs)
    return auto_tqdm(*args, **kwargs)


@contextlib.contextmanager
def one_line_warnings(command: str) -> Iterator[None]:
    """Within it, every warning (e.g. a damaged checkpoint, book slices that coincide) is
    printed once, as one line ``sharp <command>: warning: <message>`` on stderr (above any
    progress bar), without the source line Python adds; the Python API keeps Python's own
    warnings. ``command`` is also set in :data:`COMMAND_VARIABLE` while it runs, for the
    local Ray workers started meanwhile."""
    global _command
    shown: set[str] = set()

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: TextIO | None = None, line: str | None = None) -> None:
        text = f"sharp {command}: warning: {' '.join(str(message).split())}"
        if text not in shown:
            shown.add(text)
            std.tqdm.write(text, file=sys.stderr if file is None else file)

    previous, outer = os.environ.get(COMMAND_VARIABLE), _command
    os.environ[COMMAND_VARIABLE], _command = command, command
    try:
        with warnings.catch_warnings():
            warnings.showwarning = show
            yield
    finally:
        _command = outer
        if previous is None:
            os.environ.pop(COMMAND_VARIABLE, None)
        else:
            os.environ[COMMAND_VARIABLE] = previous


def worker_warnings() -> contextlib.AbstractContextManager[None]:
    """What a job wraps itself in: in a Ray worker of a ``sharp`` command (the variable
    :data:`COMMAND_VARIABLE` inherited, no command running in this process), the command's
    one-line warnings (:func:`one_line_warnings`); anywhere else nothing changes."""
    command = os.environ.get(COMMAND_VARIABLE)
    if command is None or _command is not None:
        return contextlib.nullcontext()
    return one_line_warnings(command)
