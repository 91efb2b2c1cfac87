"""Where the time of the torch engine's wake step and sleep window goes, and the floors it
implies on this machine: kernel launches × the cost of one tiny kernel, and the bytes
Adam must move × the measured memory bandwidth.

A diagnostic script, not a test: ``sharp throughput --anatomy``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.profiler import profile

from sharp.config import preset
from sharp.engines.runtime import small_kernels
from sharp.model.learner import Sharp
from sharp.perf.throughput import stand_in_table

#: Bytes one Adam step moves per float32 parameter: read p, g, m, v; write p, m, v.
ADAM_BYTES_PER_PARAMETER = 7 * 4


def _per_call(function: Callable[[], Any], calls: int, repeats: int = 5) -> float:
    """Median seconds per call of ``function`` over ``repeats`` batches of ``calls``."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            function()
        times.append((time.perf_counter() - start) / calls)
    return statistics.median(times)


#: ATen operators that only make a new view of existing data: not counted as launches.
VIEW_OPS = frozenset(f"aten::{name}" for name in (
    "view", "t", "transpose", "as_strided", "select", "slice", "detach", "reshape",
    "_reshape_alias", "expand", "unsqueeze", "squeeze", "chunk", "split", "unbind",
    "permute", "alias", "resolve_conj", "resolve_neg", "flatten", "numpy_T", "lift_fresh",
))


def _is_outermost_aten(event: Any) -> bool:
    """An ATen operator that computes or allocates, not called from inside another ATen
    operator (the autograd engine's ops count; a composite op's internals do not)."""
    if not event.name.startswith("aten::") or event.name in VIEW_OPS:
        return False
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith("aten::"):
            return False
        parent = parent.cpu_parent
    return True


def _kernel_launches(function: Callable[[], Any], calls: int) -> float:
    """Outermost ATen operator calls per call of ``function`` (torch profiler), forward,
    backward and optimiser alike."""
    with profile() as prof:
        for _ in range(calls):
            function()
    return sum(map(_is_outermost_aten, prof.events())) / calls


def inplace_bandwidth(floats: int) -> float:
    """Memory bandwidth in GB/s of ``a += b`` over float32 tensors of ``floats`` elements
    each: bytes read (a, b) plus written (a), the access pattern of an in-place
    optimiser update."""
    a, b = torch.zeros(floats), torch.ones(floats)
    seconds = _per_call(lambda: a.add_(b), 10)
    return 3 * floats * 4 / seconds / 1e9


