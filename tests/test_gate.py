"""The recall-EMA gate (SPEC §3 steps 2–3, §4 step 2): one rule for every memory."""

from __future__ import annotations

import pytest

from sharp.model.gate import RecallGate


def test_the_gate_folds_each_loss_into_the_ema() -> None:
    gate = RecallGate(coefficient=0.9, tau=1.0)
    assert gate.value == 0.0  # a stream or a replay starts from zero
    gate.update(2.0)
    assert gate.value == pytest.approx(0.2)
    gate.update(1.0)
    assert gate.value == pytest.approx(0.9 * 0.2 + 0.1 * 1.0)
    # the exact expression the kernels copy: coefficient * ema + (1 - coefficient) * loss
    resumed = RecallGate(0.9, 1.0, value=0.28)
    resumed.update(3.5)
    assert resumed.value == 0.9 * 0.28 + (1.0 - 0.9) * 3.5


def test_the_gate_opens_while_the_ema_exceeds_tau_and_closes_below() -> None:
    gate = RecallGate(coefficient=0.5, tau=1.0)
    assert [gate.update(loss) for loss in (4.0, 4.0, 0.0, 0.0, 0.0)] == \
        [True, True, True, False, False]  # EMA 2, 3, 1.5, 0.75, 0.375
    at_tau = RecallGate(coefficient=0.5, tau=1.0, value=1.0)
    assert not at_tau.update(1.0)  # strictly above tau: an EMA equal to tau stays shut
    always = RecallGate(coefficient=0.9, tau=0.0)
    assert always.update(1e-6)  # tau = 0: every window with a positive loss learns
