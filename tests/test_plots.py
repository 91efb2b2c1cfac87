"""The notebooks' figures in sharp.explore.plots, from small synthetic data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from sharp.data.streams import plan_segments
from sharp.explore.plots import (
    alpha,
    char_histogram,
    layer_states_figure,
    replay_figure,
    replay_loss_figure,
    segments_figure,
)


def test_alpha_reads_hex_and_rgb() -> None:
    assert alpha("#1f77b4") == "rgba(31,119,180,0.2)"
    assert alpha("rgb(31, 119, 180)", 0.5) == "rgba(31,119,180,0.5)"


def test_char_histogram_draws_the_space_visibly() -> None:
    frequencies = pd.DataFrame({"symbol": [" ", "a", " ", "a"], "share": [0.2, 0.8, 0.3, 0.7],
                                "corpus": ["x", "x", "y", "y"]})
    fig = char_histogram(frequencies)
    assert [t.name for t in fig.data] == ["x", "y"]
    assert list(fig.data[0].x) == ["␣", "a"] and frequencies["symbol"].iloc[0] == " "


def test_segments_figure_draws_forward_after_the_segments() -> None:
    plans = plan_segments(10_000, 2_000, 500, 3)
    spans = pd.DataFrame([
        {"learner": f"learner {p.index}", "part": part, "start": span.start, "length": len(span)}
        for p in plans for part, span in [("train", p.train), *p.slices().items()]
    ])
    fig = segments_figure(spans)
    bars = {t.name: t for t in fig.data}
    assert set(bars) == {"train", "backward", "current", "forward"}
    assert set(bars["forward"].base) == {3 * 2_000 + 1_000}  # just after the segments
    assert "9,500–10,000" in fig.layout.annotations[0].text


def test_layer_states_figure_puts_the_top_layer_first() -> None:
    states = [np.zeros((12, 30)), np.zeros((12, 5))]
    fig = layer_states_figure(states, strides=(1, 4), window=4, units=24)
    assert [a.text for a in fig.layout.annotations] == [
        "layer 1: ticks every 4 tokens, window spans 16 tokens",
        "layer 0: ticks every 1 tokens, window spans 4 tokens"]
    assert np.shape(fig.data[0].z) == (5, 12) and np.shape(fig.data[1].z) == (24, 12)


def test_replay_figures() -> None:
    inputs = {1: torch.zeros(3, 9, 40), 2: torch.zeros(3, 3, 40)}
    fig = replay_figure(inputs, strides=(1, 4, 16), tag=2, units=32)
    assert [np.shape(t.z) for t in fig.data] == [(32, 9), (32, 3)]
    assert fig.layout.annotations[1].text == "layer 2 sees layer 1 every 16 steps"
    assert fig.layout.title.text == "Downsampled replay of tag 2"
    bars = replay_loss_figure({1: 0.5, 2: 0.4}, {1: 0.3, 2: 0.2})
    assert [t.name for t in bars.data] == ["before sleep", "after sleep"]
    assert list(bars.data[1].y) == [0.3, 0.2]
