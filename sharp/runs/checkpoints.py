"""Atomic writes and learner checkpoints: nothing saved is ever left half-written."""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sharp.engines.runtime import device_available
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


class CheckpointError(ValueError):
    """A file that cannot be read as a sharp learner checkpoint."""


#: What a checkpoint may hold: what ``torch.load(weights_only=True)`` reads back.
PLAIN = (torch.Tensor, str, bytes, int, float, bool, type(None))


def plain(value: Any, where: str = "state") -> Any:
    """``value`` with numpy scalars turned into Python numbers, checked to hold only
    tensors, dicts, lists, tuples, numbers, strings and None (what
    ``torch.load(weights_only=True)`` loads). Raises TypeError naming the first entry
    that is something else (e.g. a dataclass or a numpy array)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, PLAIN):
        return value
    if isinstance(value, dict):
        return type(value)((k, plain(v, f"{where}[{k!r}]")) for k, v in value.items())
    if isinstance(value, list | tuple):
        return type(value)(plain(v, f"{where}[{i}]") for i, v in enumerate(value))
    raise TypeError(f"{where} is a {type(value).__name__}; a checkpoint holds only tensors, "
                    "dicts, lists, tuples, numbers and strings")


def save_checkpoint(learner: Learner, path: str | os.PathLike) -> Path:
    """Save ``learner.state_dict()`` atomically; :func:`load_checkpoint` rebuilds it.
    Raises TypeError if the state holds anything ``torch.load(weights_only=True)``
    would refuse (see :func:`plain`); nothing is written then."""
    state = plain(learner.state_dict())
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_checkpoint(path: str | os.PathLike, device: str | None = None) -> Learner:
    """A learner rebuilt from a checkpoint's own config and restored bit-exactly.

    ``device`` (e.g. ``"cpu"``, ``"cuda"``, ``"auto"``) overrides the saved config's
    device. By default the saved device is kept when this machine has it, else the
    learner runs on the CPU, with a RuntimeWarning saying so. The file is read with
    ``torch.load(weights_only=True)``: no code in it is run. Raises
    :class:`CheckpointError` for a file that is empty, truncated or not a sharp
    checkpoint (whatever the damage), FileNotFoundError / PermissionError for a file that
    cannot be opened.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except Exception as error:  # a damaged file can fail anywhere in the unpickler
        raise CheckpointError(
            f"{path} cannot be read as a checkpoint: it is empty, truncated or not a sharp "
            f"learner checkpoint ({type(error).__name__}: {error})"
        ) from error
    if not isinstance(state, dict) or "kind" not in state or "config" not in state:
        raise CheckpointError(f"{path} is not a sharp learner checkpoint")
    config = dict(state["config"])
    saved = config.get("device", "auto")
    if device is not None:
        config["device"] = device
    elif not device_available(saved):
        warnings.warn(f"{path} was saved on device {saved!r}, which this machine does not "
                      "have; loading it on the CPU (pass device=... to choose)",
                      RuntimeWarning, stacklevel=2)
        config["device"] = "cpu"
    learner = build_learner(LearnerSpec(state["kind"], config))
    learner.load_state_dict(state)
    return learner
