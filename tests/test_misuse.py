"""A new user's mistakes with the Python API fail early and clearly (issue 12, review items
9, 10, 11, 13, 14, 16 and 18): each case asserts the error and its message."""

from __future__ import annotations

import dataclasses
import math
import re
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from conftest import tiny_config

from sharp.baselines import (
    ClockworkRNN,
    RecurrentBaseline,
    TransformerBaseline,
    baseline_preset,
)
from sharp.baselines.ensemble import baseline_ensemble
from sharp.config import ConfigError, SharpConfig, preset
from sharp.engines.ensemble import SharpEnsemble
from sharp.engines.runtime import check_device, device_available
from sharp.model.learner import Sharp
from sharp.protocol import EvalResult
from sharp.runs.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from sharp.runs.registry import build_ensemble, build_learner, sharp_spec

V, W = 7, 3
TINY_GRU = {"hidden": 8, "embedding": 4, "vocab_size": V, "window": W, "device": "cpu"}


def sharp_ensemble(seeds: Any = (0, 1, 2)) -> SharpEnsemble:
    return SharpEnsemble(tiny_config(), seeds)


def gru_ensemble(seeds: Any = (0, 1, 2)) -> Any:
    return baseline_ensemble(baseline_preset("gru", **TINY_GRU), seeds)


ENSEMBLES: dict[str, Callable[..., Any]] = {"sharp": sharp_ensemble, "gru": gru_ensemble}


# -- item 9: seeds are a sequence of distinct ints, one check for both ensembles ----------
@pytest.mark.parametrize("make", list(ENSEMBLES.values()), ids=list(ENSEMBLES))
def test_seeds_must_be_distinct_ints(make) -> None:
    for seeds, error, message in [
        ([0.5, 1.7], TypeError, r"seeds must be ints, got 0.5 \(float\)"),
        ([True, 2], TypeError, r"seeds must be ints, got True \(bool\)"),
        ("01", TypeError, "seeds must be a sequence of distinct ints, one per member "
                          r"\(e.g. \[0, 1, 2\]\), got '01' \(str\)"),
        (3, TypeError, r"seeds must be a sequence of distinct ints, .* got 3 \(int\)"),
        (None, TypeError, r"seeds must be a sequence of distinct ints, .* got None \(NoneType\)"),
        ([], ValueError, "an ensemble needs at least one member"),
        ([4, 5, 4], ValueError, "members 0 and 2 share seed 4"),
        ([-1, 2], ValueError, r"seeds must be in 0\.\.2\*\*63-1 .*, got -1 in \[-1, 2\]"),
        ([0, 2**63], ValueError, rf"seeds must be in 0\.\.2\*\*63-1 .*, got {2**63} in"),
    ]:
        with pytest.raises(error, match=message):
            make(seeds)
    assert make(np.array([3, 4])).seeds == [3, 4]
    assert make(range(2)).seeds == [0, 1]


# -- item 10: finite floats, clip > 0, tag_buffer >= 1, bool targets ----------------------
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_every_float_field_of_every_config_refuses_inf_and_nan(value) -> None:
    """The rule sits in the one type check of every config, so no float field escapes it."""
    from sharp.baselines.config import CONFIG_CLASSES

    checked = []
    for cls in {SharpConfig, *CONFIG_CLASSES.values()}:
        for field in dataclasses.fields(cls):
            if field.type == "float":
                checked.append(f"{cls.__name__}.{field.name}")
                with pytest.raises(ConfigError, match=rf"{checked[-1]} must be a finite number "
                                                      rf"\(int or float\), got {value}"):
                    cls(**{field.name: value})
    assert {"SharpConfig.lr", "SharpConfig.tau", "SharpConfig.temperature",
            "TransformerConfig.rope_base", "RecurrentConfig.weight_decay"} <= set(checked)
    with pytest.raises(ConfigError, match=r"SharpConfig.lr must be a finite number"):
        preset("quick", lr=float("inf"))  # the example


