"""Shared fixtures: tiny SHARP configurations and streams that make tests fast."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import torch

from sharp.config import SharpConfig

torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the ``cuda``-marked tests where CUDA is absent, saying so (``-ra`` lists them)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (an NVIDIA GPU); this machine has none: run "
                            "tools/device_check.py on a GPU machine")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


def tiny_config(**overrides: object) -> SharpConfig:
    """A 3-layer SHARP small enough for hundreds of steps per second in tests."""
    base: dict[str, object] = {
        "vocab_size": 7, "layers": 3, "hidden": 16, "embedding": 8, "window": 3,
        "accel": 2, "lr": 1e-2, "tag_buffer": 5, "sleep_every": 100, "sleep_steps": 17,
        "threads": 1, "seed": 0,
    }
    return SharpConfig(**{**base, **overrides})


@pytest.fixture
def random_stream() -> np.ndarray:
    """2,000 uniformly random tokens over a vocabulary of 7."""
    return np.random.default_rng(1).integers(0, 7, 2_000).astype(np.int64)


@pytest.fixture
def periodic_stream() -> np.ndarray:
    """A period-5 pattern over a vocabulary of 7, 3,000 tokens long."""
    return np.tile(np.array([0, 3, 1, 4, 2]), 600).astype(np.int64)


def assert_same_state(got: dict, expected: dict, atol: float) -> None:
    """Two learner ``state_dict``s agree: tensors within ``atol``, everything else equal."""
    assert got.keys() == expected.keys()
    for key in expected:
        a, b = got[key], expected[key]
        if isinstance(b, dict):
            assert_same_state(a, b, atol)
        elif isinstance(b, list | tuple):
            assert len(a) == len(b), key
            for x, y in zip(a, b, strict=True):
                assert_same_state({key: x}, {key: y}, atol)
        elif isinstance(b, torch.Tensor):
            tol = 0 if b.dtype in (torch.uint8, torch.int64) else atol
            torch.testing.assert_close(a, b, rtol=0, atol=tol, msg=lambda m, k=key: f"{k}: {m}")
        elif isinstance(b, float):
            assert a == pytest.approx(b, abs=atol), key
        else:
            assert a == b, key


@pytest.fixture(scope="session", autouse=True)
def ray_shutdown() -> Iterator[None]:
    """Ray starts at most once per test session (the first test that runs jobs as Ray
    tasks starts it on 2 CPUs, without dashboard) and stops when the session ends."""
    yield
    if "ray" in sys.modules:
        import ray

        ray.shutdown()


def sigkill_when(process: subprocess.Popen, ready: Callable[[], bool], *, then: float = 0.0,
                 timeout: float = 120.0) -> None:
    """SIGKILL ``process`` once ``ready()`` holds (polled for at most ``timeout`` s) and
    ``then`` more seconds have passed; the test fails if the process ended before. The
    process is always reaped."""
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and process.poll() is None and not ready():
            time.sleep(0.02)
        time.sleep(then)
        assert process.poll() is None, "the run ended before it could be killed"
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        process.kill()
        process.wait()



#: An estimated duration as printed: "38 s", "12.5 min (750 s)" or "2.0 h (7,200 s)"
#: (:func:`sharp.runs.outputs.duration`).
DURATION = r"(\d+ s|[\d.]+ min \([\d,]+ s\)|[\d.]+ h \([\d,]+ s\))"
