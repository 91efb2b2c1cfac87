"""An ensemble of baselines computes what separate learners compute (SPEC §10), member by
member, for every baseline kind and streaming mode: predictions, losses, weights, Adam
moments and step counts, recurrent states, TBPTT blocks, transformer histories and caches.

Tolerances. A member's arithmetic is its separate learner's up to the summation order of
batched matrix products (``baddbmm`` over the member axis against ``addmm``/``addmv`` or
torch's RNN kernels; at these tiny sizes each a few float32 ulps): from identical states,
eight steps agree within 7e-7. Free-running over 300 steps Adam compounds those ulps, most
where a member has learned its periodic stream and its gradients are tiny (Adam divides them
by their own scale, so a rounding-level difference becomes a step-sized one): the measured
worst cases are 1.6e-6 in logits and losses and 4.3e-6 in a weight, moment or state, so steps
are held to ``ATOL`` = 1e-5 and states to ``STATE_ATOL`` = 5e-5. The authors' modes take an
Adam step every token; at lr 1e-2 that drift reaches 4e-4 in a GRU's logits within 300
steps, so they run at lr 3e-3 (measured 1.3e-6). Step counts, clocks, windows, blocks and
histories must be equal; evaluation equals the extracted member's exactly, and within the
ensemble (checkpoint, member round trip) everything is bit-exact.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import assert_same_state

from sharp.baselines.ensemble import BaselineEnsemble, RecurrentEnsemble, TransformerEnsemble
from sharp.engines.ensemble import SharpEnsemble
from sharp.runs.checkpoints import load_checkpoint, save_checkpoint
from sharp.runs.registry import LearnerSpec, baseline_spec, build_ensemble, build_learner

ATOL = 1e-5
STATE_ATOL = 5e-5
SEEDS = [0, 1, 2]
STEPS = 300

#: Tiny sizes of every kind; vocabulary 7, window 3, lr 1e-2 (so that weights move).
SIZES = {
    "rnn": {"layers": 2, "hidden": 8, "embedding": 4, "tbptt": 4},
    "lstm": {"layers": 2, "hidden": 8, "embedding": 4, "tbptt": 4},
    "gru": {"layers": 2, "hidden": 8, "embedding": 4, "tbptt": 4},
    "clockwork": {"modules": 3, "hidden": 4, "embedding": 4, "tbptt": 4},
    "transformer": {"d_model": 8, "layers": 2, "heads": 2, "context": 8},
}
#: (kind, overrides): every kind in its default mode, and the authors' modes (an Adam step
#: every token there, so at a lower rate: see the module docstring).
PAPER = {"mode": "paper", "lr": 3e-3}
CASES = [
    ("rnn", {}), ("lstm", {}), ("gru", {}), ("clockwork", {}), ("transformer", {}),
    ("rnn", PAPER), ("lstm", {**PAPER, "carry": "first"}), ("gru", PAPER),
    ("clockwork", {**PAPER, "connectivity": "paper"}), ("transformer", {"stride": 2}),
]


def spec(kind: str, **overrides: object) -> LearnerSpec:
    return baseline_spec(kind, "quick", **{"vocab_size": 7, "window": 3, "lr": 1e-2,
                                           **SIZES[kind], **overrides})


def streams(n: int = STEPS + 10) -> list[np.ndarray]:
    """Member 0: period 5; member 1: uniform noise; member 2: period 7."""
    noise = np.random.default_rng(1).integers(0, 7, n)
    return [np.resize([0, 3, 1, 4, 2], n), noise, np.resize([1, 2, 3, 4, 5, 6, 0], n)]


def windows(tokens: list[np.ndarray], i: int, w: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Every member's window at step i (M, W) and its target (M,)."""
    return np.stack([s[i : i + w] for s in tokens]), np.array([s[i + w] for s in tokens])


