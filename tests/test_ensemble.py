"""An ensemble of SHARP learners computes what separate torch-engine learners compute
(SPEC §10), member by member: gates, tags, sleeps, weights, moments and RNG.

Tolerances. Member m's arithmetic is the separate learner's up to the rounding order of a
few ops: LayerNorm's backward with a per-member affine is two ops instead of one kernel, and
batched products below MKL's size threshold (the tiny test sizes) use torch's naive kernel
(each ~1 ulp). From identical states one wake step and one sleep agree within ``TIGHT`` =
1e-5. Free-running, Adam (lr = 1e-2 in these tiny configs) compounds those ulps: over 1,100
steps with two sleeps the measured worst cases are ~4e-5 in logits and losses and ~1.5e-4 in
a weight, so free-running steps are held to ``ATOL`` = 1e-4 and weights, moments and states
to ``STATE_ATOL`` = 1e-3. Gate decisions, tag counts, sleep windows and updates, step counts,
flags and the RNG state must be equal; within the ensemble (checkpoint, member round trip)
everything is bit-exact.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import assert_same_state, tiny_config
from safetensors.torch import save_file

from sharp.config import SharpConfig
from sharp.engines.ensemble import SharpEnsemble
from sharp.engines.ensemble.adam import BatchedAdam
from sharp.engines.optim import FusedAdam
from sharp.model.learner import Sharp, SleepReport
from sharp.protocol import Diverged
from sharp.runs.checkpoints import load_checkpoint, save_checkpoint

ATOL = 1e-4
STATE_ATOL = 1e-3
TIGHT = 1e-5
SEEDS = [0, 1, 2]


def config(**overrides: object) -> SharpConfig:
    """Three layers; a periodic stream's recall EMA falls below tau = 0.5 within ~50 steps,
    a random stream's only after hundreds. On the CPU: ``auto`` would put an ensemble on an
    accelerator but a separate learner on the CPU."""
    return tiny_config(**{"tau": 0.5, "sleep_every": 400, "device": "cpu", **overrides})


def streams(n: int = 1_200) -> list[np.ndarray]:
    """Member 0: period 5 (its gate closes within ~50 steps); member 1: uniform noise (its
    gate stays open for hundreds of steps, then opens now and then); member 2: period 7
    (closes)."""
    noise = np.random.default_rng(1).integers(0, 7, n)
    return [np.resize([0, 3, 1, 4, 2], n), noise, np.resize([1, 2, 3, 4, 5, 6, 0], n)]


def windows(tokens: list[np.ndarray], i: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Every member's window at step i (M, W) and its target (M,)."""
    return np.stack([s[i : i + w] for s in tokens]), np.array([s[i + w] for s in tokens])


def summary(reports: list[SleepReport], losses: bool = True) -> list[tuple]:
    """What sleep reports say, without their wall times (and without their losses)."""
    return [(r.slept, r.tags, [(x.layer, x.windows, x.updates)
                               + ((x.first_loss, x.last_loss) if losses else ())
                               for x in r.layers]) for r in reports]


def lockstep(ensemble: SharpEnsemble, separate: list[Sharp], tokens: list[np.ndarray],
             steps: int) -> tuple[list[list[bool]], list[list[bool]]]:
    """Run ``ensemble`` and the ``separate`` learners side by side over ``steps`` wake
    steps, all sleeping every ``sleep_every``: every step's gate decisions, losses and
    logits and every member's state at each sleep and at the end must agree. Returns each
    step's gate decisions and each sleep's per-member ``slept``."""
    c = ensemble.config
    gates, slept = [], []
    for i in range(steps):
        if i % c.sleep_every == c.sleep_every - 1:
            reports, expected = ensemble.sleep(), [learner.sleep() for learner in separate]
            assert summary(reports, losses=False) == summary(expected, losses=False)
            slept.append([report.slept for report in reports])
            for m, learner in enumerate(separate):
                assert_same_state(ensemble.member(m).state_dict(), learner.state_dict(), STATE_ATOL)
        x, y = windows(tokens, i, c.window)
        step = ensemble.learn(x, y)
        for m, (learner, got) in enumerate(zip(separate, step.results(), strict=True)):
            want = learner.learn(x[m], int(y[m]))
            assert got.memory_learned == want.memory_learned, (i, m)
            assert got.loss == pytest.approx(want.loss, abs=ATOL)
            assert got.recall == pytest.approx(want.recall, abs=ATOL)
            torch.testing.assert_close(got.logits, want.logits, rtol=0, atol=ATOL)
        gates.append(step.learned.tolist())
    for m, learner in enumerate(separate):
        assert_same_state(ensemble.member(m).state_dict(), learner.state_dict(), STATE_ATOL)
    return gates, slept


