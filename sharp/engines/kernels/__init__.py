"""The fused C kernels of SHARP's hot path, compiled once per machine and cached.

``sharp_kernels.c`` (with its header ``sharp_kernels.h``) is built with the system C compiler
(``$CC``, else ``cc``/``gcc``) for the machine it runs on and cached under ``$SHARP_CACHE``
(default ``~/.cache/sharp``), keyed by the source and header, the flags, the compiler and
the CPU. :func:`load` raises
:class:`KernelUnavailable` with the reason when that is not possible; the learner then
runs its torch engine.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

SOURCE = Path(__file__).with_name("sharp_kernels.c")
HEADER = SOURCE.with_suffix(".h")
FLAGS = ("-O3", "-march=native", "-fopenmp-simd", "-fno-math-errno", "-std=gnu11", "-fPIC",
         "-shared")


class KernelUnavailable(RuntimeError):
    """The fused kernels cannot be built or loaded here (the message says why)."""


def cache_dir() -> Path:
    """Where compiled kernels are kept: ``$SHARP_CACHE`` or ``~/.cache/sharp``."""
    return Path(os.environ.get("SHARP_CACHE") or Path.home() / ".cache" / "sharp")


def _compiler() -> str:
    for name in (os.environ.get("CC"), "cc", "gcc"):
        path = shutil.which(name) if name else None
        if path:
            return path
    raise KernelUnavailable("no C compiler found (set $CC, or install gcc)")


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return platform.processor()


def _build(compiler: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        built = Path(scratch) / target.name
        done = subprocess.run([compiler, *FLAGS, "-o", str(built), str(SOURCE), "-lm"],
                              capture_output=True, text=True, check=False)
        if done.returncode:
            raise KernelUnavailable(f"compiling {SOURCE.name} failed:\n{done.stderr[-2000:]}")
        os.replace(built, target)


@functools.cache
def load() -> ctypes.CDLL:
    """The compiled kernel library (built on first use; later calls reuse it)."""
    compiler = _compiler()
    key = hashlib.sha256()
    for part in (SOURCE.read_bytes(), HEADER.read_bytes(), " ".join(FLAGS).encode(),
                 compiler.encode(), platform.machine().encode(), _cpu_flags().encode()):
        key.update(part)
    target = cache_dir() / f"sharp_kernels-{key.hexdigest()[:16]}.so"
    try:
        if not target.exists():
            _build(compiler, target)
        return ctypes.CDLL(str(target))
    except OSError as error:
        raise KernelUnavailable(f"cannot build or load the kernels in {target.parent}: {error}"
                                " (set $SHARP_CACHE to a writable folder)") from error