def test_clip_must_be_positive() -> None:
    result = EvalResult(np.array([1.0, 6.0]), np.array([True, False]), 0.0)
    assert result.mean_bits(clip=2.0) == 1.5
    for clip in (-1, 0, math.nan):
        with pytest.raises(ValueError, match=rf"clip \(bits per token\) must be > 0, got {clip}"):
            result.mean_bits(clip=clip)


def test_tag_buffer_must_hold_a_tag() -> None:
    with pytest.raises(ConfigError, match=r"tag_buffer must be >= 1 .* got 0"):
        preset("quick", tag_buffer=0)
    assert preset("quick", tag_buffer=1).tag_buffer == 1


def test_a_bool_target_is_refused_like_a_bool_stream() -> None:
    learner = Sharp(tiny_config())
    for target in (True, np.bool_(False), torch.tensor(True)):
        with pytest.raises(ValueError, match=r"the target must be an integer token id, got "
                                             r".*(True|False).* \((bool|Tensor)\)"):
            learner.learn([1, 2, 3], target)
    with pytest.raises(ValueError, match="the target must be an integer token id"):
        sharp_ensemble().learn([[1, 2, 3]] * 3, [1, True, 2])
    assert learner.learn([1, 2, 3], torch.tensor(2)).target == 2


# -- item 11: a device this machine lacks is refused when the config is made -------------
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_missing_device_is_refused_by_every_config() -> None:
    for name, make in [("cuda", lambda: preset("quick", device="cuda")),
                       ("cuda", lambda: baseline_preset("transformer", device="cuda")),
                       ("cuda:1", lambda: sharp_spec("quick", device="cuda:1")),
                       ("mps", lambda: baseline_preset("lstm", device="mps"))]:
        with pytest.raises(ConfigError, match=re.escape(
                f"device '{name}' is not available on this machine (torch {torch.__version__}); "
                "use 'cpu' or 'auto'")):
            make()
    assert not device_available("cuda") and device_available("cpu") and device_available("auto")


@pytest.mark.parametrize("name", ["tpu", "gpu", "meta", "", "cuda:x"])
def test_an_unknown_device_is_refused(name) -> None:
    with pytest.raises(ConfigError, match=rf"unknown device '{name}'; use 'auto', 'cpu', "
                                          r"'cuda', 'cuda:N' or 'mps'"):
        preset("quick", device=name)
    with pytest.raises(ConfigError, match="unknown device"):
        baseline_preset("lstm", device=name)
    check_device("cpu")
    check_device("auto")


# -- item 13: damaged or forged checkpoints raise CheckpointError naming what is wrong ----
def forged(tmp_path, change: Callable[[dict[str, Any]], Any]) -> Any:
    state = Sharp(tiny_config()).state_dict()
    change(state)
    path = tmp_path / "forged.pt"
    torch.save(state, path)
    return path


@pytest.mark.parametrize(("change", "message"), [
    (lambda s: s.pop("weights"), "forged.pt is damaged: it lacks the entry 'weights'"),
    (lambda s: s["runtime"].pop("t"), "forged.pt is damaged: it lacks the entry 't'"),
    (lambda s: s["config"].update(hidden=[9, 9, 9]),
     r"forged.pt: its weights do not match its config \(.*size mismatch for memories.0"),
    (lambda s: s["config"].update(lr=-1.0), "forged.pt holds an invalid config: lr must be > 0"),
    (lambda s: s["config"].update(hidden="big"),
     "forged.pt holds an invalid config: SharpConfig.hidden must be"),
    (lambda s: s["config"].update(colour="red"),
     r"forged.pt holds an invalid config: unknown config keys \['colour'\]"),
    (lambda s: s["config"].pop("ema"),
     r"forged.pt holds a partial config: it lacks the fields \['ema'\]"),
    (lambda s: s.update(kind="perceptron"), "forged.pt cannot be restored: unknown learner kind"),
    (lambda s: s.update(config=[1, 2]), "forged.pt is not a sharp learner checkpoint"),
])
def test_a_forged_checkpoint_raises_checkpoint_error(tmp_path, change, message) -> None:
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(forged(tmp_path, change))