@pytest.mark.parametrize("head_type", ["film", "concat"])
def test_ensemble_equals_separate_learners_step_by_step(head_type: str) -> None:
    c = config(head_type=head_type)
    ensemble = SharpEnsemble(c, SEEDS)
    separate = [Sharp(c.replace(seed=seed, engine="torch")) for seed in SEEDS]
    for m, learner in enumerate(separate):
        assert_same_state(ensemble.member(m).state_dict(), learner.state_dict(), atol=0)
    tokens = streams()
    gates, slept = lockstep(ensemble, separate, tokens, 1_100)
    late = np.array(gates[200:])
    # The periodic members' gates closed for good while the random member's kept opening ...
    assert not late[:, 0].any() and not late[:, 2].any() and late[:, 1].sum() > 100
    # ... so at the second sleep only member 1 had anything pending.
    assert slept == [[True, True, True], [False, True, False]]


def continue_alike(ensemble: SharpEnsemble, resumed: SharpEnsemble, rebuilt: SharpEnsemble,
                   tokens: list[np.ndarray]) -> Sharp:
    """Steps 200..319 with a sleep before step 300 (member 1 has tags to sleep on):
    ``resumed`` (from a checkpoint) and ``rebuilt`` (from the members) take exactly the
    ensemble's steps, and member 1, extracted, continues alone as it does inside the
    ensemble. Returns that extracted member."""
    alone = ensemble.member(1)
    for i in range(200, 320):
        x, y = windows(tokens, i, ensemble.config.window)
        if i == 299:
            reports = [summary(e.sleep()) for e in (ensemble, resumed, rebuilt)]
            assert reports[1] == reports[0] and reports[2] == reports[0]
            assert reports[0][1][0]  # member 1 slept
            alone.sleep()
        steps = [e.learn(x, y) for e in (ensemble, resumed, rebuilt)]
        for other in steps[1:]:
            for field in ("logits", "loss", "recall", "learned"):
                assert torch.equal(getattr(other, field), getattr(steps[0], field))
        got, want = alone.learn(x[1], int(y[1])), steps[0].results()[1]
        assert got.memory_learned == want.memory_learned
        torch.testing.assert_close(got.logits, want.logits, rtol=0, atol=ATOL)
    for m in range(len(SEEDS)):
        assert_same_state(resumed.member(m).state_dict(), ensemble.member(m).state_dict(), 0)
        assert_same_state(rebuilt.member(m).state_dict(), ensemble.member(m).state_dict(), 0)
    assert_same_state(alone.state_dict(), ensemble.member(1).state_dict(), STATE_ATOL)
    return alone


def test_checkpoint_and_member_round_trip_resume_bit_exactly(tmp_path) -> None:
    c = config(sleep_every=150)
    tokens = streams(500)
    ensemble = SharpEnsemble(c, SEEDS)
    for i in range(200):
        if i == 149:
            ensemble.sleep()
        ensemble.learn(*windows(tokens, i, c.window))
    # issue 12, item 15: an ensemble's checkpoint loads back as that ensemble, seeds and all
    resumed = load_checkpoint(save_checkpoint(ensemble, tmp_path / "ensemble.pt"))
    assert isinstance(resumed, SharpEnsemble) and resumed.seeds == SEEDS
    rebuilt = SharpEnsemble.from_learners([ensemble.member(m) for m in range(len(SEEDS))])
    continue_alike(ensemble, resumed, rebuilt, tokens)


