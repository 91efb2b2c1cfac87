"""Output folders checked before any work starts, and the guard that keeps one run from
silently replacing the files of another (the rule of ``sharp bench``, for every command
that writes results: ``sharp experiment``, ``sharp throughput``, ``sharp reference``)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any


def check_output_folder(out: str | os.PathLike, option: str = "--out") -> Path:
    """``out`` as a Path, checked to be a folder this process can create or write into.

    Raises ValueError for an empty path, FileExistsError when ``out`` or one of its parents
    is a file (a folder is needed there), PermissionError when no folder can be made in the
    nearest existing folder (read-only, or a system folder such as /proc; the reason given);
    every message names ``option`` and ``out``. Leaves nothing behind (the folder that
    probes the nearest existing one is removed)."""
    if not os.fspath(out).strip():
        raise ValueError(f"{option} is empty; give an output folder's path (e.g. {option} "
                         "reports/run)")
    out = Path(out).expanduser()
    for path in (out, *out.parents):
        if path.exists():
            if not path.is_dir():
                where = "" if path == out else f" (in {out})"
                raise FileExistsError(f"{option} {out}: {path} is a file{where}, but {option} "
                                      "needs a folder; give a folder's path")
            try:
                os.rmdir(tempfile.mkdtemp(prefix=".sharp-probe-", dir=path))
            except OSError as error:
                raise PermissionError(f"{option} {out}: cannot make a folder in {path} "
                                      f"({error.strerror}); give a folder you can write to"
                                      ) from None
            return out
    return out  # pragma: no cover - the root always exists


def plural(count: int, noun: str) -> str:
    """``"1 row"``, ``"3 rows"``."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def duration(seconds: float) -> str:
    """An estimated duration in words: ``"38 s"``, ``"12.5 min (750 s)"``,
    ``"2.0 h (7,200 s)"``."""
    if seconds < 59.5:
        return f"{seconds:.0f} s"
    if seconds < 3570:
        return f"{seconds / 60:.1f} min ({seconds:,.0f} s)"
    return f"{seconds / 3600:,.1f} h ({seconds:,.0f} s)"


def plain_json(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists, keys strings); values
    JSON cannot hold are written as their text."""
    return json.loads(json.dumps(value, default=str))


def check_replace(out: str | os.PathLike, files: Iterable[str], record: str,
                  identity: Mapping[str, Any], *, overwrite: bool = False,
                  identity_of: Callable[[dict[str, Any]], Mapping[str, Any]] | None = None,
                  what: str = "the results", advice: str = "choose another folder with --out, "
                  "or replace them with --overwrite") -> None:
    """Refuse to let a run replace the files of another run.

    ``files`` are the names the run writes under ``out``; ``record`` (a JSON file among
    them, written last) holds the metadata of the run that wrote them, and
    ``identity_of(metadata)`` (default: its ``"identity"`` entry) what defines that run.
    Passes if ``out`` holds none of ``files``, holds those of the same run (equal
    identities), or ``overwrite`` is set. Otherwise raises FileExistsError naming the
    folder, ``what`` is there, which identity entries differ, and ``advice``."""
    out = Path(out)
    found = [name for name in files if (out / name).exists()]
    if overwrite or not found:
        return
    extract = identity_of or (lambda meta: meta["identity"])
    try:
        previous = plain_json(extract(json.loads((out / record).read_text())))
    except (OSError, ValueError, KeyError, TypeError):
        held = f"{what} of an unknown run ({', '.join(found)})"
    else:
        ours = plain_json(identity)
        differ = [key for key in dict.fromkeys([*ours, *previous])
                  if previous.get(key) != ours.get(key)]
        if not differ:
            return
        held = f"{what} of another run (different {', '.join(differ)})"
    raise FileExistsError(f"{out} holds {held}; {advice}")
