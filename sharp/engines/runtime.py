"""Where and how a learner runs: device choice, thread count, generator state across
devices, and the kernel setting of the per-token hot path.

``device="auto"`` never picks a path slower than the CPU's. The rule, by workload:

* ``"stream"``: one SHARP learner on one stream runs on the **CPU** (its fused C engine).
  Its wake step is a few small matrix products per token, which on an accelerator is bound
  by kernel-launch latency, not arithmetic. Measured on an H200 host (torch 2.11, CUDA 13):
  wake 2,206 tokens/s with the CPU fused engine vs 165 on CUDA at H=128; at H=512 158 (CPU
  fused), 240 (CPU torch, 8 threads) vs 190 (CUDA), and one sleep took 13–14 s on CUDA.
* ``"batched"``: work that fills an accelerator (a SHARP ensemble of M members; a baseline,
  whose training re-runs TBPTT blocks and whose evaluation runs whole slices in one call)
  runs on **CUDA** when present, else on Apple **MPS** when present, else on the CPU.

Any other name (``cpu``, ``cuda``, ``cuda:1``, ``mps``) is used as given: that is how a user
overrides the rule (e.g. ``SharpConfig(device="cuda")``). Every config checks its device with
:func:`check_device` when it is made, so a device this machine lacks is refused before any
work starts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch

from sharp.config import ConfigError

#: What a learner runs, for :func:`resolve_device`'s ``auto`` rule (see the module docstring).
Workload = Literal["stream", "batched"]


def accelerator() -> torch.device | None:
    """CUDA if this machine has it, else Apple MPS if it has that, else None."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return None


def resolve_device(name: str, workload: Workload) -> torch.device:
    """The torch device for config value ``name``: ``auto`` follows the module's rule for
    ``workload`` (``"stream"``: the CPU; ``"batched"``: CUDA, then MPS, then the CPU); any
    other name is a torch device name, used as given. Raises RuntimeError for a name torch
    does not know."""
    if name != "auto":
        return torch.device(name)
    if workload == "stream":
        return torch.device("cpu")
    return accelerator() or torch.device("cpu")


def check_device(name: str) -> None:
    """Raise :class:`~sharp.config.ConfigError` unless ``name`` is ``auto`` or a device this
    machine has: ``cpu``, ``cuda`` / ``cuda:N`` (with CUDA and more than N GPUs) or ``mps``
    (on Apple silicon). Asks torch without touching the device, so no CUDA context is made
    (a process may still fork workers after it)."""
    if name == "auto":
        return
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"unknown device {name!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' or "
                          "'mps'")
    cuda = torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()
    mps = torch.backends.mps.is_available()
    if not {"cpu": True, "cuda": cuda, "mps": mps}[device.type]:
        raise ConfigError(f"device {name!r} is not available on this machine "
                          f"(torch {torch.__version__}); use 'cpu' or 'auto'")


def device_available(name: str) -> bool:
    """Whether this machine has device ``name`` (``auto`` always; see :func:`check_device`)."""
    try:
        check_device(name)
    except ConfigError:
        return False
    return True


def prepare_runtime(threads: int | None, device: str, workload: Workload) -> torch.device:
    """Set torch's intra-op thread count (None leaves it alone) and resolve ``device`` for
    ``workload`` (:func:`resolve_device`).

    One thread is often fastest for a single stream on a loaded machine; the setting is
    process-wide, as torch's is.
    """
    if threads is not None:
        torch.set_num_threads(threads)
    return resolve_device(device, workload)


def load_generator_state(generator: torch.Generator, state: torch.Tensor) -> bool:
    """Restore ``generator`` from a saved ``get_state()`` (a uint8 tensor). Returns True
    when the state came from a generator of the same device type (the random stream then
    continues exactly), False when it came from another device type (CPU and CUDA
    generators keep states of different kinds and sizes, so no state carries over): the
    generator is then seeded from the saved state's bytes, a deterministic continuation
    that differs from the one the other device would have drawn."""
    state = state.cpu()  # get_state() gives, and set_state() takes, a CPU tensor
    if state.numel() == generator.get_state().numel():
        generator.set_state(state)
        return True
    digest = hashlib.sha256(state.numpy().tobytes()).digest()
    generator.manual_seed(int.from_bytes(digest[:8], "little"))
    return False


@contextmanager
def exact_float32() -> Iterator[None]:
    """Run the enclosed recurrent kernels without TF32, restoring the setting afterwards.

    torch lets cuDNN's float32 RNN kernels round their products to TF32 (10-bit mantissas)
    on Ampere and later GPUs by default (``torch.backends.cudnn.allow_tf32``); over a long
    sequence that would make a GPU's evaluation differ from the CPU's by more than float32
    rounding. A batch-1 recurrence is bound by its sequential steps, not by the products'
    arithmetic, so full float32 costs next to nothing. No effect on the CPU."""
    saved = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = saved


@contextmanager
def small_kernels() -> Iterator[None]:
    """Run the enclosed tensor ops with oneDNN off, restoring the setting afterwards.

    A streaming learner works on one vector (or a short block) at a time; for such tiny
    work oneDNN's per-call set-up dominates (GELU forward + backward on 128 floats: ~113 µs with it,
    ~45 µs without, measured with torch 2.13 on this project's 2-core machines), while
    the matrix products go to BLAS either way.
    """
    saved = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = saved