def test_one_wake_step_and_one_sleep_from_equal_states_agree_tightly() -> None:
    c = config(head_type="concat", top_k=3)
    tokens = streams(200)
    separate = [Sharp(c.replace(seed=seed, engine="torch")) for seed in SEEDS]
    for i in range(150):
        for learner, stream in zip(separate, tokens, strict=True):
            learner.learn(stream[i : i + c.window], int(stream[i + c.window]))
    ensemble = SharpEnsemble.from_learners(separate)
    x, y = windows(tokens, 150, c.window)
    step = ensemble.learn(x, y).results()
    for m, learner in enumerate(separate):
        want = learner.learn(x[m], int(y[m]))
        assert step[m].memory_learned == want.memory_learned
        assert step[m].loss == pytest.approx(want.loss, abs=TIGHT)
        torch.testing.assert_close(step[m].logits, want.logits, rtol=0, atol=TIGHT)
    got, want = ensemble.sleep(), [learner.sleep() for learner in separate]
    assert summary(got, losses=False) == summary(want, losses=False)
    for m, learner in enumerate(separate):
        assert_same_state(ensemble.member(m).state_dict(), learner.state_dict(), TIGHT)


def test_evaluation_and_reset_per_member() -> None:
    c = config()
    tokens = streams(300)
    ensemble = SharpEnsemble(c, SEEDS)
    separate = [Sharp(c.replace(seed=seed, engine="torch")) for seed in SEEDS]
    for i in range(100):
        x, y = windows(tokens, i, c.window)
        ensemble.learn(x, y)
        for m, learner in enumerate(separate):
            learner.learn(x[m], int(y[m]))
    results = ensemble.evaluate(np.stack(tokens)[:, 100:300])
    ragged = ensemble.evaluate([tokens[0][:150], tokens[1][:90], tokens[2][:150]])
    for m, (learner, stream) in enumerate(zip(separate, tokens, strict=True)):
        expected = learner.evaluate(stream[100:300])
        np.testing.assert_allclose(results[m].bits, expected.bits, atol=ATOL)
        np.testing.assert_array_equal(results[m].correct, ensemble.member(m).evaluate(
            stream[100:300]).correct)
        np.testing.assert_array_equal(results[m].bits, ensemble.member(m).evaluate(
            stream[100:300]).bits)
        assert ragged[m].tokens == (90 if m == 1 else 150) - c.window
        np.testing.assert_array_equal(ragged[m].bits, ensemble.member(m).evaluate(
            stream[: 90 if m == 1 else 150]).bits)
    ensemble.reset_state([2])
    separate[2].reset_state()
    for m, learner in enumerate(separate):
        assert_same_state(ensemble.member(m).state_dict(), learner.state_dict(), STATE_ATOL)


def test_bad_inputs_are_refused_and_change_nothing() -> None:
    ensemble = SharpEnsemble(config(), SEEDS)
    before = ensemble.state_dict()
    with pytest.raises(ValueError, match=r"members learns 3 windows, .*; got 2 windows$"):
        ensemble.learn(np.zeros((2, 3), dtype=np.int64), [0, 0])
    with pytest.raises(ValueError, match="tokens must be integer ids"):
        ensemble.learn(np.full((3, 3), 1.5), [0, 0, 0])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        ensemble.learn(np.full((3, 3), 9), [0, 0, 0])
    with pytest.raises(ValueError, match="distinct seed"):
        SharpEnsemble(config(), [1, 1])
    other = SharpEnsemble(config(), [0, 1, 5])
    with pytest.raises(ValueError, match="seeds"):
        other.load_state_dict(before)
    for m in range(len(SEEDS)):
        assert_same_state(ensemble.member(m).state_dict(), before["members"][m], 0)