def test_a_partial_config_names_the_missing_fields(tmp_path) -> None:
    path = tmp_path / "partial.pt"
    torch.save({"kind": "sharp", "config": {"hidden": 5}}, path)
    with pytest.raises(CheckpointError, match=r"partial.pt holds a partial config: it lacks the "
                                              r"fields \['accel', 'device', 'ema'"):
        load_checkpoint(path)


def test_a_cuda_checkpoint_still_loads_on_this_machine(tmp_path) -> None:
    path = forged(tmp_path, lambda s: s["config"].update(device="cuda:7"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore" if not device_available("cuda:7") else "error")
        assert load_checkpoint(path, device="cpu").device.type == "cpu"
        with pytest.raises(ConfigError, match="unknown device 'gpu'"):
            load_checkpoint(path, device="gpu")


# -- item 14: a config, a recipe or a learner where one is needed ------------------------
@pytest.mark.parametrize("given", [{"hidden": 32}, "quick", None])
def test_learners_and_builders_name_what_they_need(given) -> None:
    got = rf"got {type(given).__name__}$"
    for make, message in [
        (Sharp, r"Sharp needs a SharpConfig \(e.g. sharp.preset\('quick'\)\), "),
        (RecurrentBaseline, "RecurrentBaseline needs a RecurrentConfig "),
        (ClockworkRNN, "ClockworkRNN needs a ClockworkConfig "),
        (TransformerBaseline, "TransformerBaseline needs a TransformerConfig "),
        (lambda c: SharpEnsemble(c, [0]), "SharpEnsemble needs a SharpConfig "),
        (lambda c: baseline_ensemble(c, [0]), "baseline_ensemble needs a BaselineConfig "),
        (lambda c: build_learner(c), "build_learner needs a LearnerSpec "),
        (lambda c: build_ensemble(c, [0]), "build_ensemble needs a LearnerSpec "),
        (lambda c: save_checkpoint(c, "never-written.pt"), "save_checkpoint needs a Learner "),
    ]:
        with pytest.raises(TypeError, match=message + ".*" + got):
            make(given)
    with pytest.raises(TypeError, match=r"build_ensemble needs a LearnerSpec .* got dict"):
        build_ensemble({"kind": "sharp"}, [0])  # type: ignore[arg-type]


@pytest.mark.parametrize("make", list(ENSEMBLES.values()), ids=list(ENSEMBLES))
def test_member_indices_are_checked(make) -> None:
    ensemble = make()
    assert ensemble.member(2).config.seed == 2
    for m in (5, 3, -1):
        with pytest.raises(IndexError, match=rf"member {m} is out of range 0..2"):
            ensemble.member(m)
        with pytest.raises(IndexError, match=rf"member {m} is out of range 0..2"):
            ensemble.reset_state([0, m])
    with pytest.raises(TypeError, match=r"a member index is an int, got 1.0 \(float\)"):
        ensemble.member(1.0)


# -- item 16: text or None instead of token ids, for ensembles (learners: test_every_learner)
@pytest.mark.parametrize("make", list(ENSEMBLES.values()), ids=list(ENSEMBLES))
def test_ensembles_refuse_text_and_none(make) -> None:
    ensemble = make()
    encode = r"token ids are needed; encode text first \(e.g. sharp.data.TEXT8.encode\(text\)\)"
    for call, message in [
        (lambda: ensemble.learn("abc", [1, 2, 3]), "got a str for the windows: "),
        (lambda: ensemble.learn(None, [1, 2, 3]), "got None for the windows: "),
        (lambda: ensemble.learn(["abc"] * 3, [1, 2, 3]), "got a str for the window: "),
        (lambda: ensemble.learn([[1, 2, 3]] * 3, None), "got None for the targets: "),
        (lambda: ensemble.evaluate(None), "got None for the slices: "),
        (lambda: ensemble.evaluate(["hello world"] * 3), "got a str for the stream: "),
    ]:
        with pytest.raises(ValueError, match=message + encode):
            call()


@pytest.mark.parametrize("make", list(ENSEMBLES.values()), ids=list(ENSEMBLES))
def test_ensembles_evaluate_one_sequence_per_member(make) -> None:
    """``evaluate(np.arange(20) % 7)`` said "20 token sequences for 3 members"."""
    ensemble = make()
    need = (r"^an ensemble of 3 members evaluates 3 token sequences, one per member \(a list "
            r"of 3, or a \(3, T\) array\); got ")
    for tokens, got in [(np.arange(20) % V, "one token sequence of 20 tokens"),
                        (list(range(V)), "one token sequence of 7 tokens"),
                        (torch.arange(3), "one token sequence of 3 tokens"),
                        ([np.arange(20) % V] * 2, "2 token sequences"),
                        (np.zeros((4, 20), dtype=np.int64), "4 token sequences")]:
        with pytest.raises(ValueError, match=need + got + "$"):
            ensemble.evaluate(tokens)
    with pytest.raises(ValueError, match=r"got an iterator \(generator\) for the slices"):
        ensemble.evaluate(row for row in np.zeros((3, 20), dtype=np.int64))
    assert len(ensemble.evaluate(np.zeros((3, 20), dtype=np.int64))) == 3
    # the same rule for a learning step's windows and targets ("2 windows for 3 members")
    windows = np.zeros((3, W), dtype=np.int64)
    for given, message in [
        ((np.zeros(W, dtype=np.int64), [0, 0, 0]), r"learns 3 windows, one per member \(a list "
                                                    r"of 3, or a \(3, W\) array\); got one "
                                                    r"window of 3 tokens$"),
        ((windows, 5), r"learns 3 targets, one per member \(a list of 3, or a \(3,\) array\); "
                       r"got one target 5$"),
        ((windows, [1, 2]), r"learns 3 targets, .*; got 2 targets$"),
    ]:
        with pytest.raises(ValueError, match=r"^an ensemble of 3 members " + message):
            ensemble.learn(*given)


# -- item 18: from_learners says what differs, in its own words --------------------------
def test_from_learners_names_the_difference() -> None:
    a, b = Sharp(tiny_config(hidden=16)), Sharp(tiny_config(hidden=32, seed=1))
    with pytest.raises(ValueError, match=r"from_learners needs learners of one configuration: "
                                         r"learners 0 and 1 differ in hidden \[16, 16, 16\] vs "
                                         r"\[32, 32, 32\]"):
        SharpEnsemble.from_learners([a, b])
    with pytest.raises(ValueError, match="learners 0 and 2 share seed 0"):
        SharpEnsemble.from_learners([a, Sharp(tiny_config(hidden=16, seed=1)), a])
    with pytest.raises(TypeError, match=r"from_learners needs a Sharp .* got RecurrentBaseline"):
        SharpEnsemble.from_learners([a, RecurrentBaseline(baseline_preset("gru", **TINY_GRU))])
    with pytest.raises(ValueError, match="from_learners needs at least one learner"):
        SharpEnsemble.from_learners([])
    assert SharpEnsemble.from_learners([a, Sharp(tiny_config(hidden=16, seed=4))]).seeds == [0, 4]


def test_baseline_from_learners_names_the_difference() -> None:
    from sharp.baselines.ensemble import BaselineEnsemble

    gru = baseline_preset("gru", **TINY_GRU)
    a, b = RecurrentBaseline(gru), RecurrentBaseline(gru.replace(hidden=16, seed=1))
    with pytest.raises(ValueError, match="learners 0 and 1 differ in hidden 8 vs 16"):
        BaselineEnsemble.from_learners([a, b])
    with pytest.raises(ValueError, match="learners 0 and 1 share seed 0"):
        BaselineEnsemble.from_learners([a, RecurrentBaseline(gru)])
    lstm = RecurrentBaseline(baseline_preset("lstm", **TINY_GRU, seed=1))
    with pytest.raises(ValueError, match="differ in cell 'gru' vs 'lstm'"):
        BaselineEnsemble.from_learners([a, lstm])
    clock = ClockworkRNN(baseline_preset("clockwork", vocab_size=V, window=W, device="cpu",
                                         hidden=4, embedding=4, seed=1))
    with pytest.raises(TypeError, match="from_learners needs learners of one kind: learners "
                                        "0 and 1 are a RecurrentBaseline and a ClockworkRNN"):
        BaselineEnsemble.from_learners([a, clock])
