"""The baselines (SPEC §7) implement the learner protocol as SHARP does."""

from __future__ import annotations

import copy
import io
import math

import numpy as np
import pytest
import torch

from sharp.baselines import (
    ClockworkConfig,
    ClockworkRNN,
    RecurrentConfig,
    TransformerBaseline,
    TransformerConfig,
    baseline_preset,
)
from sharp.baselines.clockwork import ClockworkCore, active_modules
from sharp.config import ConfigError
from sharp.protocol import Learner
from sharp.runs.benchmark import segment_benchmark
from sharp.runs.registry import LearnerSpec, baseline_spec, build_learner
from sharp.runs.stream import run_stream

W = 3
TINY: dict[str, dict[str, object]] = {
    "rnn": {"layers": 2, "hidden": 16, "embedding": 8, "tbptt": 4},
    "lstm": {"layers": 2, "hidden": 16, "embedding": 8, "tbptt": 4},
    "gru": {"layers": 2, "hidden": 16, "embedding": 8, "tbptt": 4},
    "clockwork": {"modules": 3, "hidden": 8, "embedding": 8, "tbptt": 4},
    "transformer": {"d_model": 16, "layers": 1, "heads": 2, "context": 16, "stride": 8},
}
#: (kind, overrides) of every streaming mode of every baseline.
VARIANTS = [
    ("rnn", {}), ("lstm", {}), ("gru", {}),
    ("rnn", {"mode": "paper"}), ("lstm", {"mode": "paper"}),
    ("gru", {"mode": "paper", "carry": "first"}),
    ("clockwork", {}), ("clockwork", {"connectivity": "paper", "mode": "paper"}),
    ("transformer", {}),
]
IDS = [f"{kind}-{'-'.join(map(str, o.values())) or 'default'}" for kind, o in VARIANTS]
V = 7


def tiny_spec(kind: str, **overrides: object) -> LearnerSpec:
    base = {"vocab_size": V, "window": W, "lr": 1e-2, "threads": 1, "device": "cpu"}
    return baseline_spec(kind, **{**base, **TINY[kind], **overrides})


def tiny(kind: str, **overrides: object) -> Learner:
    return build_learner(tiny_spec(kind, **overrides))


def stream_bits(learner: Learner, tokens: np.ndarray, offset: int = 0) -> np.ndarray:
    return run_stream(learner, tokens, offset=offset, progress=False)["bits"].to_numpy()


def weights(learner: Learner) -> list[torch.Tensor]:
    module = learner.model if isinstance(learner, TransformerBaseline) else learner.core
    return [p.detach().clone() for p in module.parameters()]