def assert_step(step, separate: list, x: np.ndarray, y: np.ndarray, atol: float) -> None:
    """One ensemble step against one step of each separate learner."""
    for m, (learner, got) in enumerate(zip(separate, step.results(), strict=True)):
        want = learner.learn(x[m], int(y[m]))
        assert got.target == want.target and not got.memory_learned
        assert got.loss == pytest.approx(want.loss, abs=atol)
        torch.testing.assert_close(got.logits, want.logits, rtol=0, atol=atol)


def assert_trained_members_match(ensemble: BaselineEnsemble, separate: list,
                                 slices: list[np.ndarray]) -> None:
    """After training side by side: every member's state equals its separate learner's
    (which did learn), and evaluating ``slices`` gives member m what ``member(m)`` gives
    alone (exactly) and its separate learner gives (within ATOL)."""
    for m, learner in enumerate(separate):
        state = learner.state_dict()
        assert_same_state(ensemble.member(m).state_dict(), state, STATE_ATOL)
        assert state["optimiser"]["steps"][0] > 10  # the members did learn
    for m, (got, learner) in enumerate(zip(ensemble.evaluate(slices), separate, strict=True)):
        alone = ensemble.member(m).evaluate(slices[m])
        np.testing.assert_array_equal(got.bits, alone.bits)
        np.testing.assert_array_equal(got.correct, alone.correct)
        np.testing.assert_allclose(got.bits, learner.evaluate(slices[m]).bits, atol=ATOL)


@pytest.mark.parametrize(("kind", "mode"), CASES,
                         ids=[",".join([k, *(f"{a}={b}" for a, b in m.items())])
                              for k, m in CASES])
def test_ensemble_equals_separate_learners_step_by_step(kind: str, mode: dict) -> None:
    s = spec(kind, **mode)
    ensemble = build_ensemble(s, SEEDS)
    separate = [build_learner(s.with_seed(seed)) for seed in SEEDS]
    for m, learner in enumerate(separate):
        assert_same_state(ensemble.member(m).state_dict(), learner.state_dict(), atol=0)
    tokens = streams()
    for i in range(STEPS):
        x, y = windows(tokens, i)
        assert_step(ensemble.learn(x, y), separate, x, y, ATOL)
        if i % 100 == 57:  # mid-block: block tokens, clocks and caches must agree too
            for m, learner in enumerate(separate):
                assert_same_state(ensemble.member(m).state_dict(), learner.state_dict(),
                                  STATE_ATOL)
    assert_trained_members_match(ensemble, separate, [stream[:60] for stream in tokens])


@pytest.mark.parametrize("kind", list(SIZES))
def test_checkpoint_and_member_round_trip_resume_bit_exactly(kind: str, tmp_path) -> None:
    s = spec(kind)
    tokens = streams(200)
    ensemble = build_ensemble(s, SEEDS)
    for i in range(102):  # stops inside a TBPTT block and inside a transformer chunk
        ensemble.learn(*windows(tokens, i))
    # issue 12, item 15: an ensemble's checkpoint loads back as that ensemble, seeds and all
    resumed = load_checkpoint(save_checkpoint(ensemble, tmp_path / "ensemble.pt"))
    assert type(resumed) is type(ensemble) and resumed.seeds == SEEDS
    rebuilt = BaselineEnsemble.from_learners([ensemble.member(m) for m in range(len(SEEDS))])
    alone = ensemble.member(1)
    for i in range(102, 180):
        x, y = windows(tokens, i)
        steps = [e.learn(x, y) for e in (ensemble, resumed, rebuilt)]
        for other in steps[1:]:
            for field in ("logits", "loss", "targets"):
                assert torch.equal(getattr(other, field), getattr(steps[0], field))
        # The extracted member continues alone as the member does inside the ensemble.
        got, want = alone.learn(x[1], int(y[1])), steps[0].results()[1]
        assert got.loss == pytest.approx(want.loss, abs=ATOL)
        torch.testing.assert_close(got.logits, want.logits, rtol=0, atol=ATOL)
    for m in range(len(SEEDS)):
        assert_same_state(resumed.member(m).state_dict(), ensemble.member(m).state_dict(), 0)
        assert_same_state(rebuilt.member(m).state_dict(), ensemble.member(m).state_dict(), 0)
    assert_same_state(alone.state_dict(), ensemble.member(1).state_dict(), STATE_ATOL)


