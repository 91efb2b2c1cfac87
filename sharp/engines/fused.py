"""The fused engine: SHARP's wake step and sleep replay training as single calls into the
C kernels of :mod:`sharp.engines.kernels`, working in place on the learner's own tensors.

The torch engine (``engine="torch"``) is the readable reference; this one computes the
same steps with the same Adam update, without per-op dispatch: one call per wake step
and one per sleep target layer. The ctypes structures below mirror the declarations of
``sharp_kernels.h``; :func:`check_layout` compares them with the compiled library's own
table before anything is bound, and every status the kernels return becomes a Python
exception in :func:`_raise_for`.
"""

from __future__ import annotations

import ctypes
import warnings
from collections.abc import Sequence
from ctypes import POINTER, Structure, c_char_p, c_double, c_int32, c_int64, c_void_p
from enum import IntEnum
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from sharp.engines.kernels import KernelUnavailable, load
from sharp.engines.optim import FusedAdam
from sharp.model.gate import RecallGate, ReplayOutcome, WakeOutcome
from sharp.model.heads import ConcatHead, FiLMHead
from sharp.model.memory import Memory

if TYPE_CHECKING:
    from sharp.model.learner import Sharp

MAX_LAYERS = 8
MAX_MLP = 8
CONTEXT = {None: 0, "film": 1, "concat": 2}


class Status(IntEnum):
    """What the wake kernel returns (``SharpStatus`` in ``sharp_kernels.h``)."""

    OK = 0
    BAD_TOKEN = 1



# The ctypes mirrors of the structs of sharp_kernels.h, field for field and named as there
# (``in`` included); check_layout holds them to the compiled header.
class _Param(Structure):
    _fields_ = [("p", c_void_p), ("m", c_void_p), ("v", c_void_p)]


class _Linear(Structure):
    _fields_ = [("w", _Param), ("b", _Param), ("out", c_int32), ("in", c_int32)]


class _Norm(Structure):
    _fields_ = [("g", _Param), ("b", _Param), ("n", c_int32)]


class _Group(Structure):
    _fields_ = [("counts", c_void_p), ("n_counts", c_int32), ("lr", c_void_p),
                ("beta1", c_double), ("beta2", c_double), ("eps", c_double),
                ("weight_decay", c_double)]


class _Gate(Structure):
    _fields_ = [("coefficient", c_double), ("tau", c_double), ("value", c_double)]


class _Memory(Structure):
    _fields_ = [("tokens", c_int32), ("inputs", c_int32), ("hidden", c_int32),
                ("embedding", c_int32), ("window", c_int32), ("project", _Param),
                ("project_b", _Param), ("w_ih", _Param), ("w_hh", _Param), ("b_ih", _Param),
                ("b_hh", _Param), ("recall_w", _Param), ("recall_b", _Param)]


class _Head(Structure):
    _fields_ = [("norm", _Norm), ("context", c_int32), ("ctx", _Linear), ("ctx_norm", _Norm),
                ("layers", c_int32), ("mlp", _Linear * MAX_MLP), ("group", _Group)]


class _Wake(Structure):
    _fields_ = [("layers", c_int32), ("vocab", c_int32), ("window", c_int32),
                ("strides", c_int64 * MAX_LAYERS), ("memory", _Memory * MAX_LAYERS),
                ("memory_group", _Group), ("heads", _Head * MAX_LAYERS),
                ("states", c_void_p * MAX_LAYERS), ("carry", c_void_p), ("logits", c_void_p),
                ("context", c_void_p)]


#: Every ctypes mirror of a C struct; :func:`check_layout` compares each with the C side.
STRUCTS: tuple[type[Structure], ...] = (_Param, _Linear, _Norm, _Group, _Gate, _Memory, _Head,
                                        _Wake)