def same_tensors(a: object, b: object) -> bool:
    """Deep equality of nested checkpoint data (tensors compared exactly)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_tensors(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same_tensors(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@pytest.mark.parametrize(("kind", "overrides"), VARIANTS, ids=IDS)
def test_learns_a_repetitive_stream(kind, overrides, periodic_stream) -> None:
    learner = tiny(kind, **overrides)
    bits = stream_bits(learner, periodic_stream[:700])
    assert bits[:10].mean() > 2.0  # it had to learn: chance is log2(7) = 2.8 bits
    assert bits[-100:].mean() < 0.2
    assert learner.evaluate(periodic_stream[1500:1700]).mean_bits() < 0.2


@pytest.mark.parametrize(("kind", "overrides"), VARIANTS, ids=IDS)
def test_predicts_before_learning(kind, overrides, random_stream) -> None:
    # a learner that saw the target before predicting it would beat chance on noise
    records = run_stream(tiny(kind, **overrides), random_stream[:800], progress=False)
    late = records.iloc[200:]
    assert late["bits"].mean() >= math.log2(V) - 0.05
    assert late["correct"].mean() < 0.2


@pytest.mark.parametrize(("kind", "overrides"), VARIANTS, ids=IDS)
def test_streaming_predictions_match_evaluation(kind, overrides, random_stream) -> None:
    # with weights that cannot move (lr 1e-30), learn() must predict every token exactly as
    # evaluate() does from a fresh state: same tokens fed, same context, once each
    learner = tiny(kind, lr=1e-30, **overrides)
    tokens = random_stream[:90]
    streamed = stream_bits(learner, tokens)
    evaluated = learner.evaluate(tokens).bits
    assert streamed.shape == evaluated.shape == (len(tokens) - W,)
    np.testing.assert_allclose(streamed, evaluated, atol=1e-4)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru", "clockwork"])
def test_tbptt_feeds_each_token_once_and_steps_once_per_block(kind, random_stream) -> None:
    learner = tiny(kind, tbptt=5)
    predicted: list[int] = []
    trained: list[list[int]] = []
    run, step = learner.core.run, learner.optimiser.step

    def recording_run(ids, state, clock):
        if torch.is_grad_enabled():  # the block's re-run for its update
            trained.append(ids.tolist())
        else:
            assert clock == len(predicted)  # the clock counts the tokens fed so far
            predicted.extend(ids.tolist())
        return run(ids, state, clock)

    def recording_step():
        trained[-1].append(len(predicted))
        step()

    learner.core.run, learner.optimiser.step = recording_run, recording_step
    n = 23
    stream_bits(learner, random_stream[: n + W])
    tokens = random_stream.tolist()
    assert predicted == tokens[: n + W - 1]  # every token fed once, in order
    # one update after every 5 predictions, on exactly the tokens fed since the last one
    # (the first block also holds the first window)
    ends = [W - 1 + 5 * b for b in range(1, n // 5 + 1)]
    starts = [0, *ends[:-1]]
    assert trained == [[*tokens[a:b], b] for a, b in zip(starts, ends, strict=True)]
    assert learner.block_targets == tokens[20 + W : n + W]


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru", "clockwork"])
def test_tbptt_gradient_flows_through_the_whole_block(kind, random_stream) -> None:
    learner = tiny(kind, tbptt=6, lr=1e-30)
    reference = copy.deepcopy(learner.core)
    grads: list[list[torch.Tensor]] = []
    step = learner.optimiser.step

    def recording_step():
        grads.append([p.grad.clone() for p in learner.core.parameters()])
        step()

    learner.optimiser.step = recording_step
    stream_bits(learner, random_stream[: 6 + W])
    # the block's mean loss, backpropagated through all of its steps from the start state
    inputs = torch.tensor(random_stream[: 6 + W - 1])
    outputs, _ = reference.run(inputs, reference.initial_state(), 0)
    loss = torch.nn.functional.cross_entropy(reference.readout(outputs[-6:]),
                                             torch.tensor(random_stream[W : 6 + W]))
    loss.backward()
    assert len(grads) == 1
    for got, p in zip(grads[0], reference.parameters(), strict=True):
        torch.testing.assert_close(got, p.grad, atol=1e-6, rtol=1e-4)


def test_tbptt_refuses_windows_that_do_not_follow_on(random_stream) -> None:
    for kind in ("lstm", "transformer"):
        learner = tiny(kind)
        learner.learn(random_stream[:W], int(random_stream[W]))
        with pytest.raises(ValueError, match="consecutive stride-1 windows"):
            learner.learn(random_stream[5 : 5 + W], int(random_stream[5 + W]))
        learner.reset_state()
        learner.learn(random_stream[5 : 5 + W], int(random_stream[5 + W]))


@pytest.mark.parametrize(("kind", "overrides"), VARIANTS, ids=IDS)
def test_checkpoint_resumes_bit_exactly(kind, overrides, random_stream) -> None:
    spec = tiny_spec(kind, **overrides)
    first, n = build_learner(spec), 203  # mid TBPTT block and mid transformer chunk
    stream_bits(first, random_stream[: n + W])
    buffer = io.BytesIO()
    torch.save(copy.deepcopy(first.state_dict()), buffer)
    buffer.seek(0)
    resumed = build_learner(spec)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    tail = random_stream[n : n + 300 + W]
    straight = stream_bits(first, tail, offset=n)
    again = stream_bits(resumed, tail, offset=n)
    assert np.array_equal(straight, again)
    assert all(torch.equal(p, q) for p, q in zip(weights(first), weights(resumed), strict=True))


def test_checkpoints_of_another_config_or_kind_are_refused() -> None:
    state = tiny("lstm").state_dict()
    with pytest.raises(ValueError, match=r"another configuration \(hidden: checkpoint 16"):
        tiny("lstm", hidden=12).load_state_dict(state)
    with pytest.raises(ValueError, match=r"another configuration.*mode"):
        tiny("lstm", mode="paper").load_state_dict(state)
    with pytest.raises(ValueError, match="not a gru checkpoint"):
        tiny("gru").load_state_dict(state)
    with pytest.raises(ValueError, match=r"another configuration.*connectivity"):
        tiny("clockwork").load_state_dict(tiny("clockwork", connectivity="paper").state_dict())
    with pytest.raises(ValueError, match=r"another configuration.*context"):
        tiny("transformer").load_state_dict(tiny("transformer", context=8).state_dict())
    # runtime fields may differ
    tiny("lstm", threads=2).load_state_dict(state)


@pytest.mark.parametrize(("kind", "overrides"), VARIANTS, ids=IDS)
def test_evaluate_leaves_the_learner_untouched(kind, overrides, random_stream) -> None:
    learner = tiny(kind, **overrides)
    stream_bits(learner, random_stream[: 101 + W])
    before = learner.state_dict()
    first = learner.evaluate(random_stream[500:700])
    assert same_tensors(learner.state_dict(), before)
    assert np.array_equal(learner.evaluate(random_stream[500:700]).bits, first.bits)
    assert first.tokens == 200 - W


def test_clockwork_modules_update_only_on_multiples_of_their_period(random_stream) -> None:
    learner = tiny("clockwork", modules=4)
    core = learner.core
    learner.learn(random_stream[:W], int(random_stream[W]))
    for i in range(1, 40):
        before = learner.state.clone()
        learner.learn(random_stream[i : i + W], int(random_stream[i + W]))
        clock = learner.clock - 1  # the time the new token was fed at
        for module in range(4):
            moved = not torch.equal(core.module_state(before, module),
                                    core.module_state(learner.state, module))
            assert moved == (clock % 2**module == 0), (clock, module)
    assert [active_modules(t, 4) for t in range(9)] == [4, 1, 2, 1, 3, 1, 2, 1, 4]


@pytest.mark.parametrize("connectivity", ["koutnik", "paper"])
def test_clockwork_connectivity_follows_the_mode(connectivity, random_stream) -> None:
    learner = tiny("clockwork", modules=3, connectivity=connectivity)
    stream_bits(learner, random_stream[:80])  # trained weights: the mask must have held
    core: ClockworkCore = learner.core
    h = core.hidden

    def next_state(state: torch.Tensor, clock: int) -> torch.Tensor:
        with torch.no_grad():
            return core.run(torch.tensor([2]), state, clock)[1]

    state = learner.state.clone()
    slow_moved, fast_moved = state.clone(), state.clone()
    slow_moved[2 * h :] += 0.5  # the slowest module
    fast_moved[:h] += 0.5  # the fastest module
    # clock 1: only module 0 updates; it reads module 2 iff modules read slower ones
    fast_sees_slow = not torch.equal(next_state(state, 1)[:h], next_state(slow_moved, 1)[:h])
    # clock 4: every module updates; module 2 reads module 0 iff modules read faster ones
    slow_sees_fast = not torch.equal(next_state(state, 4)[2 * h :],
                                     next_state(fast_moved, 4)[2 * h :])
    assert fast_sees_slow == (connectivity == "koutnik")
    assert slow_sees_fast == (connectivity == "paper")
    # the recurrent matrix is block-triangular the right way round
    blocks = core.recurrent_matrix().unflatten(0, (3, h)).unflatten(2, (3, h))
    nonzero = blocks.abs().sum(dim=(1, 3)) > 0  # [module i, module j]: does i read j
    index = torch.arange(3)
    reads = index[None, :] >= index[:, None] if connectivity == "koutnik" else (
        index[None, :] <= index[:, None])
    assert torch.equal(nonzero, reads)
    assert learner.parameter_count() == sum(p.numel() for p in core.parameters())
    assert core.parameter_count() - sum(b.numel() for b in core.recurrent) == (
        7 * 8 + 3 * h * 8 + 3 * h + 3 * h * 7 + 7)


def test_transformer_context_rule_full_and_paper_evaluation(random_stream) -> None:
    learner = tiny("transformer", context=8, stride=4)
    stream_bits(learner, random_stream[:200])
    tokens = random_stream[300:330]
    full = learner.evaluate(tokens).bits
    # reference: target p sees t[max(0, (k+1)S - C) : p] with k = (p-1)//S, a fresh pass
    model = learner.model
    with torch.no_grad():
        for p in range(W, len(tokens)):
            start = max(0, ((p - 1) // 4 + 1) * 4 - 8)
            logits = model(torch.tensor(tokens[None, start:p]))[0, -1]
            nats = torch.nn.functional.cross_entropy(logits, torch.tensor(int(tokens[p])))
            assert full[p - W] == pytest.approx(nats.item() / math.log(2), abs=1e-4)
    # a token more than W back: full context sees it, the paper's W-token windows do not
    changed = tokens.copy()
    changed[0] = (changed[0] + 1) % V
    paper = tiny("transformer", context=8, stride=4, eval_mode="paper")
    paper.load_state_dict({**learner.state_dict(), "config": paper.config.to_dict()})
    target = W + 3  # its window starts after token 0; its full context (from 0) does not
    assert learner.evaluate(changed).bits[target - W] != full[target - W]
    assert paper.evaluate(changed).bits[target - W] == paper.evaluate(tokens).bits[target - W]
    assert not np.allclose(paper.evaluate(tokens).bits, full)
    assert paper.config.label == "Transformer (eval=paper)"


def test_transformer_paper_preset_has_about_12_d2_parameters_per_layer() -> None:
    config = baseline_preset("transformer", "paper", device="cpu")
    assert (config.d_model, config.layers, config.heads, config.context, config.ff) == (
        256, 12, 8, 1024, 704)
    count = TransformerBaseline(config).parameter_count()
    assert count == pytest.approx(12 * 12 * 256**2, rel=0.05)


def test_presets_labels_and_validation() -> None:
    quick = baseline_preset("lstm")
    assert (quick.layers, quick.hidden, quick.embedding, quick.cell) == (2, 128, 30, "lstm")
    paper = baseline_preset("gru", "paper", mode="paper")
    assert (paper.layers, paper.hidden, paper.embedding) == (5, 512, 100)
    assert paper.label == "GRU (paper)" and quick.label == "LSTM (tbptt)"
    assert RecurrentConfig.from_dict(paper.to_dict()) == paper
    cw = baseline_preset("clockwork", "paper")
    assert (cw.modules, cw.hidden, cw.periods) == (5, 512, (1, 2, 4, 8, 16))
    assert ClockworkConfig(connectivity="paper").label == "CW-RNN (tbptt, paper wiring)"
    assert baseline_spec("rnn", mode="paper").name == "RNN (paper)"
    assert baseline_spec("lstm", label="mine").name == "mine"
    with pytest.raises(ConfigError, match="mode must be one of"):
        RecurrentConfig(mode="windowed")
    with pytest.raises(ConfigError, match="heads must divide d_model"):
        TransformerConfig(d_model=30, heads=4)
    with pytest.raises(ConfigError, match="stride"):
        TransformerConfig(context=16, stride=5)
    with pytest.raises(ConfigError, match="connectivity must be one of"):
        ClockworkConfig(connectivity="dense")
    with pytest.raises(ConfigError, match="unknown RecurrentConfig keys"):
        RecurrentConfig.from_dict({"hiden": 3})
    with pytest.raises(ConfigError, match="cannot have cell='gru'"):
        build_learner(LearnerSpec("lstm", {"cell": "gru"}))
    with pytest.raises(ConfigError, match="unknown clockwork preset"):
        baseline_preset("clockwork", "huge")
    with pytest.raises(ValueError, match="unknown learner kind"):
        build_learner(LearnerSpec("mamba"))
    learner = tiny("gru")
    with pytest.raises(ValueError, match="window has 2 tokens"):
        learner.learn(np.array([1, 2]), 3)
    with pytest.raises(ValueError, match="target token 7 is outside"):
        learner.learn(np.array([1, 2, 3]), 7)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        learner.evaluate(np.array([1, 2, 3, 4, 9]))
    assert isinstance(learner, Learner) and isinstance(tiny("clockwork"), ClockworkRNN)


def test_every_baseline_flows_through_the_segment_benchmark(random_stream) -> None:
    specs = [tiny_spec(kind) for kind in TINY] + [tiny_spec("lstm", mode="paper")]
    result = segment_benchmark(specs, random_stream[:600], segment=200, slice_len=40,
                               learners=2, progress=False)
    table = result.results
    assert set(table["learner"]) == {spec.name for spec in specs}
    assert len(table) == len(specs) * 2 * 3
    assert table["bits"].between(1.0, 10.0).all()
    assert (table["tokens"] == 40 - W).all()