def wake_anatomy(preset_name: str, *, threads: int = 1, steps: int = 300,
                 seed: int = 0) -> pd.DataFrame:
    """Parts of one wake step (memory-0 gate open, the costly case), kernel launches per
    step and per sleep window, and the floors they imply: one row per quantity."""
    config = preset(preset_name, threads=threads, seed=seed, tau=0.0, sleep_steps=65,
                    engine="torch")
    learner = Sharp(config, stand_in_table(config, seed))
    rng = np.random.default_rng(seed)
    tokens = torch.from_numpy(rng.integers(0, config.vocab_size, 4 * steps + 10))
    targets = tokens.tolist()
    w = config.window
    position = iter(range(len(targets) - w))

    def learn() -> None:
        i = next(position)
        learner.learn(tokens[i : i + w], targets[i + w])

    step = _per_call(learn, steps // 3, repeats=3)
    launches = _kernel_launches(learn, 20)
    x = tokens[:w].view(1, -1)
    inputs = learner.inputs(x)  # the ids, or their frozen vectors for dense inputs
    y = tokens[w : w + 1]
    memory0 = learner.memories[0]

    def memory_backward() -> None:
        recall, _, _ = memory0.encode(inputs, learner.carry)
        learner.memory_opt.zero_grad()
        memory0.recall_loss(inputs, recall).backward()

    def heads_backward() -> None:
        logits = learner.heads[0](learner.states[0], learner.context())
        learner.head_opt.zero_grad()
        torch.nn.functional.cross_entropy(logits, y).backward()

    calls = max(50, steps // 3)
    with small_kernels():
        memory_backward()
        heads_backward()
        parts = {
            "memory 0: encode, recall loss, backward": _per_call(memory_backward, calls),
            "memory 0: Adam step": _per_call(learner.memory_opt.step, calls),
            "layer states: advance": _per_call(lambda: learner.advance(x[:, -1]), calls),
            "heads: forward + backward": _per_call(heads_backward, calls),
            "heads: Adam step": _per_call(learner.head_opt.step, calls),
        }
        h = learner.states[0]
        weight = torch.randn(h.shape[-1], h.shape[-1])
        tiny = _per_call(lambda: torch.tanh(h), 2_000)
        matvec = _per_call(lambda: torch.addmm(h[0], h, weight), 2_000)
    adam_parameters = sum(p.numel() for p in learner.memory_opt.params + learner.head_opt.params)
    adam_bytes = adam_parameters * ADAM_BYTES_PER_PARAMETER
    # Adam's working set is p, g, m and v: two tensors of twice the parameters each.
    bandwidth = inplace_bandwidth(2 * adam_parameters)
    adam_seconds = parts["memory 0: Adam step"] + parts["heads: Adam step"]
    sleep_launches, sleep_window = _sleep_window(learner)
    rows: list[tuple[str, float, str]] = [
        ("wake step, measured", 1e3 * step, "ms"),
        ("wake tokens/s, measured", 1 / step, "tokens/s"),
        *((f"part: {name}", 1e3 * seconds, "ms") for name, seconds in parts.items()),
        ("kernel launches per wake step", launches, "calls"),
        ("one tiny kernel (tanh of H floats)", 1e6 * tiny, "µs"),
        ("one 1×H by H×H addmm", 1e6 * matvec, "µs"),
        ("launch floor: launches × tiny kernel", 1e3 * launches * tiny, "ms"),
        ("Adam: parameters updated per wake step", adam_parameters, "parameters"),
        ("Adam: bytes moved per wake step", adam_bytes / 1e6, "MB"),
        ("Adam: achieved bandwidth", adam_bytes / adam_seconds / 1e9, "GB/s"),
        ("in-place bandwidth at Adam's working-set size", bandwidth, "GB/s"),
        ("bandwidth floor: Adam bytes / in-place bandwidth", 1e3 * adam_bytes / bandwidth / 1e9,
         "ms"),
        ("ceiling: 1 / (launch floor + bandwidth floor)",
         1 / (launches * tiny + adam_bytes / bandwidth / 1e9), "tokens/s"),
        ("sleep: one replay-training window, measured", 1e3 * sleep_window, "ms"),
        ("sleep: kernel launches per window", sleep_launches, "calls"),
        ("sleep: windows in one sleep (20 tags × 1025 steps)",
         _sleep_windows(learner.config.replace(sleep_steps=None)), "windows"),
    ]
    frame = pd.DataFrame(rows, columns=["quantity", "value", "unit"])
    frame.insert(0, "preset", preset_name)
    frame.insert(1, "threads", threads)
    return frame


def _sleep_windows(config: Any) -> int:
    """Replay-training windows of one sleep with a full tag buffer: per target layer k,
    one window every a**k replay steps of every tag."""
    return sum(config.tag_buffer * -(-config.replay_steps // config.a**k)
               for k in range(1, config.layers))


def _sleep_window(learner: Sharp) -> tuple[float, float]:
    """Kernel launches per replay-training window and seconds per window of a short
    sleep (the learner's config has ``sleep_steps`` = 65)."""
    def short_sleep() -> int:
        learner.sleep_pending = True
        report = learner.sleep()
        return sum(layer.windows for layer in report.layers)

    tags = list(learner.tags)
    learner.tags.extend(tags)
    windows = short_sleep()
    learner.tags.extend(tags)
    launches = _kernel_launches(short_sleep, 1) / windows
    learner.tags.extend(tags)
    start = time.perf_counter()
    short_sleep()
    return launches, (time.perf_counter() - start) / windows