@pytest.mark.parametrize("kind", ["lstm", "clockwork", "transformer"])
def test_members_at_different_stream_positions_step_in_groups(kind: str) -> None:
    """Learners gathered mid-stream at different positions (other TBPTT phases, clocks,
    context blocks), and a member reset alone, continue as they would separately."""
    s = spec(kind)
    tokens = streams()
    separate = [build_learner(s.with_seed(seed)) for seed in SEEDS]
    starts = [0, 5, 13]
    for learner, stream, start in zip(separate, tokens, starts, strict=True):
        for i in range(start):
            learner.learn(stream[i : i + 3], int(stream[i + 3]))
    ensemble = BaselineEnsemble.from_learners(separate)
    for i in range(60):
        if i == 30:
            ensemble.reset_state([2])
            separate[2].reset_state()
        x = np.stack([stream[i + a : i + a + 3] for stream, a in zip(tokens, starts, strict=True)])
        y = np.array([stream[i + a + 3] for stream, a in zip(tokens, starts, strict=True)])
        if i >= 30:  # member 2 starts a new stream: its windows jump
            x[2], y[2] = tokens[2][i + 40 : i + 43], tokens[2][i + 43]
        assert_step(ensemble.learn(x, y), separate, x, y, ATOL)
    for m, learner in enumerate(separate):
        assert_same_state(ensemble.member(m).state_dict(), learner.state_dict(), STATE_ATOL)


def test_bad_inputs_are_refused_and_change_nothing() -> None:
    ensemble = build_ensemble(spec("gru"), SEEDS)
    tokens = streams()
    ensemble.learn(*windows(tokens, 0))
    before = ensemble.state_dict()
    with pytest.raises(ValueError, match=r"members learns 3 windows, .*; got 2 windows$"):
        ensemble.learn(np.zeros((2, 3), dtype=np.int64), [0, 0])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        ensemble.learn(np.full((3, 3), 9), [0, 0, 0])
    x, y = windows(tokens, 1)
    x[1] = [6, 6, 6]
    with pytest.raises(ValueError, match="member 1's window does not continue"):
        ensemble.learn(x, y)
    with pytest.raises(ValueError, match="distinct seed"):
        build_ensemble(spec("gru"), [1, 1])
    with pytest.raises(ValueError, match="seeds"):
        build_ensemble(spec("gru"), [0, 1, 5]).load_state_dict(before)
    with pytest.raises(ValueError, match="not a lstm-ensemble checkpoint"):
        build_ensemble(spec("lstm"), SEEDS).load_state_dict(before)
    for m in range(len(SEEDS)):
        assert_same_state(ensemble.member(m).state_dict(), before["members"][m], 0)


def test_build_ensemble_picks_the_engine_of_every_kind() -> None:
    assert isinstance(build_ensemble(LearnerSpec("sharp", {"layers": 2, "hidden": 8,
                                                           "embedding": 4}), [0, 1]),
                      SharpEnsemble)
    for kind in ("rnn", "lstm", "gru", "clockwork"):
        assert isinstance(build_ensemble(spec(kind), [0, 1]), RecurrentEnsemble)
    assert isinstance(build_ensemble(spec("transformer"), [0, 1]), TransformerEnsemble)
    with pytest.raises(ValueError, match="unknown learner kind"):
        build_ensemble(LearnerSpec("perceptron"), [0])


# -- dense inputs (SPEC §11) ---------------------------------------------------------------
#: The dense fixtures of tests/test_dense_inputs.py: a random frozen (V, D) table.
V, D = 40, 12
DENSE_STEPS = 120


@pytest.fixture(scope="module")
def table() -> torch.Tensor:
    return torch.randn(V, D, generator=torch.Generator().manual_seed(7))