def test_batched_adam_is_fused_adam_per_member_and_masked() -> None:
    torch.manual_seed(0)
    stacked = [torch.randn(3, 5, 7), torch.randn(3, 11)]
    singles = [[p[m].clone() for p in stacked] for m in range(3)]
    batched = BatchedAdam([stacked], [1e-2], weight_decay=1e-12)
    fused = [FusedAdam([params], [1e-2], weight_decay=1e-12) for params in singles]
    for step in range(20):
        grads = [torch.randn_like(p).transpose(-1, -2).contiguous().transpose(-1, -2)
                 for p in stacked]  # non-contiguous, like a batched matmul's weight gradient
        mask = [True, step % 3 != 0, False]
        batched.step(grads, torch.tensor(mask))
        for m, optimiser in enumerate(fused):
            if mask[m]:
                for p, g in zip(singles[m], grads, strict=True):
                    p.grad = g[m].contiguous()
                optimiser.step()
    for m, optimiser in enumerate(fused):
        for i, p in enumerate(singles[m]):
            assert torch.equal(stacked[i][m], p)
            assert torch.equal(batched.exp_avg[i][m], optimiser.exp_avg[i])
        assert batched.counts[0, m] == optimiser.steps[0]
    assert batched.counts[0, 2] == 0


def test_a_diverging_member_is_reported_as_a_separate_learner_is() -> None:
    """Issue 12, case 3, for the ensemble: lr=1e9 blows the members up; the step that sees a
    non-finite or absurd loss raises Diverged naming the member, as Sharp.learn does."""
    ensemble = SharpEnsemble(config(lr=1e9), SEEDS)
    streams = np.random.default_rng(0).integers(0, 7, (3, 60))
    with pytest.raises(Diverged, match=r"member \d diverged: its (prediction|recall) loss "
                       r"is .* with learning rate lr=1e\+09") as caught:
        for i in range(55):
            ensemble.learn(streams[:, i : i + 3], streams[:, i + 3])
    assert caught.value.member in range(len(SEEDS))
    assert f"member {caught.value.member} diverged" in str(caught.value)


# -- dense inputs (SPEC §11) ---------------------------------------------------------------
V, D = 40, 12


@pytest.fixture(scope="module")
def table() -> torch.Tensor:
    """A random frozen (V, D) input table, as in tests/test_dense_inputs.py."""
    return torch.randn(V, D, generator=torch.Generator().manual_seed(7))


def dense_config(**overrides: object) -> SharpConfig:
    """:func:`config` reading its tokens through a frozen (V, D) table: memory 0 recalls by
    squared error, which tau = 0.5 gates as cross-entropy is gated above. lr = 3e-3 (as in
    tests/test_dense_inputs.py): at 1e-2 the heads chasing V = 40 noise amplify the ulps to
    ~1e-3 in logits over 1,100 steps; at 3e-3 the measured worst case is ~6e-6."""
    return config(**{"vocab_size": V, "inputs": "dense", "input_dim": D, "lr": 3e-3,
                     **overrides})


def dense_streams(n: int = 1_200) -> list[np.ndarray]:
    """:func:`streams` over the larger vocabulary: periods 5 and 7 (gates closed within ~30
    steps) around uniform noise over all V ids (gate open most steps)."""
    noise = np.random.default_rng(1).integers(0, V, n)
    return [np.resize([3, 14, 15, 9, 26], n), noise, np.resize([1, 22, 3, 34, 5, 16, 0], n)]


