"""The fused engine: SHARP's wake step and sleep replay training as single calls into the
C kernels of :mod:`sharp.engines.kernels`, working in place on the learner's own tensors.

The torch engine (``engine="torch"``) is the readable reference; this one computes the
same steps with the same Adam update, without per-op dispatch: one call per wake step
and one per sleep target layer. The ctypes structures below mirror ``sharp_kernels.c``.
"""

from __future__ import annotations

import ctypes
import warnings
from ctypes import POINTER, Structure, c_double, c_int32, c_int64, c_void_p
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from sharp.engines.kernels import KernelUnavailable, load
from sharp.engines.optim import FusedAdam
from sharp.model.heads import ConcatHead, FiLMHead
from sharp.model.memory import Memory

if TYPE_CHECKING:
    from sharp.model.learner import Sharp

MAX_LAYERS = 8
MAX_MLP = 8
CONTEXT = {None: 0, "film": 1, "concat": 2}


class _Param(Structure):
    _fields_ = [("p", c_void_p), ("m", c_void_p), ("v", c_void_p)]


class _Linear(Structure):
    _fields_ = [("w", _Param), ("b", _Param), ("out", c_int32), ("in_", c_int32)]


class _Norm(Structure):
    _fields_ = [("g", _Param), ("b", _Param), ("n", c_int32)]


class _Group(Structure):
    _fields_ = [("counts", c_void_p), ("n_counts", c_int32), ("lr", c_void_p),
                ("beta1", c_double), ("beta2", c_double), ("eps", c_double),
                ("weight_decay", c_double)]


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


def _library() -> ctypes.CDLL:
    lib = load()
    lib.sharp_wake.argtypes = [POINTER(_Wake), c_void_p, c_int64, c_int64, c_double, c_double,
                               POINTER(c_double), POINTER(c_double)]
    lib.sharp_wake.restype = c_int32
    lib.sharp_sleep.argtypes = [POINTER(_Memory), POINTER(_Group), c_void_p, c_int64, c_int64,
                                c_void_p, c_double, c_double, c_void_p]
    lib.sharp_sleep.restype = c_int64
    return lib


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
    from outside is never written after it is freed; :meth:`check` reports it.
    """

    def __init__(self, learner: Sharp) -> None:
        c = learner.config
        if learner.device.type != "cpu":
            raise KernelUnavailable(f"the fused engine runs on the CPU, not {learner.device}")
        if c.layers > MAX_LAYERS:
            raise KernelUnavailable(f"the fused engine supports up to {MAX_LAYERS} layers")
        self.lib = _library()
        memories, heads = _Binder(learner.memory_opt), _Binder(learner.head_opt)
        self.logits = torch.zeros(c.vocab_size)
        self.context = torch.zeros(1, c.hidden[0])
        self._wake = _Wake(
            c.layers, c.vocab_size, c.window, (c_int64 * MAX_LAYERS)(*c.strides),
            (_Memory * MAX_LAYERS)(*(memories.memory(m) if level == 0 else
                                     _Binder(None).memory(m)
                                     for level, m in enumerate(learner.memories))),
            memories.group(0),
            (_Head * MAX_LAYERS)(*(heads.head(h, level) for level, h in enumerate(learner.heads))),
            (c_void_p * MAX_LAYERS)(*(_pointer(s) for s in learner.states)),
            _pointer(learner.carry), _pointer(self.logits), _pointer(self.context),
        )
        self._wake_ref = ctypes.byref(self._wake)
        self._ema = c_double()
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

    def wake(self, window: np.ndarray, target: int, t: int, ema: float, ema_coef: float,
             tau: float) -> tuple[float, float, bool, float]:
        """SPEC §3 steps 2–6 on ``window`` (int64, W ids) and ``target`` at step ``t``
        with recall EMA ``ema`` (coefficient ``ema_coef``, gate threshold ``tau``): returns
        (p, r, memory 0 learned, new EMA). The logits are left in :attr:`logits` and head
        0's context in :attr:`context`."""
        self._ema.value = ema
        status = self.lib.sharp_wake(self._wake_ref, window.ctypes.data, target, t, ema_coef,
                                     tau, ctypes.byref(self._ema), self._result)
        if status == 1:
            raise ValueError("token id outside the vocabulary")
        if status:
            raise MemoryError("the fused wake step could not allocate its workspace")
        p, r, learned = self._result
        return p, r, bool(learned), self._ema.value

    def sleep(self, memory: Memory, optimiser: FusedAdam, dreams: Tensor, window: Tensor,
              ema_coef: float, tau: float) -> tuple[np.ndarray, int]:
        """SPEC §4 step 2 for one target memory: train it on ``dreams`` (tags, ticks,
        inputs) through the sliding ``window`` buffer (W, inputs), updated in place, with
        the recall-EMA gate (``ema_coef``, ``tau``). Returns every window's recall loss and
        the number of updates."""
        binder = _Binder(optimiser)
        bound, group = binder.memory(memory), binder.group(0)
        dreams = dreams.contiguous()
        tags, ticks, _ = dreams.shape
        losses = np.empty(tags * ticks, dtype=np.float32)
        updates = self.lib.sharp_sleep(ctypes.byref(bound), ctypes.byref(group),
                                       _pointer(dreams), tags, ticks, _pointer(window),
                                       ema_coef, tau, losses.ctypes.data)
        if updates < 0:
            raise MemoryError("the fused sleep could not allocate its workspace")
        return losses, int(updates)


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