def dense_spec(kind: str, **overrides: object) -> LearnerSpec:
    return spec(kind, vocab_size=V, inputs="dense", input_dim=D, **overrides)


def dense_streams(n: int = DENSE_STEPS + 40) -> list[np.ndarray]:
    """Member 0: period 5; member 1: uniform noise; member 2: period 7 (ids across V)."""
    noise = np.random.default_rng(1).integers(0, V, n)
    return [np.resize([3, 14, 15, 9, 26], n), noise, np.resize([1, 22, 33, 4, 35, 6, 39], n)]


@pytest.mark.parametrize(("kind", "mode"), CASES,
                         ids=[",".join([k, *(f"{a}={b}" for a, b in m.items())])
                              for k, m in CASES])
def test_a_dense_ensemble_equals_separate_learners_and_resumes(kind: str, mode: dict,
                                                                table: torch.Tensor,
                                                                tmp_path) -> None:
    """Members read the one frozen table through their own input projections: step by step
    what separate dense learners compute, in evaluation too; a checkpoint, the members
    gathered back and an extracted member continue exactly."""
    s = dense_spec(kind, **mode)
    ensemble = build_ensemble(s, SEEDS, table)
    separate = [build_learner(s.with_seed(seed), table) for seed in SEEDS]
    assert torch.equal(ensemble.table, table) and "embed.linear.weight" in ensemble.params
    assert all(p.dim() == 1 + q.dim() for p, q in zip(
        ensemble.params.values(), separate[0].optimiser.params, strict=True))
    assert all(p.data_ptr() != ensemble.table.data_ptr() for p in ensemble.optimiser.params)
    for m, learner in enumerate(separate):
        assert_same_state(ensemble.member(m).state_dict(), learner.state_dict(), atol=0)
    tokens = dense_streams()
    for i in range(DENSE_STEPS):
        x, y = windows(tokens, i)
        assert_step(ensemble.learn(x, y), separate, x, y, ATOL)
    assert torch.equal(ensemble.table, table)  # frozen
    assert_trained_members_match(ensemble, separate, [stream[:40] for stream in tokens])
    resumed = load_checkpoint(save_checkpoint(ensemble, tmp_path / "ensemble.pt"))
    assert type(resumed) is type(ensemble) and torch.equal(resumed.table, table)
    rebuilt = BaselineEnsemble.from_learners([ensemble.member(m) for m in range(len(SEEDS))])
    alone = ensemble.member(1)
    for i in range(DENSE_STEPS, DENSE_STEPS + 20):
        x, y = windows(tokens, i)
        steps = [e.learn(x, y) for e in (ensemble, resumed, rebuilt)]
        for other in steps[1:]:
            assert torch.equal(other.logits, steps[0].logits)
        assert_step(steps[0], separate, x, y, ATOL)
        got = alone.learn(x[1], int(y[1]))
        torch.testing.assert_close(got.logits, steps[0].results()[1].logits, rtol=0, atol=ATOL)
    for m in range(len(SEEDS)):
        assert_same_state(resumed.member(m).state_dict(), ensemble.member(m).state_dict(), 0)
        assert_same_state(rebuilt.member(m).state_dict(), ensemble.member(m).state_dict(), 0)


def test_a_dense_ensemble_refuses_another_table(table: torch.Tensor) -> None:
    s = dense_spec("gru")
    state = build_ensemble(s, SEEDS, table).state_dict()
    with pytest.raises(ValueError, match="another frozen input table"):
        build_ensemble(s, SEEDS, table + 1).load_state_dict(state)
    learners = [build_learner(s.with_seed(0), table), build_learner(s.with_seed(1), table + 1)]
    with pytest.raises(ValueError, match="one frozen input table: learners 0 and 1"):
        BaselineEnsemble.from_learners(learners)
    with pytest.raises(ValueError, match=r"table=.*input_table"):
        build_ensemble(s, SEEDS)
