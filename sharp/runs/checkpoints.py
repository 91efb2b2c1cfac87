"""Atomic writes and learner checkpoints: nothing saved is ever left half-written."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch

from sharp.protocol import Learner
from sharp.runs.registry import LearnerSpec, build_learner


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it onto ``path`` atomically
    (with the umask's permissions). On any error the temporary file is removed, so
    ``path`` is never left partial."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        tmp.chmod(0o666 & ~_umask())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def save_checkpoint(learner: Learner, path: str | os.PathLike) -> Path:
    """Save ``learner.state_dict()`` atomically; :func:`load_checkpoint` rebuilds it."""
    with atomic_path(path) as tmp:
        torch.save(learner.state_dict(), tmp)
    return Path(path)


def load_checkpoint(path: str | os.PathLike) -> Learner:
    """A learner rebuilt from a checkpoint's own config and restored bit-exactly."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(state, dict) or "kind" not in state or "config" not in state:
        raise ValueError(f"{path} is not a sharp learner checkpoint")
    learner = build_learner(LearnerSpec(state["kind"], state["config"]))
    learner.load_state_dict(state)
    return learner
