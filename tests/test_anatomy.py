"""The wake-step anatomy's counting (not its timings, which never decide a test)."""

from __future__ import annotations

import torch

from sharp.config import preset
from sharp.perf.anatomy import _kernel_launches, _sleep_windows


def test_sleep_windows_match_a_real_sleep() -> None:
    # 20 tags × ceil(1025 / 4**k) windows for target layers k = 1..4 (5140 + 1300 + 340 + 100).
    assert _sleep_windows(preset("text8-small")) == 6880


def test_launches_count_computing_ops_once_and_skip_views() -> None:
    x = torch.randn(3, 4, requires_grad=True)

    def forward_backward() -> None:
        y = torch.tanh(x.view(-1).t())  # view ops are free: only tanh counts
        y.sum().backward()

    launches = _kernel_launches(forward_backward, 4)
    # forward: tanh, sum; backward: at least the tanh and sum gradients.
    assert 4 <= launches < 12
    assert _kernel_launches(lambda: x.detach().t(), 3) == 0
