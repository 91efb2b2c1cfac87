"""Progress bars: tqdm's widgets in Jupyter and text bars elsewhere, and text bars in a
notebook run headlessly with ``SHARP_PROGRESS=text`` (what
:func:`sharp.explore.notebooks.execute_notebook` sets when it relays the kernel's stderr to the
terminal, where a widget would show nothing)."""

from __future__ import annotations

import os
from typing import Any

from tqdm import std
from tqdm.auto import tqdm as auto_tqdm


def tqdm(*args: Any, **kwargs: Any) -> std.tqdm:
    """A tqdm bar of the kind this process should show (see the module docstring)."""
    if os.environ.get("SHARP_PROGRESS") == "text":
        kwargs.setdefault("mininterval", 2.0)  # the relayed text is also kept in the notebook
        return std.tqdm(*args, **kwargs)
    return auto_tqdm(*args, **kwargs)