def python_layout(structs: Sequence[type[Structure]] = STRUCTS) -> dict[str, int]:
    """The Python side of the layout table: the constants, and per struct its size and
    each field's offset and size in bytes, named as ``sharp_layout_entry`` names them
    (``"Param size"``, ``"Param.p offset"``, ``"Param.p size"``, ...)."""
    table = {"MAX_LAYERS": MAX_LAYERS, "MAX_MLP": MAX_MLP,
             "SharpStatus size": ctypes.sizeof(c_int32)}
    table |= {f"CONTEXT_{str(kind).upper()}": value for kind, value in CONTEXT.items()}
    table |= {f"SHARP_{status.name}": status.value for status in Status}
    for struct in structs:
        name = struct.__name__.lstrip("_")
        table[f"{name} size"] = ctypes.sizeof(struct)
        for field, _ in struct._fields_:
            descriptor = getattr(struct, field)
            table[f"{name}.{field} offset"] = descriptor.offset
            table[f"{name}.{field} size"] = descriptor.size
    return table


def c_layout(lib: ctypes.CDLL) -> dict[str, int]:
    """The C side of the layout table, as the compiler laid out ``sharp_kernels.h``."""
    lib.sharp_layout_count.restype = c_int32
    lib.sharp_layout_entry.argtypes = [c_int32, POINTER(c_int64)]
    lib.sharp_layout_entry.restype = c_char_p
    value = c_int64()
    table = {}
    for i in range(lib.sharp_layout_count()):
        name = lib.sharp_layout_entry(i, ctypes.byref(value))
        table[name.decode()] = value.value
    return table


def check_layout(lib: ctypes.CDLL, structs: Sequence[type[Structure]] = STRUCTS) -> None:
    """Raise :class:`~sharp.engines.kernels.KernelUnavailable` naming every constant,
    struct size or field offset/size where the ctypes mirror ``structs`` and the compiled
    ``sharp_kernels.h`` differ (binding them anyway would corrupt memory silently)."""
    ours, theirs = python_layout(structs), c_layout(lib)
    differ = [f"{key}: C {theirs.get(key, 'missing')}, Python {ours.get(key, 'missing')}"
              for key in sorted(ours.keys() | theirs.keys()) if ours.get(key) != theirs.get(key)]
    if differ:
        raise KernelUnavailable(
            "the ctypes structs of sharp/engines/fused.py do not match sharp_kernels.h ("
            + "; ".join(differ) + ")"
        )


def _library() -> ctypes.CDLL:
    lib = load()
    check_layout(lib, STRUCTS)
    lib.sharp_wake_workspace.argtypes = [POINTER(_Wake)]
    lib.sharp_wake_workspace.restype = c_int64
    lib.sharp_sleep_workspace.argtypes = [POINTER(_Memory)]
    lib.sharp_sleep_workspace.restype = c_int64
    lib.sharp_wake.argtypes = [POINTER(_Wake), c_void_p, c_int64, c_int64, POINTER(_Gate),
                               POINTER(c_double), c_void_p]
    lib.sharp_wake.restype = c_int32
    lib.sharp_sleep.argtypes = [POINTER(_Memory), POINTER(_Group), c_void_p, c_int64, c_int64,
                                c_void_p, POINTER(_Gate), c_void_p, c_void_p]
    lib.sharp_sleep.restype = c_int64
    return lib


def _raise_for(status: int) -> None:
    """Map a kernel status to its exception (the one place that does)."""
    if status == Status.OK:
        return
    if status == Status.BAD_TOKEN:
        raise ValueError("token id outside the vocabulary")
    raise RuntimeError(f"the fused kernels returned an unknown status {status}")


def _pointer(tensor: Tensor) -> int:
    if tensor.dtype != torch.float32 or tensor.device.type != "cpu" or not tensor.is_contiguous():
        raise KernelUnavailable("the fused engine needs contiguous float32 CPU tensors, got "
                                f"{tensor.dtype} on {tensor.device}")
    return tensor.data_ptr()


