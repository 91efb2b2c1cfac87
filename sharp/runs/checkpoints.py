"""Atomic writes and learner checkpoints: nothing saved is ever left half-written."""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sharp.config import ConfigError, check_instance
from sharp.engines.runtime import check_device, device_available
from sharp.protocol import Learner
from sharp.runs.registry import build_from_state

if TYPE_CHECKING:
    from sharp.baselines.ensemble import BaselineEnsemble
    from sharp.engines.ensemble import SharpEnsemble


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it onto ``path`` atomically
    (with the umask's permissions). On any error the temporary file is removed, so
    ``path`` is never left partial. Raises IsADirectoryError, before anything is written,
    when ``path`` is an existing folder."""
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give the path of a file to write "
                                "(e.g. one inside it)")
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


def save_checkpoint(learner: Learner | SharpEnsemble | BaselineEnsemble,
                    path: str | os.PathLike) -> Path:
    """Save ``learner.state_dict()`` (a learner's or an ensemble's) atomically;
    :func:`load_checkpoint` rebuilds it. Raises TypeError for anything but a learner or an
    ensemble, and if the state holds anything ``torch.load(weights_only=True)`` would
    refuse (see :func:`plain`), IsADirectoryError when ``path`` is a folder
    (:func:`atomic_path`); nothing is written then."""
    check_instance(learner, Learner, "save_checkpoint", "sharp.Sharp(sharp.preset('quick'))")
    state = plain(learner.state_dict())
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_checkpoint(path: str | os.PathLike, device: str | None = None,
                    input_table: str | os.PathLike | None = None
                    ) -> Learner | SharpEnsemble | BaselineEnsemble:
    """A learner (or an ensemble, with its seeds) rebuilt from a checkpoint's own config
    and restored bit-exactly.

    ``device`` (e.g. ``"cpu"``, ``"cuda"``, ``"auto"``) overrides the saved config's
    device; one this machine does not have raises :class:`~sharp.config.ConfigError`
    (:func:`~sharp.engines.runtime.check_device`) before the file is read. By default the
    saved device is kept when this machine has it, else the learner runs on the CPU, with
    a RuntimeWarning saying so. ``input_table`` overrides where a learner with dense
    inputs reads its frozen table (a model folder moved since it was saved; the table must
    be the one saved with, checked by its digest). The file is read with
    ``torch.load(weights_only=True)``: no code in it is run. Raises
    :class:`CheckpointError` naming the path and what is wrong for a file that is empty,
    truncated or not a sharp checkpoint, that lacks an entry, holds an invalid or partial
    config, or weights that do not match its config (whatever the damage) or its frozen
    input table; FileNotFoundError / PermissionError for a file that cannot be opened
    (FileNotFoundError also for a model folder to place, saying which); TypeError for an
    ``input_table`` that is not a path (a table in memory is not what it checks against).
    """
    if device is not None:
        check_device(device)
    if input_table is not None and not isinstance(input_table, str | os.PathLike):
        raise TypeError(f"input_table is the path of a model folder or .safetensors file "
                        f"holding the table the learner was saved with, not a "
                        f"{type(input_table).__name__}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except Exception as error:  # a damaged file can fail anywhere in the unpickler
        raise CheckpointError(
            f"{path} cannot be read as a checkpoint: it is empty, truncated or not a sharp "
            f"learner checkpoint ({_load_failure(error)})"
        ) from error
    if (not isinstance(state, dict) or "kind" not in state
            or not isinstance(state.get("config"), dict)):
        raise CheckpointError(f"{path} is not a sharp learner checkpoint")
    config = dict(state["config"])
    saved = config.get("device", "auto")
    if input_table is not None:
        config["input_table"] = os.fspath(input_table)
    if device is not None:
        config["device"] = device
    elif not device_available(saved):
        warnings.warn(f"{path} was saved on device {saved!r}, which this machine does not "
                      "have; loading it on the CPU (pass device=... to choose)",
                      RuntimeWarning, stacklevel=2)
        config["device"] = "cpu"
    try:
        return _restore({**state, "config": config}, path)
    except CheckpointError:
        raise
    except KeyError as error:
        raise CheckpointError(f"{path} is damaged: it lacks the entry {error}") from error
    except ConfigError as error:
        raise CheckpointError(f"{path} holds an invalid config: {error}") from error
    except RuntimeError as error:  # torch: a tensor of another shape than the config's
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        more = f"; and {len(lines) - 2} more" if len(lines) > 2 else ""
        raise CheckpointError(f"{path}: its weights do not match its config "
                              f"({' '.join(lines[:2])}{more})") from error
    except (ValueError, TypeError, IndexError, AttributeError) as error:
        raise CheckpointError(f"{path} cannot be restored: {error}") from error


def _load_failure(error: Exception) -> str:
    """What ``torch.load(weights_only=True)`` found wrong, in one line. For pickled data
    it refuses (objects other than tensors and plain data, e.g. code), the first sentence
    of torch's text saying what it refused: the rest suggests ``weights_only=False`` or
    allow-listing the object, which would run code from the file, never to be done for a
    checkpoint of unknown origin.
    Otherwise the error's type and first line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if lines and lines[0].startswith("Weights only load failed"):
        refused = [line.removeprefix("WeightsUnpickler error:").split(". ")[0].strip()
                   for line in lines[1:] if "weights_only" not in line
                   and not line.startswith(("Check the documentation", "Please file"))]
        said = "; ".join(line.rstrip(".") for line in refused if line) or "see torch.load"
        return (f"it holds pickled data a checkpoint never holds (torch refused: {said}); it "
                "was not loaded, and no code in it was run")
    return f"{type(error).__name__}: {lines[0] if lines else 'no data'}"


def _restore(state: dict[str, Any], path: str | os.PathLike
             ) -> Learner | SharpEnsemble | BaselineEnsemble:
    """The learner or ensemble of ``state`` (a checkpoint's, ``config`` already set for
    this machine), built and loaded; what goes wrong raises as it comes (KeyError,
    ConfigError, torch's RuntimeError, ...) for :func:`load_checkpoint` to name, and
    :class:`CheckpointError` for a config that lacks fields."""
    learner = build_from_state(state)
    missing = sorted(set(learner.config.to_dict()) - set(state["config"]))
    if missing:
        raise CheckpointError(f"{path} holds a partial config: it lacks the fields {missing}")
    learner.load_state_dict(state)
    return learner