def test_a_dense_ensemble_equals_separate_dense_learners_step_by_step(table: torch.Tensor
                                                                      ) -> None:
    c = dense_config(top_k=5)
    ensemble = SharpEnsemble(c, SEEDS, table=table)
    separate = [Sharp(c.replace(seed=seed, engine="torch"), table) for seed in SEEDS]
    # One frozen table, not stacked, in no optimiser; memory 0 projects D -> E.
    assert torch.equal(ensemble.table, table) and ensemble.table.data_ptr() != table.data_ptr()
    assert all(p.data_ptr() != ensemble.table.data_ptr()
               for opt in (ensemble.memory_opt, ensemble.head_opt) for p in opt.params)
    assert ensemble.params["memories.0.project.weight"].shape == (len(SEEDS), c.embedding, D)
    for m, learner in enumerate(separate):
        assert_same_state(ensemble.member(m).state_dict(), learner.state_dict(), atol=0)
    tokens = dense_streams()
    gates, slept = lockstep(ensemble, separate, tokens, 1_100)
    late = np.array(gates[200:])
    assert not late[:, 0].any() and not late[:, 2].any() and late[:, 1].sum() > 100
    assert slept == [[True, True, True], [False, True, False]]
    # Evaluation reads the table rows too, batched over members and slices.
    results = ensemble.evaluate(np.stack(tokens)[:, 1_100:])
    for m, (learner, stream) in enumerate(zip(separate, tokens, strict=True)):
        np.testing.assert_allclose(results[m].bits, learner.evaluate(stream[1_100:]).bits,
                                   atol=ATOL)
        np.testing.assert_array_equal(results[m].bits,
                                      ensemble.member(m).evaluate(stream[1_100:]).bits)
    assert torch.equal(ensemble.table, table)


def test_a_dense_ensemble_resumes_and_hands_out_members_bit_exactly(tmp_path, table) -> None:
    c = dense_config(sleep_every=150)
    tokens = dense_streams(500)
    ensemble = SharpEnsemble(c, SEEDS, table=table)
    for i in range(200):
        if i == 149:
            ensemble.sleep()
        ensemble.learn(*windows(tokens, i, c.window))
    path = save_checkpoint(ensemble, tmp_path / "ensemble.pt")
    saved = torch.load(path, weights_only=True)
    # The checkpoint holds the table once: every member's entry shares the ensemble's.
    assert torch.equal(saved["inputs"]["table"], table)
    storage = saved["inputs"]["table"].untyped_storage().data_ptr()
    assert all(member["inputs"]["table"].untyped_storage().data_ptr() == storage
               for member in saved["members"])
    resumed = load_checkpoint(path)
    assert isinstance(resumed, SharpEnsemble) and torch.equal(resumed.table, table)
    rebuilt = SharpEnsemble.from_learners([ensemble.member(m) for m in range(len(SEEDS))])
    alone = continue_alike(ensemble, resumed, rebuilt, tokens)
    assert torch.equal(alone.table, table)
    # Another table is refused, by a checkpoint and among learners.
    with pytest.raises(ValueError, match="another frozen input table"):
        SharpEnsemble(c, SEEDS, table=table + 1).load_state_dict(ensemble.state_dict())
    stranger = Sharp(c.replace(seed=9, engine="torch"), table + 1)
    with pytest.raises(ValueError, match="another frozen input table"):
        SharpEnsemble.from_learners([ensemble.member(0), stranger])


def test_a_dense_ensemble_reads_its_table_from_a_model_folder(tmp_path, table) -> None:
    save_file({"wte.weight": table}, str(tmp_path / "model.safetensors"))
    ensemble = SharpEnsemble(dense_config(input_table=str(tmp_path)), SEEDS)
    assert torch.equal(ensemble.table, table)
    tokens = dense_streams(20)
    for i in range(10):
        ensemble.learn(*windows(tokens, i, 3))
    path = save_checkpoint(ensemble, tmp_path / "ensemble.pt")
    assert "table" not in torch.load(path, weights_only=True)["inputs"]
    resumed = load_checkpoint(path)
    x, y = windows(tokens, 10, 3)
    assert torch.equal(resumed.learn(x, y).logits, ensemble.learn(x, y).logits)
    with pytest.raises(ValueError, match=r"table=.*input_table"):
        SharpEnsemble(dense_config(), SEEDS)
    with pytest.raises(ValueError, match=r"set inputs='dense'"):
        SharpEnsemble(config(), SEEDS, table=table)