class _Binder:
    """Builds the C structures from modules and their optimiser's moments (no optimiser:
    forward use only)."""

    def __init__(self, optimiser: FusedAdam | None) -> None:
        self.optimiser = optimiser

    def param(self, tensor: Tensor) -> _Param:
        if self.optimiser is None:
            return _Param(_pointer(tensor), None, None)
        exp_avg, exp_avg_sq = self.optimiser.moments(tensor)
        return _Param(_pointer(tensor), _pointer(exp_avg), _pointer(exp_avg_sq))

    def group(self, index: int) -> _Group:
        assert self.optimiser is not None
        counts = self.optimiser.group_counts(index)
        beta1, beta2 = self.optimiser.betas
        lr = self.optimiser.lr_array
        return _Group(_pointer(counts), counts.numel(), lr.ctypes.data + lr.itemsize * index,
                      beta1, beta2, self.optimiser.eps, self.optimiser.weight_decay)

    def linear(self, linear: nn.Linear) -> _Linear:
        return _Linear(self.param(linear.weight), self.param(linear.bias),
                       linear.out_features, linear.in_features)

    def norm(self, norm: nn.LayerNorm) -> _Norm:
        if norm.eps != 1e-5 or norm.weight is None:
            raise KernelUnavailable("the fused engine expects affine LayerNorms with eps=1e-5")
        return _Norm(self.param(norm.weight), self.param(norm.bias), norm.normalized_shape[0])

    def memory(self, memory: Memory) -> _Memory:
        rnn, project = memory.encoder, memory.project
        window, inputs = memory.recall_bias.shape
        unused = _Param(None, None, None)
        if memory.tokens:
            table, bias, embedding = self.param(project.weight), unused, project.embedding_dim
        else:
            table, bias = self.param(project.weight), self.param(project.bias)
            embedding = project.out_features
        return _Memory(int(memory.tokens), inputs, memory.hidden, embedding, window, table, bias,
                       self.param(rnn.weight_ih_l0), self.param(rnn.weight_hh_l0),
                       self.param(rnn.bias_ih_l0), self.param(rnn.bias_hh_l0),
                       self.param(memory.recall_weight), self.param(memory.recall_bias))

    def head(self, head: nn.Module, group: int) -> _Head:
        if isinstance(head, FiLMHead):
            kind, ctx, ctx_norm = ("film" if head.film else None), head.film, head.film_norm
        elif isinstance(head, ConcatHead):
            kind, ctx, ctx_norm = ("concat" if head.context else None), head.context, \
                head.joint_norm
        else:
            raise KernelUnavailable(f"the fused engine has no kernel for {type(head).__name__}")
        if len(head.mlp) > MAX_MLP:
            raise KernelUnavailable(f"the fused engine supports up to {MAX_MLP} head layers")
        mlp = (_Linear * MAX_MLP)(*(self.linear(linear) for linear in head.mlp))
        return _Head(self.norm(head.norm), CONTEXT[kind],
                     self.linear(ctx) if ctx is not None else _Linear(),
                     self.norm(ctx_norm) if ctx_norm is not None else _Norm(),
                     len(head.mlp), mlp, self.group(group))


