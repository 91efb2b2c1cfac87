"""The SHARP learner behaves as SPEC §3–§5 say."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import tiny_config

from sharp.config import ConfigError, SharpConfig, preset
from sharp.model.learner import Sharp, sample_tokens
from sharp.protocol import check_stream
from sharp.runs.checkpoints import load_checkpoint, save_checkpoint
from sharp.runs.stream import run_stream


def snapshot(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def changed(module: torch.nn.Module, before: list[torch.Tensor]) -> bool:
    return any(not torch.equal(p, q) for p, q in zip(module.parameters(), before, strict=True))


def step(learner: Sharp, stream: np.ndarray, i: int):
    w = learner.window
    return learner.learn(stream[i : i + w], int(stream[i + w]))


def test_memory0_learns_iff_recall_ema_exceeds_tau(random_stream: np.ndarray) -> None:
    # tau between the EMA's start (0) and the recall loss of an untrained memory (~ln 7)
    learner = Sharp(tiny_config(tau=1.0, lr=0.05))
    ema, outcomes = 0.0, []
    for i in range(400):
        before = snapshot(learner.memories[0])
        result = step(learner, random_stream % 2, i)  # two symbols: recall becomes easy
        ema = 0.9 * ema + 0.1 * result.recall
        assert result.memory_learned == (ema > 1.0)
        assert changed(learner.memories[0], before) == result.memory_learned
        assert learner.recall_ema == pytest.approx(ema)
        outcomes.append(result.memory_learned)
    assert any(outcomes) and not all(outcomes)
    assert not outcomes[0]  # EMA starts at 0: the first step cannot learn
    assert not outcomes[-1]  # recall got good: the gate closed ("adaptive compute")


def test_heads_learn_every_step_upper_memories_never(random_stream: np.ndarray) -> None:
    learner = Sharp(tiny_config(tau=100.0))  # gate never opens: heads must still learn
    uppers = [snapshot(m) for m in learner.memories[1:]]
    for i in range(30):
        heads = [snapshot(h) for h in learner.heads]
        result = step(learner, random_stream, i)
        assert not result.memory_learned
        assert all(changed(h, b) for h, b in zip(learner.heads, heads, strict=True))
    assert not any(changed(m, b) for m, b in zip(learner.memories[1:], uppers, strict=True))


@pytest.mark.parametrize(("window", "accel"), [(3, 2), (4, 4), (2, 3)])
def test_layer_states_change_exactly_on_multiples_of_stride(
    random_stream: np.ndarray, window: int, accel: int
) -> None:
    learner = Sharp(tiny_config(window=window, accel=accel))
    for i in range(60):
        before = [s.clone() for s in learner.states]
        step(learner, random_stream, i)
        for level, (old, new) in enumerate(zip(before, learner.states, strict=True)):
            assert (not torch.equal(old, new)) == (learner.t % accel**level == 0), (i, level)


def test_tag_buffer_is_bounded_and_sleep_empties_it(random_stream: np.ndarray) -> None:
    learner = Sharp(tiny_config(tau=0.0, tag_buffer=4))
    for i in range(20):
        step(learner, random_stream, i)
    assert len(learner.tags) == 4
    assert learner.sleep_pending
    learner.sleep()
    assert len(learner.tags) == 0 and not learner.sleep_pending


def test_sleep_changes_only_upper_memories_and_only_when_pending(
    random_stream: np.ndarray,
) -> None:
    learner = Sharp(tiny_config(tau=0.0))
    for i in range(40):
        step(learner, random_stream, i)
    lower = [snapshot(learner.memories[0]), *[snapshot(h) for h in learner.heads]]
    uppers = [snapshot(m) for m in learner.memories[1:]]
    report = learner.sleep()
    assert report.slept and len(report.layers) == 2
    assert not changed(learner.memories[0], lower[0])
    assert not any(changed(h, b) for h, b in zip(learner.heads, lower[1:], strict=True))
    assert all(changed(m, b) for m, b in zip(learner.memories[1:], uppers, strict=True))
    # nothing pending now: a second sleep does nothing, but still ends the wake period
    learner.learn(random_stream[:3], int(random_stream[3]))
    learner.sleep_pending = False
    again = [snapshot(m) for m in learner.memories]
    assert not learner.sleep().slept
    assert not any(changed(m, b) for m, b in zip(learner.memories, again, strict=True))
    assert not learner.awake


def test_waking_up_resets_states_and_counter_but_keeps_carry_and_ema(
    random_stream: np.ndarray,
) -> None:
    learner = Sharp(tiny_config(tau=0.0))
    for i in range(10):
        step(learner, random_stream, i)
    carry, ema = learner.carry.clone(), learner.recall_ema
    learner.sleep()
    assert learner.t == 10 and not learner.awake
    result = step(learner, random_stream, 10)
    assert learner.t == 1
    # only layer 0 ticked on the first step after waking: the upper states are zero again
    assert all(torch.count_nonzero(s) == 0 for s in learner.states[1:])
    assert learner.recall_ema == pytest.approx(0.9 * ema + 0.1 * result.recall)
    assert not torch.equal(learner.carry, carry)  # carried on from the kept window state


def test_sleep_ticks_target_every_a_pow_k_and_lower_layers_at_their_strides(
    random_stream: np.ndarray,
) -> None:
    config = tiny_config(tau=0.0, layers=4, window=3, accel=2, sleep_steps=23, tag_buffer=3)
    learner = Sharp(config)
    for i in range(10):
        step(learner, random_stream, i)
    calls = {level: 0 for level in range(4)}
    for level, memory in enumerate(learner.memories):
        original = memory.step

        def counted(x, h, _level=level, _original=original):
            calls[_level] += 1
            return _original(x, h)

        memory.step = counted
    report = learner.sleep(batched=False)
    tags, steps = 3, 23
    for layer in report.layers:
        assert layer.windows == tags * math.ceil(steps / 2**layer.layer)
    # dreams for target k advance layer j < k every 2**j steps, one tag at a time
    expected = {0: 0, 1: 0, 2: 0}
    for target in (1, 2, 3):
        for level in range(target):
            expected[level] += tags * math.ceil(steps / 2**level)
    assert {k: calls[k] for k in expected} == expected
    assert calls[3] == 0


def test_evaluation_matches_the_wake_state_rule_and_learns_nothing(
    random_stream: np.ndarray,
) -> None:
    learner = Sharp(tiny_config(tau=0.0, layers=3, window=3, accel=2))
    run_stream(learner, random_stream[:300], progress=False)
    weights = [p.clone() for p in learner.net.parameters()]
    optimisers = [opt.state_dict() for opt in (learner.memory_opt, learner.head_opt)]
    runtime = (learner.t, learner.recall_ema, [s.clone() for s in learner.states],
               learner.carry.clone(), len(learner.tags), learner.sleep_pending)
    slice_ = random_stream[500:700]
    result = learner.evaluate(slice_)
    # reference: the wake step's bottom-up/top-down rule, one token at a time, no learning
    states = [torch.zeros(1, 16) for _ in range(3)]
    with torch.no_grad():
        for t in range(1, len(slice_) - 3 + 1):
            token = torch.tensor([int(slice_[t + 1])])
            for level in range(3):
                if t % 2**level:
                    break
                source = token if level == 0 else states[level - 1]
                states[level] = learner.memories[level].step(source, states[level])
            context = learner.heads[1](states[1], learner.heads[2](states[2]))
            logits = learner.heads[0](states[0], context)
            nats = torch.nn.functional.cross_entropy(logits, torch.tensor([int(slice_[t + 2])]))
            assert result.bits[t - 1] == pytest.approx(nats.item() / math.log(2), abs=1e-4)
    assert result.tokens == len(slice_) - 3
    assert all(torch.equal(p, q) for p, q in zip(learner.net.parameters(), weights, strict=True))
    after = [opt.state_dict() for opt in (learner.memory_opt, learner.head_opt)]
    for old, new in zip(optimisers, after, strict=True):
        for key in ("exp_avg", "exp_avg_sq", "steps"):
            assert all(torch.equal(a, b) for a, b in zip(old[key], new[key], strict=True))
    assert learner.t == runtime[0] and learner.recall_ema == runtime[1]
    assert all(torch.equal(a, b) for a, b in zip(learner.states, runtime[2], strict=True))
    assert torch.equal(learner.carry, runtime[3])
    assert (len(learner.tags), learner.sleep_pending) == runtime[4:]


@pytest.mark.parametrize("head_type", ["film", "concat"])
def test_upper_context_modulates_head0(random_stream: np.ndarray, head_type: str) -> None:
    learner = Sharp(tiny_config(head_type=head_type))
    for i in range(8):
        step(learner, random_stream, i)
    with torch.no_grad():
        base = learner.heads[0](learner.states[0], learner.context())
        learner.states[2] = torch.randn_like(learner.states[2])  # LayerNorm ignores shifts
        moved = learner.heads[0](learner.states[0], learner.context())
    assert not torch.allclose(base, moved)


def test_checkpoint_resumes_bit_exactly_through_a_sleep(tmp_path, random_stream) -> None:
    config = tiny_config(tau=0.5, sleep_every=300)
    first, n, more = Sharp(config), 250, 550
    run_stream(first, random_stream[: n + 3], progress=False)
    path = save_checkpoint(first, tmp_path / "learner.pt")
    tail = random_stream[n : n + more + 3]
    straight = run_stream(first, tail, offset=n, progress=False)
    resumed_learner = load_checkpoint(path)
    resumed = run_stream(resumed_learner, tail, offset=n, progress=False)
    assert straight["slept"].sum() == 2  # the continuation sleeps at steps 300 and 600
    assert np.array_equal(straight["bits"].to_numpy(), resumed["bits"].to_numpy())
    assert np.array_equal(straight["recall"].to_numpy(), resumed["recall"].to_numpy())
    assert straight["memory_learned"].equals(resumed["memory_learned"])
    for p, q in zip(first.net.parameters(), resumed_learner.net.parameters(), strict=True):
        assert torch.equal(p, q)


def test_checkpoint_from_another_config_is_refused(tmp_path) -> None:
    state = Sharp(tiny_config()).state_dict()
    other = Sharp(tiny_config(hidden=8))
    with pytest.raises(ValueError, match=r"another configuration \(hidden"):
        other.load_state_dict(state)
    with pytest.raises(ValueError, match="not a sharp checkpoint"):
        other.load_state_dict({"weights": {}})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"layers": 3, "hidden": (8, 8)}, "hidden has 2 sizes but layers=3"),
        ({"tau": -0.1}, "tau must be >= 0"),
        ({"window": 0}, r"window \(W\) must be >= 1"),
        ({"accel": 0}, r"accel \(a\) must be >= 1"),
        ({"head_type": "gru"}, "head_type must be"),
        ({"top_k": 99}, "top_k must be"),
    ],
)
def test_inconsistent_configs_are_refused(changes: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SharpConfig(**changes)


def test_presets_exist_with_paper_values() -> None:
    assert preset("text8").hidden == (512,) * 5 and preset("text8").replay_steps == 1025
    small = preset("text8-small")
    assert small.hidden == (128,) * 5 and small.embedding == 30
    assert preset("pg19-char").head_layers == 4 and preset("pg19-char").lr_slowdown == 0.25
    sim = preset("simulation")
    assert (sim.layers, sim.hidden, sim.tau, sim.tag_buffer) == (3, (100,) * 3, 1e-3, 100)
    with pytest.raises(ConfigError, match="unknown preset"):
        preset("text9")


def test_bad_streams_give_clear_errors() -> None:
    learner = Sharp(tiny_config())
    with pytest.raises(ValueError, match="needs at least 4"):
        run_stream(learner, np.array([1, 2, 3]), progress=False)
    with pytest.raises(ValueError, match="needs at least 4"):
        run_stream(learner, np.array([], dtype=np.int64), progress=False)
    with pytest.raises(ValueError, match="token id 9 at position 2 is outside"):
        run_stream(learner, np.array([1, 2, 9, 3, 4]), progress=False)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        learner.evaluate(np.array([1, 2, 3, 4, 8]))
    with pytest.raises(ValueError, match="window has 2 tokens"):
        learner.learn(np.array([1, 2]), 3)
    with pytest.raises(ValueError, match="token id 9 at position 2 is outside the vocabulary"):
        learner.learn(np.array([1, 2, 9]), 3)
    with pytest.raises(ValueError, match="target token 7 is outside"):
        learner.learn(np.array([1, 2, 3]), 7)
    assert check_stream(np.array([1, 2, 3, 4]), 3, 7).size == 4


def test_batched_dreams_equal_sequential_dreams_when_sampling_is_greedy(
    random_stream: np.ndarray,
) -> None:
    # top_k = 1 makes sampling deterministic: batching must not mix tags or steps up
    learner = Sharp(tiny_config(tau=0.0, top_k=1, tag_buffer=5, layers=3))
    for i in range(30):
        step(learner, random_stream, i)
    tags = list(learner.tags)
    for target in (1, 2):
        batched = learner.dream(tags, target)
        sequential = torch.cat([learner.dream([tag], target) for tag in tags])
        assert batched.shape == (5, math.ceil(17 / 2**target), 16)
        torch.testing.assert_close(batched, sequential, rtol=1e-5, atol=1e-6)


def test_batched_dreams_match_sequential_token_statistics(random_stream: np.ndarray) -> None:
    learner = Sharp(tiny_config(tau=0.0, tag_buffer=40, sleep_steps=200))
    for i in range(60):
        step(learner, random_stream, i)
    tags = list(learner.tags)
    batched = learner.dream(tags, 1).mean(dim=(0, 1))
    sequential = torch.cat([learner.dream([tag], 1) for tag in tags]).mean(dim=(0, 1))
    again = learner.dream(tags, 1).mean(dim=(0, 1))
    # two batched draws differ only by sampling noise; sequential draws differ no more
    noise = (batched - again).abs().mean()
    assert (batched - sequential).abs().mean() < 3 * noise + 1e-3


def test_dream_sampling_follows_the_tempered_top_k_distribution() -> None:
    logits = torch.tensor([[0.0, 1.0, 2.0, -30.0, 0.5], [3.0, 0.2, 0.0, -0.1, 0.1]])
    n = 200_000
    uniforms = torch.rand(n, 2, generator=torch.Generator().manual_seed(0))
    for temperature, top_k in [(1.0, None), (0.5, None), (2.0, 3)]:
        tokens = sample_tokens(logits.expand(n, 2, 5), uniforms, temperature, top_k)
        scaled = logits / temperature
        if top_k is not None:  # the distribution over the top-k logits only
            scaled = scaled.masked_fill(scaled < scaled.topk(top_k).values[:, -1:], -math.inf)
        expected = scaled.softmax(-1)
        for row in range(2):
            freq = torch.bincount(tokens[:, row], minlength=5).double() / n
            # 5 standard errors of a binomial frequency at p = 1/2: 0.0056
            np.testing.assert_allclose(freq, expected[row].double(), atol=5 * 0.5 / math.sqrt(n))
            assert freq[expected[row] == 0].sum() == 0


def test_dream_sampling_is_the_same_row_by_row_and_batched() -> None:
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 4, 27, generator=generator)
    uniforms = torch.rand(3, 4, generator=generator)
    batched = sample_tokens(logits, uniforms, 1.0, None)
    for m in range(3):
        for r in range(4):
            assert sample_tokens(logits[m, r], uniforms[m, r], 1.0, None) == batched[m, r]
    # u = 0 picks the first token of nonzero probability; u -> 1 the last
    edge = torch.tensor([[-math.inf, 0.0, 0.0], [0.0, 0.0, -math.inf]])
    assert sample_tokens(edge, torch.tensor([0.0, 1 - 2**-24]), 1.0, None).tolist() == [1, 1]
