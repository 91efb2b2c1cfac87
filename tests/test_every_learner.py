"""Every learner kind (SHARP on both engines, every baseline mode) checks its input the
same way, evaluates any slice longer than W, and reports divergence (issue 12, cases 2,
3 and 12)."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch
from conftest import tiny_config

from sharp.config import preset
from sharp.engines.ensemble import SharpEnsemble
from sharp.explore.hierarchy import layer_states
from sharp.explore.widgets import StreamExplorer
from sharp.model.learner import Sharp
from sharp.protocol import Diverged, Learner
from sharp.runs.registry import BASELINE_KINDS, LearnerSpec, baseline_spec, build_learner
from sharp.runs.stream import evaluate_slices, run_stream

V, W = 7, 3
TINY: dict[str, dict[str, object]] = {
    "rnn": {"layers": 2, "hidden": 16, "embedding": 8, "tbptt": 4},
    "lstm": {"layers": 2, "hidden": 16, "embedding": 8, "tbptt": 4},
    "gru": {"layers": 2, "hidden": 16, "embedding": 8, "tbptt": 4},
    "clockwork": {"modules": 3, "hidden": 8, "embedding": 8, "tbptt": 4},
    "transformer": {"d_model": 16, "layers": 1, "heads": 2, "context": 16, "stride": 8},
}
#: Every learner kind, engine and streaming / evaluation mode.
SPECS: dict[str, LearnerSpec] = {
    "sharp-torch": LearnerSpec("sharp", tiny_config(engine="torch").to_dict()),
    "sharp-fused": LearnerSpec("sharp", tiny_config(engine="auto").to_dict()),
    **{kind: baseline_spec(kind, vocab_size=V, window=W, lr=1e-2, threads=1, device="cpu",
                           **TINY[kind]) for kind in BASELINE_KINDS},
    "gru-paper": baseline_spec("gru", vocab_size=V, window=W, lr=1e-2, device="cpu",
                               mode="paper", carry="first", **TINY["gru"]),
    "transformer-paper": baseline_spec("transformer", vocab_size=V, window=W, lr=1e-2,
                                       device="cpu", eval_mode="paper", **TINY["transformer"]),
}


@pytest.fixture(params=list(SPECS), ids=list(SPECS))
def learner(request: pytest.FixtureRequest) -> Learner:
    return build_learner(SPECS[request.param])


#: What every learner says when given text or None instead of token ids.
TEXT = (r"got {} for the {}: token ids are needed; encode text first "
        r"\(e.g. sharp.data.TEXT8.encode\(text\)\)")


def trained(learner: Learner, stream: np.ndarray, n: int = 60) -> Learner:
    run_stream(learner, stream[: n + W], progress=False)
    return learner


# -- case 12: one input check, one set of messages ------------------------------------------
def test_learn_and_evaluate_check_input_as_the_stream_does(learner, random_stream) -> None:
    floats = np.array([8.9, 5.9, 12.9, 12.9, 15.9]) % V
    for bad, message in [
        (floats, "tokens must be integer ids, got dtype float64; encode text first"),
        (np.array([1, 2, 9, 3, 4]), "token id 9 at position 2 is outside the vocabulary 0..6"),
        (np.array([1, 2, 3, -1, 4]), "token id -1 at position 3 is outside"),
        (np.array([True, False, True, True, False]), "tokens must be integer ids, got dtype"),
        (np.ones((2, 4), dtype=np.int64), "a stream is a 1-D token sequence, got shape"),
        (np.array([1, 2, 3]), "the stream has 3 tokens but a window of W=3 needs at least 4"),
        ("hello world", TEXT.format("a str", "stream")),  # review item 16: text, not ids
        (None, TEXT.format("None", "stream")),
        (iter([1, 2, 3, 4, 5]), r"got an iterator \(list_iterator\) for the stream, which is not "
                                r"a sequence: give a list, a numpy array or a tensor of token ids"),
        ((t for t in range(5)), r"got an iterator \(generator\) for the stream"),
    ]:
        for call in (learner.evaluate, lambda t: run_stream(learner, t, progress=False)):
            with pytest.raises(ValueError, match=message):
                call(bad)
    before = learner.state_dict()
    for window, target, message in [
        (floats[:W], 1, "tokens must be integer ids, got dtype float64"),
        (np.array([1, 9, 2]), 1, "token id 9 at position 1 is outside the vocabulary 0..6"),
        (np.array([1, 2]), 1, "window has 2 tokens but this learner's window W is 3"),
        (np.ones((1, W), dtype=np.int64), 1, r"window has shape \(1, 3\) but"),
        (np.array([1, 2, 3]), 3.7, "the target must be an integer token id, got 3.7"),
        (np.array([1, 2, 3]), torch.tensor(2.0), "the target must be an integer token id"),
        (np.array([1, 2, 3]), 7, "target token 7 is outside the vocabulary 0..6"),
        ("abc", 1, TEXT.format("a str", "window")),
        (None, 1, TEXT.format("None", "window")),
        (np.array([1, 2, 3]), "e", TEXT.format("a str", "target")),
        (np.array([1, 2, 3]), True, r"the target must be an integer token id, got True \(bool\)"),
    ]:
        with pytest.raises(ValueError, match=message):
            learner.learn(window, target)
    assert _same(learner.state_dict(), before)  # a refused step changes nothing


def test_lists_arrays_and_tensors_are_the_same_tokens(random_stream) -> None:
    for spec in SPECS.values():
        learners = [build_learner(spec) for _ in range(3)]
        tokens = random_stream[:40]
        for convert, learner in zip((list, np.asarray, torch.as_tensor), learners, strict=True):
            for i in range(20):
                learner.learn(convert(tokens[i : i + W].tolist()), int(tokens[i + W]))
        bits = [learner.evaluate(convert(tokens.tolist())).bits
                for convert, learner in zip((list, np.asarray, torch.as_tensor), learners,
                                            strict=True)]
        assert np.array_equal(bits[0], bits[1]) and np.array_equal(bits[0], bits[2])


def test_the_issue_example_is_refused_not_truncated() -> None:
    learner = Sharp(preset("quick", layers=2, hidden=16, embedding=8))
    with pytest.raises(ValueError, match="tokens must be integer ids, got dtype float64"):
        learner.evaluate(np.array([8.9, 5.9, 12.9, 12.9, 15.9]))


def test_explorer_and_layer_states_check_tokens_as_the_stream_does() -> None:
    floats = np.array([1.5, 2.5, 3.5, 4.5, 5.5])
    for call in (lambda t: StreamExplorer(Sharp(tiny_config()), t),
                 lambda t: layer_states(Sharp(tiny_config()), t)):
        with pytest.raises(ValueError, match="tokens must be integer ids, got dtype float64"):
            call(floats)
        with pytest.raises(ValueError, match="needs at least 4"):
            call(np.array([1, 2, 3]))


# -- case 2: any slice longer than W ----------------------------------------------------------
#: W+1 and lengths around the tiny transformer's context C=16 and C+S=24 and 2C.
LENGTHS = [W + 1, W + 2, 15, 16, 17, 18, 23, 24, 25, 26, 31, 32, 33, 41]


def test_every_slice_longer_than_w_evaluates_as_a_prefix_of_a_longer_one(
    learner, random_stream
) -> None:
    trained(learner, random_stream)
    tokens = random_stream[500:560]
    full = learner.evaluate(tokens).bits
    for n in LENGTHS:
        short = learner.evaluate(tokens[:n])
        assert short.tokens == n - W
        # every rule predicts token p from tokens before p only, counted from the slice start
        np.testing.assert_allclose(short.bits, full[: n - W], rtol=1e-5, atol=1e-5)


def context_rule_bits(learner: Learner, tokens: np.ndarray) -> np.ndarray:
    """Reference: target p in block k = (p-1)//S is predicted by a fresh pass over
    ``t[max(0, (k+1)S - C) : p]`` (the transformer's full-context rule), in bits."""
    c, s, w = learner.config.context, learner.config.block, learner.window
    bits = []
    with torch.no_grad():
        for p in range(w, len(tokens)):
            start = max(0, ((p - 1) // s + 1) * s - c)
            logits = learner.model(torch.tensor(tokens[None, start:p]))[0, -1]
            nats = torch.nn.functional.cross_entropy(logits, torch.tensor(int(tokens[p])))
            bits.append(nats.item() / math.log(2))
    return np.array(bits)


def test_transformer_short_slices_follow_the_full_context_rule(random_stream) -> None:
    learner = trained(build_learner(SPECS["transformer"]), random_stream, 100)
    tokens = random_stream[300:341]
    reference = context_rule_bits(learner, tokens)
    for n in LENGTHS:
        np.testing.assert_allclose(learner.evaluate(tokens[:n]).bits, reference[: n - W],
                                   atol=1e-4)


def test_quick_transformer_evaluates_90_tokens() -> None:
    learner = build_learner(baseline_spec("transformer", "quick", device="cpu"))
    tokens = np.random.default_rng(0).integers(0, 27, 90)
    assert learner.config.context + learner.config.block > 90  # the slice the issue had
    result = learner.evaluate(tokens)
    assert result.tokens == 90 - learner.window
    np.testing.assert_allclose(result.bits, context_rule_bits(learner, tokens), atol=1e-4)


# -- case 3: divergence is reported where it happens -----------------------------------------
@pytest.mark.parametrize("engine", ["torch", "fused"])
def test_the_issue_divergence_is_reported_on_both_engines(engine) -> None:
    learner = Sharp(preset("quick", layers=2, hidden=16, embedding=8, lr=1e9, engine=engine))
    tokens = np.random.default_rng(0).integers(0, 27, 300)
    with pytest.raises(Diverged) as caught:
        run_stream(learner, tokens, progress=False)
    error = caught.value
    assert isinstance(error, FloatingPointError) and error.step == 2 and error.lr == 1e9
    assert str(error).startswith(f"Sharp ({engine} engine) diverged at stream step 2: its "
                                 "prediction loss is ")
    assert "lr=1e+09" in str(error) and "Lower the learning rate (e.g. lr=1e+08)" in str(error)


def test_every_learner_reports_a_nan_weight_on_its_next_step(learner, random_stream) -> None:
    trained(learner, random_stream, 40)
    module = learner.net if isinstance(learner, Sharp) else getattr(
        learner, "model", getattr(learner, "core", None))
    with torch.no_grad():
        for p in module.parameters():
            p.fill_(math.nan)
    with pytest.raises(Diverged, match=r"diverged at stream step 41: its prediction loss is "
                                       r"nan nats with learning rate lr=0.01"):
        run_stream(learner, random_stream[40 : 40 + W + 5], offset=40, progress=False)
    with pytest.raises(Diverged, match="its forward evaluation loss is nan"):
        evaluate_slices(learner, {"forward": random_stream[:50]}, clip=math.log2(V))


def test_every_learner_kind_reports_a_huge_learning_rate(random_stream) -> None:
    for spec in SPECS.values():
        learner = build_learner(LearnerSpec(spec.kind, {**spec.config, "lr": 1e9}))
        with pytest.raises(Diverged, match=r"diverged at stream step \d+"):
            run_stream(learner, random_stream[:300], progress=False)


@pytest.mark.parametrize("engine", ["torch", "fused"])
def test_a_sleep_of_a_diverged_learner_is_reported_not_a_sampling_error(
    engine, random_stream
) -> None:
    """A NaN head-0 weight made the torch engine's next sleep die inside torch.multinomial
    ("probability tensor contains either inf, nan"); it is the learner's divergence, said
    as every other one is, for a learner and for a member of an ensemble."""
    learner = trained(Sharp(tiny_config(engine=engine)), random_stream)
    ensemble = SharpEnsemble(tiny_config(engine="torch"), [0, 1])
    ids = torch.as_tensor(np.stack([random_stream[:60], random_stream[100:160]]))
    for i in range(60 - W):
        ensemble.learn(ids[:, i : i + W], ids[:, i + W])
    assert learner.sleep_pending and bool(ensemble.sleep_pending.all())
    with torch.no_grad():
        for p in learner.heads[0].parameters():
            p.fill_(math.nan)
        for name, p in ensemble.params.items():
            if name.startswith("heads.0."):
                p[1].fill_(math.nan)
    with pytest.raises(Diverged, match=rf"^Sharp \({engine} engine\) diverged: a weight is "
                       r"NaN or infinite with learning rate lr=0.01"):
        learner.sleep()
    with pytest.raises(Diverged, match=r"^SharpEnsemble member 1 diverged: a weight is NaN") as (
            caught):
        ensemble.sleep()
    assert caught.value.member == 1


def test_diverged_crosses_process_boundaries() -> None:
    error = Diverged("LSTM (tbptt)", 0.5, "prediction", math.inf, 7)
    again = pickle.loads(pickle.dumps(error))
    assert str(again) == str(error) and again.step == 7
    assert "LSTM (tbptt) diverged at stream step 7: its prediction loss is inf nats" in str(error)
    member = pickle.loads(pickle.dumps(error.as_member(2)))
    assert (member.member, member.step) == (2, 7)
    assert "LSTM (tbptt) member 2 diverged at stream step 7: its prediction" in str(member)


def _same(a: object, b: object) -> bool:
    """Deep equality of nested state (tensors compared exactly)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


# -- a live learner's config: what it says is what it does -----------------------------
def test_a_new_learning_rate_in_the_config_takes_effect(random_stream) -> None:
    """``learner.config = learner.config.replace(lr=...)`` was silently ignored: two
    learners of one seed, one given lr 0.05 mid-stream, gave identical bits. It now steps
    exactly as one whose optimisers were given the new rate."""
    for name, spec in SPECS.items():
        changed, reference = build_learner(spec), build_learner(spec)
        trained(changed, random_stream, 20)
        trained(reference, random_stream, 20)
        changed.config = changed.config.replace(lr=0.05)
        for optimiser in (reference.memory_opt, reference.head_opt) if name.startswith(
                "sharp") else (reference.optimiser,):
            optimiser.lrs = [0.05 * (rate / optimiser.lrs[0]) for rate in optimiser.lrs]
        if name.startswith("sharp"):
            assert changed.head_opt.lrs == [changed.config.head_lr(level)
                                            for level in range(changed.config.layers)]
        later = random_stream[20:80]
        bits = [learner.evaluate(later).bits for learner in (changed, reference)]
        ran = [run_stream(learner, later, progress=False)["bits"].to_numpy()
               for learner in (changed, reference)]
        assert np.array_equal(*bits) and np.array_equal(*ran), name
        assert not np.array_equal(ran[0], run_stream(build_learner(spec), random_stream[:80],
                                                     progress=False)["bits"].to_numpy()[20:])


@pytest.mark.parametrize("name", ["sharp-torch", "lstm", "transformer"])
def test_a_config_field_that_shaped_the_learner_cannot_change(name: str) -> None:
    learner = build_learner(SPECS[name])
    before = learner.config
    field = "hidden" if name != "transformer" else "d_model"
    with pytest.raises(ValueError, match=rf"\.config: {field} cannot change on a learner "
                                         r"already built \(only .*lr.* can\); build a new "
                                         r"learner from the new config"):
        learner.config = learner.config.replace(**{field: 32})
    with pytest.raises(TypeError, match=r"\.config must stay a "):
        learner.config = preset("quick") if name != "sharp-torch" else SPECS["lstm"]
    assert learner.config is before and getattr(learner.config, field) != 32
