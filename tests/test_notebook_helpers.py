"""The library functions behind the notebooks: corpus statistics, dreams, the hierarchy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import tiny_config

from sharp.config import preset
from sharp.data import Vocabulary
from sharp.data.stats import (
    char_frequencies,
    corpus_summary,
    entropy_bits,
    hellinger,
    nonstationarity,
    window_histograms,
)
from sharp.explore.dreams import dream, replay_inputs, replay_loss, tag_table, upper_memory_weights
from sharp.explore.hierarchy import context_table, layer_states
from sharp.model.learner import Sharp
from sharp.runs.stream import run_stream

# -- statistics ------------------------------------------------------------------------


def test_histograms_and_hellinger() -> None:
    tokens = np.array([0, 0, 1, 1, 2, 2, 2, 2])
    hist = window_histograms(tokens, 3, window=4)
    np.testing.assert_allclose(hist, [[0.5, 0.5, 0], [0, 0, 1]])
    assert hellinger(hist[0], hist[0]) == pytest.approx(0.0, abs=1e-12)
    assert hellinger(hist[0], hist[1]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="two windows"):
        window_histograms(tokens, 3, window=8)


def test_nonstationarity_separates_drift_from_noise() -> None:
    rng = np.random.default_rng(0)
    stationary = rng.integers(0, 5, 64 * 256)
    curve = nonstationarity(stationary, 5, window=256)
    assert list(curve.columns) == ["lag", "lag_tokens", "hellinger", "std", "pairs", "shuffled"]
    assert curve["lag"].iloc[0] == 1 and curve["lag"].iloc[-1] == 32
    assert (curve["hellinger"] - curve["shuffled"]).abs().max() < 0.01
    # the letter distribution drifts slowly from uniform over 0..4 to mostly 4s
    drift = np.concatenate([rng.choice(5, 256, p=np.r_[np.full(4, (1 - q) / 4), q])
                            for q in np.linspace(0.2, 0.9, 64)])
    curve = nonstationarity(drift, 5, window=256)
    assert curve["hellinger"].iloc[-1] > 2 * curve["hellinger"].iloc[0]
    assert curve["hellinger"].iloc[0] < curve["shuffled"].mean()


def test_frequencies_and_summary() -> None:
    vocab = Vocabulary(" ab")
    table = char_frequencies(np.array([0, 0, 1, 2]), vocab)
    assert list(table["count"]) == [2, 1, 1] and table["share"].sum() == pytest.approx(1.0)
    assert entropy_bits(np.array([1, 1, 1, 1])) == pytest.approx(2.0)
    from sharp.data import load_corpus

    summary = corpus_summary({"wiki": load_corpus("wiki")})
    assert summary.loc["wiki", "symbols used"] == "27 of 27"
    assert 3.5 < summary.loc["wiki", "unigram bits"] < math.log2(27)


# -- dreams ----------------------------------------------------------------------------


def streamed(stream: np.ndarray, steps: int = 120, **overrides: object) -> Sharp:
    learner = Sharp(tiny_config(sleep_every=10_000, **overrides))
    run_stream(learner, stream[: steps + learner.window], progress=False)
    return learner


def test_dreams_are_seeded_and_leave_the_learner_alone(periodic_stream: np.ndarray) -> None:
    learner = streamed(periodic_stream, temperature=4.0)  # a confident learner, dreaming widely
    state = learner.state_dict()
    first = dream(learner, 0, 50, seed=3)
    assert first.shape == (50,) and first.min() >= 0 and first.max() < 7
    np.testing.assert_array_equal(first, dream(learner, 0, 50, seed=3))
    assert not np.array_equal(first, dream(learner, 0, 50, seed=4))
    assert torch.equal(state["rng"], learner.generator.get_state())
    assert len(tag_table(learner)) == len(learner.tags) == 5
    with pytest.raises(ValueError, match="no tags"):
        dream(Sharp(tiny_config()), 0, 5)


def test_replay_inputs_match_what_sleep_trains_on(periodic_stream: np.ndarray) -> None:
    learner = streamed(periodic_stream)
    c = learner.config
    for target in (1, 2):
        seen = replay_inputs(learner, target, seed=0)
        assert seen.shape == (5, math.ceil(c.replay_steps / c.strides[target]),
                              c.hidden[target - 1])
    inputs = replay_inputs(learner, 1, seed=0)
    before = replay_loss(learner, 1, inputs)
    weights = upper_memory_weights(learner)
    assert all(torch.equal(a, b) for a, b in zip(weights, upper_memory_weights(learner),
                                                 strict=True))
    learner.sleep()
    assert replay_loss(learner, 1, inputs) < before
    assert all(not torch.equal(a, b) for a, b in zip(weights, upper_memory_weights(learner),
                                                     strict=True))
    with pytest.raises(ValueError, match="upper layer"):
        replay_inputs(learner, 0)


# -- hierarchy -------------------------------------------------------------------------


def test_context_table_of_the_paper_config() -> None:
    table = context_table(preset("text8"))
    assert list(table["stride a^l"]) == [1, 4, 16, 64, 256]
    assert list(table["context W·a^l (tokens)"]) == [4, 16, 64, 256, 1024]


def test_layer_states_follow_the_wake_strides(random_stream: np.ndarray) -> None:
    learner = Sharp(tiny_config())
    tokens = random_stream[:80]
    held = layer_states(learner, tokens)
    assert [h.shape for h in held] == [(77, 16)] * 3
    # the wake step's own state updates, without learning
    learner.reset_state()
    learner._wake_up()
    for i in range(len(tokens) - learner.window):
        learner.t += 1
        learner.advance(torch.tensor([int(tokens[i + learner.window - 1])]))
        for level in range(3):
            np.testing.assert_allclose(held[level][i], learner.states[level][0].numpy(),
                                       rtol=1e-5, atol=1e-6)
