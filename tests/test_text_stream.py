"""The text-stream protocol shared by the sleep ablation and the threshold sweep."""

from __future__ import annotations

import pytest

from sharp.experiments.sleep_ablation import WakeAllMemories
from sharp.experiments.text_stream import CONFIG, SLICES, TextCondition, text_curves

TINY = {"train_tokens": 300, "eval_tokens": 100, "every": 150, "reps": 2, "workers": 1,
        "progress": False}
TINY_CONFIG = CONFIG.replace(layers=2, hidden=8, embedding=4, sleep_every=150, sleep_steps=5,
                             tag_buffer=2)


def test_text_curves_labels_seeds_and_sleep_schedule():
    conditions = [
        TextCondition({"condition": "sleeps", "tau": 0.0}, {"tau": 0.0}),
        TextCondition({"condition": "awake", "tau": 0.5}, {"tau": 0.5}, sleep=False,
                      learner=WakeAllMemories),
    ]
    frame = text_curves(conditions, description="test", config=TINY_CONFIG, **TINY)
    assert list(frame.columns[:4]) == ["condition", "tau", "rep", "seed"]
    assert set(frame["slice"]) == set(SLICES)
    assert sorted(frame["samples"].unique()) == [150, 296]
    seeds = frame.groupby("condition")["seed"].apply(lambda s: tuple(sorted(set(s))))
    assert seeds.nunique() == 1 and len(seeds.iloc[0]) == 2
    slept = frame.groupby("condition")["sleeps"].sum()
    assert slept["sleeps"] > 0 and slept["awake"] == 0
    rate = frame.groupby("condition")["memory_update_rate"].mean()
    assert rate["sleeps"] == 1.0 and rate["awake"] < 1.0  # the gate: tau=0 never closes


def test_text_curves_rejects_unknown_options():
    with pytest.raises(TypeError, match="unknown text-stream options"):
        text_curves([TextCondition({"condition": "x"})], description="test", hiden=8)