class FusedEngine:
    """The fused kernels bound to one learner's parameters, moments, states and carry.

    Binding is by address: the learner must update those tensors in place (it does —
    loading a checkpoint copies into them). The engine holds them, so a tensor replaced
    from outside is never written after it is freed; :meth:`check` reports it. The
    kernels' scratch memory is one workspace allocated here, wide enough for the wake step
    and every upper memory's replay, and freed with the engine.
    """

    def __init__(self, learner: Sharp) -> None:
        c = learner.config
        if learner.device.type != "cpu":
            raise KernelUnavailable(f"the fused engine runs on the CPU, not {learner.device}")
        if c.layers > MAX_LAYERS:
            raise KernelUnavailable(f"the fused engine supports up to {MAX_LAYERS} layers")
        if c.inputs != "embedding":
            raise KernelUnavailable(
                f"the fused kernels read token ids through a learned embedding, not the dense "
                f"input vectors of inputs={c.inputs!r}")
        self.lib = _library()
        memories, heads = _Binder(learner.memory_opt), _Binder(learner.head_opt)
        self._logits = torch.zeros(c.vocab_size)
        self._context = torch.zeros(1, c.hidden[0])
        self._wake = _Wake(
            c.layers, c.vocab_size, c.window, (c_int64 * MAX_LAYERS)(*c.strides),
            (_Memory * MAX_LAYERS)(*(memories.memory(m) if level == 0 else
                                     _Binder(None).memory(m)
                                     for level, m in enumerate(learner.memories))),
            memories.group(0),
            (_Head * MAX_LAYERS)(*(heads.head(h, level) for level, h in enumerate(learner.heads))),
            (c_void_p * MAX_LAYERS)(*(_pointer(s) for s in learner.states)),
            _pointer(learner.carry), _pointer(self._logits), _pointer(self._context),
        )
        self._wake_ref = ctypes.byref(self._wake)
        floats = [self.lib.sharp_wake_workspace(self._wake_ref)]
        floats += [self.lib.sharp_sleep_workspace(ctypes.byref(self._wake.memory[level]))
                   for level in range(1, c.layers)]
        self._workspace = torch.empty(max(floats))
        self._gate = _Gate()
        self._gate_ref = ctypes.byref(self._gate)
        self._result = (c_double * 3)()
        self._bound = _bound_objects(learner)

    def check(self, learner: Sharp) -> None:
        """Raise RuntimeError if a parameter, state, carry or optimiser the engine is bound
        to was replaced instead of updated in place."""
        now = _bound_objects(learner)
        if len(now) != len(self._bound) or any(
            a is not b for a, b in zip(now, self._bound, strict=True)
        ):
            raise RuntimeError(
                "a parameter, layer state, carry or optimiser of this learner was replaced "
                "rather than updated in place, so the fused engine no longer sees it; update "
                "tensors in place (e.g. load_state_dict without assign=True) or build the "
                "learner with engine='torch'"
            )

    def _load_gate(self, gate: RecallGate) -> None:
        self._gate.coefficient, self._gate.tau, self._gate.value = (
            gate.coefficient, gate.tau, gate.value)

    def wake(self, window: np.ndarray, target: int, t: int, gate: RecallGate) -> WakeOutcome:
        """SPEC §3 steps 2–6 on ``window`` (int64, shape (W,)) and ``target`` at step
        ``t``, memory 0 gated by ``gate`` (its value updated). States, carry, weights and
        moments are updated in place. Raises ValueError for a token outside the
        vocabulary (nothing is changed then)."""
        self._load_gate(gate)
        status = self.lib.sharp_wake(self._wake_ref, window.ctypes.data, target, t,
                                     self._gate_ref, self._result, _pointer(self._workspace))
        _raise_for(status)
        gate.value = self._gate.value
        p, r, learned = self._result
        context = self._context.clone() if self._wake.layers > 1 else None
        return WakeOutcome(p, r, bool(learned), self._logits.clone(), context)

    def sleep(self, memory: Memory, optimiser: FusedAdam, dreams: Tensor, window: Tensor,
              gate: RecallGate) -> ReplayOutcome:
        """SPEC §4 step 2 for one target memory: train it on ``dreams`` (tags, ticks,
        inputs) through the sliding ``window`` buffer (W, inputs), updated in place, gated
        by ``gate`` (its value updated). Raises ValueError for a memory wider than the
        learner's own (the workspace was sized for those)."""
        binder = _Binder(optimiser)
        bound, group = binder.memory(memory), binder.group(0)
        dreams = dreams.contiguous()
        tags, ticks, _ = dreams.shape
        if self.lib.sharp_sleep_workspace(ctypes.byref(bound)) > self._workspace.numel():
            raise ValueError("this memory is larger than the ones the fused engine was bound "
                             "to; its workspace is too small")
        losses = np.empty(tags * ticks, dtype=np.float32)
        self._load_gate(gate)
        updates = self.lib.sharp_sleep(ctypes.byref(bound), ctypes.byref(group),
                                       _pointer(dreams), tags, ticks, _pointer(window),
                                       self._gate_ref, losses.ctypes.data,
                                       _pointer(self._workspace))
        gate.value = self._gate.value
        return ReplayOutcome(losses, int(updates))


def _bound_objects(learner: Sharp) -> list[object]:
    return [*learner.net.parameters(), *learner.states, learner.carry, learner.memory_opt,
            learner.head_opt]


def select_engine(learner: Sharp) -> FusedEngine | None:
    """The fused engine for ``learner`` per ``config.engine``: None for ``torch``, or for
    ``auto`` when the kernels cannot run here (with a warning saying why); ``fused``
    raises :class:`~sharp.engines.kernels.KernelUnavailable` instead."""
    choice = learner.config.engine
    if choice == "torch":
        return None
    try:
        return FusedEngine(learner)
    except KernelUnavailable as why:
        if choice == "fused":
            raise KernelUnavailable(f"{why}; use engine='torch'") from why
        warnings.warn(f"SHARP runs its torch engine (several times slower): {why}",
                      RuntimeWarning, stacklevel=3)
        return None
