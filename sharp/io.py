"""Atomic writes and learner checkpoints: nothing saved is ever left half-written."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

from sharp.learners import LearnerSpec, build_learner
from sharp.protocol import Learner


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write`` on a temporary file next to ``path``, then rename it into place."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def save_checkpoint(learner: Learner, path: str | os.PathLike) -> Path:
    """Save ``learner.state_dict()`` atomically; :func:`load_checkpoint` rebuilds it."""
    state = learner.state_dict()
    return atomic_write(path, lambda handle: torch.save(state, handle))


def load_checkpoint(path: str | os.PathLike) -> Learner:
    """A learner rebuilt from a checkpoint's own config and restored bit-exactly."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(state, dict) or "kind" not in state or "config" not in state:
        raise ValueError(f"{path} is not a sharp learner checkpoint")
    learner = build_learner(LearnerSpec(state["kind"], state["config"]))
    learner.load_state_dict(state)
    return learner
