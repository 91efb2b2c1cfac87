"""The stream explorer, headless: buttons and sliders change the learner and the figure."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import tiny_config

from sharp.config import preset
from sharp.explore.widgets import StreamExplorer, decoder_for, rolling_mean, thin
from sharp.model.learner import Sharp


def make(stream: np.ndarray, **options: object) -> StreamExplorer:
    return StreamExplorer(Sharp(tiny_config(sleep_every=10_000)), stream, **options)


def weights(learner: Sharp) -> list[torch.Tensor]:
    return [p.detach().clone() for p in learner.net.parameters()]


def test_step_buttons_learn_and_grow_the_figure(periodic_stream: np.ndarray) -> None:
    explorer = make(periodic_stream, smooth=20)
    explorer.n_slider.value = 120
    before = weights(explorer.learner)
    explorer.step_n_button.click()
    assert explorer.steps == 120 and explorer.learner.t == 120
    assert len(explorer.records) == 120
    assert any(not torch.equal(a, b) for a, b in zip(before, weights(explorer.learner),
                                                      strict=True))
    bits = explorer.trace("bits")
    assert list(bits.x) == list(range(1, 121))
    assert bits.y[-1] == pytest.approx(explorer.records["bits"].iloc[-20:].mean())
    explorer.step_button.click()
    assert explorer.steps == 121 and len(explorer.trace("bits").x) == 121
    assert "sharp-steps'>121<" in explorer.readout.value
    assert "last prediction" in explorer.stream_view.value


def test_sleep_button_sleeps_and_marks_the_figure(periodic_stream: np.ndarray) -> None:
    explorer = make(periodic_stream)
    explorer.step(200)
    assert explorer.learner.tags and explorer.learner.sleep_pending
    uppers = [p.detach().clone() for p in explorer.learner.memories[1].parameters()]
    explorer.sleep_button.click()
    report = explorer.sleep_reports[-1]
    assert report.slept and not explorer.learner.tags
    assert any(not torch.equal(a, b) for a, b in
               zip(uppers, explorer.learner.memories[1].parameters(), strict=True))
    assert list(explorer.trace("sleep").x) == [200]
    assert explorer.trace("sleep").y[0] == pytest.approx(explorer.trace("bits").y[-1])
    assert "sharp-sleeps'>1<" in explorer.readout.value


def test_sleep_schedule_follows_the_config(periodic_stream: np.ndarray) -> None:
    explorer = StreamExplorer(Sharp(tiny_config(sleep_every=100)), periodic_stream)
    explorer.step(250)
    assert explorer.sleep_steps == [100, 200]
    assert list(explorer.trace("sleep").x) == [100, 200]
    never = StreamExplorer(Sharp(tiny_config(sleep_every=100)), periodic_stream, sleep_every=0)
    never.step(250)
    assert never.sleep_steps == []


def test_reset_rewinds_and_restores_the_learner(periodic_stream: np.ndarray) -> None:
    explorer = make(periodic_stream)
    initial = weights(explorer.learner)
    first = explorer.step(150)["bits"].to_numpy()
    explorer.sleep()
    explorer.reset_button.click()
    assert explorer.steps == 0 and explorer.sleep_steps == [] and len(explorer.trace("bits").x) == 0
    assert all(torch.equal(a, b) for a, b in zip(initial, weights(explorer.learner), strict=True))
    again = explorer.step(150)["bits"].to_numpy()
    np.testing.assert_array_equal(first, again)


def test_tau_slider_opens_and_closes_the_gate(periodic_stream: np.ndarray) -> None:
    explorer = make(periodic_stream)
    explorer.step(50)
    explorer.tau_slider.value = 10.0
    assert explorer.learner.config.tau == pytest.approx(10.0)
    assert not explorer.step(40)["memory_learned"].any()
    explorer.set_tau(1e-4)
    assert explorer.tau_slider.value == pytest.approx(1e-4)
    assert explorer.step(40)["memory_learned"].all()
    explorer.reset()  # back to the learner as it was built, and the slider with it
    assert explorer.learner.config.tau == 1e-2 and explorer.tau_slider.value == pytest.approx(1e-2)


def test_lr_slider_sets_every_learning_rate(periodic_stream: np.ndarray) -> None:
    explorer = make(periodic_stream)
    learner = explorer.learner
    explorer.lr_slider.value = 1e-3
    assert learner.config.lr == pytest.approx(1e-3)
    assert learner.memory_opt.lrs == pytest.approx([1e-3])
    assert learner.head_opt.lrs == pytest.approx([1e-3 * 0.1**level for level in range(3)])
    explorer.reset()
    assert learner.config.lr == 1e-2 and learner.memory_opt.lrs == [1e-2]
    assert explorer.lr_slider.value == pytest.approx(1e-2) and explorer.lr_value.value == "1.0e-02"


def test_one_redraw_per_step_call_and_thinned_traces(periodic_stream: np.ndarray,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    explorer = make(periodic_stream, max_points=100)
    calls = []
    original = explorer.figure.batch_update
    monkeypatch.setattr(explorer.figure, "batch_update", lambda: calls.append(1) or original())
    explorer.step(1_000)
    assert len(calls) == 1
    x = list(explorer.trace("bits").x)
    assert len(x) <= 100 and x[0] == 1 and x[-1] == 1_000


def test_layer_heatmap_shows_the_current_states(periodic_stream: np.ndarray) -> None:
    explorer = make(periodic_stream, heatmap_units=8)
    explorer.step(37)
    z = np.asarray(explorer.trace("layer states").z, dtype=float)
    assert z.shape == (3, 8)
    for level, state in enumerate(explorer.learner.states):
        np.testing.assert_allclose(z[level], state[0, :8].numpy(), rtol=1e-6)


def test_run_ticks_step_and_stop_at_the_end(periodic_stream: np.ndarray) -> None:
    explorer = make(periodic_stream[:60])
    explorer.n_slider.value = 20
    explorer.play.value = 1  # what the frontend's Play widget sends on every tick
    assert 0 < explorer.steps <= 20
    while not explorer.done:
        explorer.play.value += 1
    assert explorer.steps == explorer.total and not explorer.play.playing
    assert explorer.step(5).empty


def test_explorer_works_on_a_learner_without_sleep(periodic_stream: np.ndarray) -> None:
    pytest.importorskip("sharp.baselines")
    from sharp.runs.registry import baseline_spec, build_learner

    learner = build_learner(baseline_spec("gru", layers=1, hidden=16, embedding=8, window=3,
                                          vocab_size=7, tbptt=4))
    explorer = StreamExplorer(learner, periodic_stream)
    assert explorer.sleep_button.disabled and explorer.tau_slider.disabled
    assert [t.name.split(" (")[0] for t in explorer.figure.data] == ["bits", "sleep",
                                                                     "top-1 correct"]
    explorer.step(64)
    assert explorer.steps == 64 and len(explorer.trace("bits").x) == 64
    explorer.lr_slider.value = 1e-2
    assert learner.optimiser.lrs == pytest.approx([1e-2])
    with pytest.raises(TypeError, match="no sleep phase"):
        explorer.sleep()
    explorer.reset()
    assert explorer.steps == 0


def test_reset_restores_the_learner_as_built_and_sliders_show_its_values() -> None:
    built = preset("quick", layers=2, hidden=16, embedding=8, tau=0.0, lr=1.0)
    explorer = StreamExplorer(Sharp(built), np.arange(100) % 27)
    learner = explorer.learner
    assert explorer.tau_value.value == "0" and explorer.lr_value.value == "1.0e+00"
    assert explorer.lr_slider.value == 1.0 and explorer.lr_slider.max >= 0
    explorer.step(20)
    explorer.reset()  # no slider touched: nothing about the learner changes
    assert learner.config == built
    assert learner.memory_opt.lrs == [1.0] and learner.head_opt.lrs == [1.0, 0.1]
    explorer.set_tau(3e-3)
    explorer.lr_slider.value = 1e-5
    assert learner.config.tau == 3e-3 and learner.memory_opt.lrs == pytest.approx([1e-5])
    explorer.reset_button.click()
    assert learner.config == built and learner.memory_opt.lrs == [1.0]
    assert explorer.tau_value.value == "0" and explorer.lr_slider.value == 1.0
    explorer.set_tau(50.0)  # outside the initial range: the slider widens to show it
    assert explorer.tau_slider.value == pytest.approx(50.0) and learner.config.tau == 50.0


def test_helpers() -> None:
    np.testing.assert_allclose(rolling_mean(np.array([1.0, 3.0, 5.0, 7.0]), 2), [1, 2, 4, 6])
    assert list(thin(5, 10)) == [0, 1, 2, 3, 4]
    picked = thin(10_000, 50)
    assert len(picked) <= 50 and picked[0] == 0 and picked[-1] == 9_999
    assert decoder_for(27)(np.array([0, 1, 2])) == " ab"
    assert decoder_for(7)(np.array([0, 6])) == "06"
    assert not math.isnan(rolling_mean(np.ones(3), 10)[-1])
