"""The device-side path of a SHARP ensemble (issue 13, item 2): :meth:`learn_block` runs B
wake steps with gates, Adam masks, step counters, layer-advance masks and tag rings on the
device and reads the losses back once, and equals B calls of :meth:`learn` bit for bit (the
same ops in the same order: both run ``SharpEnsemble._block_step``). That :meth:`learn`
equals separate learners is tests/test_ensemble.py; the CUDA graph form of the wake and
replay steps is tested in tests/test_cuda.py."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from conftest import assert_same_state, tiny_config

from sharp.config import SharpConfig
from sharp.engines.ensemble import SharpEnsemble
from sharp.engines.ensemble.graphs import StepRunner
from sharp.engines.ensemble.sharp import BLOCK
from sharp.protocol import LN2, Diverged
from sharp.runs.stream import run_ensemble_stream

SEEDS = [0, 1, 2]
STEPS = 700


def config(**overrides: object) -> SharpConfig:
    """Three layers, tag rings of 5 (they wrap), tau = 0.5: a periodic member's gate
    closes within ~50 steps while a random member's stays open."""
    return tiny_config(**{"tau": 0.5, "sleep_every": 300, "device": "cpu", **overrides})


def streams(n: int) -> np.ndarray:
    """(3, n) ids: period 5, uniform noise, period 7."""
    noise = np.random.default_rng(1).integers(0, 7, n)
    return np.stack([np.resize([0, 3, 1, 4, 2], n), noise, np.resize([1, 2, 3, 4, 5, 6, 0], n)])


def stepped(c: SharpConfig, ids: np.ndarray) -> tuple[SharpEnsemble, dict[str, torch.Tensor]]:
    """An ensemble driven by :meth:`learn` over ``STEPS`` steps, sleeping every
    ``sleep_every``; its (steps, M) losses, recall losses and gate decisions."""
    ensemble = SharpEnsemble(c, SEEDS)
    out: dict[str, list[torch.Tensor]] = {"loss": [], "recall": [], "learned": []}
    for i in range(STEPS):
        step = ensemble.learn(ids[:, i : i + c.window], ids[:, i + c.window])
        for key, values in out.items():
            values.append(getattr(step, key))
        if (i + 1) % c.sleep_every == 0:
            ensemble.sleep()
    return ensemble, {key: torch.stack(values) for key, values in out.items()}


def test_blocks_equal_single_steps_bit_for_bit_across_sleeps() -> None:
    c = config()
    ids = streams(STEPS + c.window)
    alone, want = stepped(c, ids)
    ensemble = SharpEnsemble(c, SEEDS)
    windows = torch.as_tensor(ids).unfold(1, c.window, 1).transpose(0, 1)  # (n, M, W)
    targets = torch.as_tensor(ids[:, c.window :]).T
    blocks = []
    for lo, hi in ((0, 300), (300, 600), (600, STEPS)):  # the first spans two device blocks
        blocks.append(ensemble.learn_block(windows[lo:hi], targets[lo:hi]))
        if hi % c.sleep_every == 0:
            ensemble.sleep()
    assert BLOCK < 300
    for key, expected in want.items():
        assert torch.equal(torch.cat([getattr(block, key) for block in blocks]), expected), key
    correct = torch.cat([block.correct for block in blocks])
    assert correct.any() and correct.shape == (STEPS, 3)
    assert want["learned"][:, 1].sum() > 100 and not want["learned"][200:, 0].any()
    assert_same_state(ensemble.state_dict(), alone.state_dict(), atol=0)
    # The job runner streams SHARP ensembles in blocks between sleeps: the same records.
    records = run_ensemble_stream(SharpEnsemble(c, SEEDS), ids)
    np.testing.assert_array_equal(records["bits"], want["loss"].reshape(-1).numpy() / LN2)
    np.testing.assert_array_equal(records["memory_learned"], want["learned"].reshape(-1))
    assert records["slept"].to_numpy().reshape(-1, 3)[:, 0].nonzero()[0].tolist() == [299, 599]


def test_a_block_names_the_member_and_the_step_that_diverged() -> None:
    c = config(lr=1e9)
    ids = np.random.default_rng(0).integers(0, 7, (3, 60))
    alone = SharpEnsemble(c, SEEDS)
    with pytest.raises(Diverged) as single:
        for i in range(55):
            alone.learn(ids[:, i : i + 3], ids[:, i + 3])
    windows = torch.as_tensor(ids).unfold(1, 3, 1).transpose(0, 1)[:55]
    with pytest.raises(Diverged) as block:
        SharpEnsemble(c, SEEDS).learn_block(windows, torch.as_tensor(ids[:, 3:58]).T)
    assert block.value.step == i + 1 and single.value.step is None
    assert (block.value.loss, block.value.member) == (single.value.loss, single.value.member)
    assert single.value.member in range(len(SEEDS))
    with pytest.raises(Diverged, match=f"at stream step {i + 11}: "):
        run_ensemble_stream(SharpEnsemble(c, SEEDS), ids[:, :58], offset=10)


def test_bad_blocks_are_refused_and_change_nothing() -> None:
    ensemble = SharpEnsemble(config(), SEEDS)
    before = ensemble.state_dict()
    good = np.zeros((4, 3, 3), dtype=np.int64)
    for windows, targets, match in ((good[:, :2], good[:, :2, 0], "shape"),
                                    (good, good[:3, :, 0], "shape"),
                                    (good + 0.5, good[..., 0], "integer"),
                                    (good + 7, good[..., 0], "outside"),
                                    (good[:0], good[:0, :, 0], "at least one step")):
        with pytest.raises(ValueError, match=match):
            ensemble.learn_block(windows, targets)
    assert_same_state(ensemble.state_dict(), before, atol=0)


class FakeGraph:
    """Stands in for ``torch.cuda.CUDAGraph``: while capturing, steps are recorded and not
    taken (as on a GPU); each replay takes the recorded step."""

    capturing = False

    def __init__(self) -> None:
        self.replays = 0

    def replay(self) -> None:
        self.replays += 1
        self.step()


def test_a_graphed_runner_takes_every_step_once(monkeypatch) -> None:
    """StepRunner's bookkeeping without a GPU: WARMUP eager steps (real ones), a capture
    (no step), then replays; a re-capture after ``invalidate``."""
    from contextlib import contextmanager, nullcontext

    @contextmanager
    def capture(graph: FakeGraph):
        FakeGraph.capturing, graph.step = True, step  # the capture records the step
        yield
        FakeGraph.capturing = False

    class Stream:
        def __init__(self, device: torch.device | None = None) -> None:
            pass

        def wait_stream(self, other: Stream) -> None:
            pass

    sync_modes: list[str | int] = []
    syncing = [False]  # whether the step synchronises with the host (warns in "warn" mode)
    for name, value in (("CUDAGraph", FakeGraph), ("graph", capture), ("Stream", Stream),
                        ("current_stream", Stream), ("stream", lambda s: nullcontext()),
                        ("set_stream", lambda s: None), ("get_sync_debug_mode", lambda: 0),
                        ("set_sync_debug_mode", sync_modes.append)):
        monkeypatch.setattr(torch.cuda, name, value)
    taken: list[int] = []

    def step() -> None:
        if not FakeGraph.capturing:
            taken.append(len(taken))
            if syncing[0] and sync_modes[-1] == "warn":
                warnings.warn("called a synchronizing CUDA operation", UserWarning, stacklevel=2)

    runner = StepRunner(step, torch.device("cuda"), graphed=True)
    runner.run(2)  # warm-up only
    assert len(taken) == 2 and runner.graph is None and sync_modes == []
    runner.run(5)  # the last warm-up step (sync-checked), the capture, four replays
    assert len(taken) == 7 and runner.graph.replays == 4 and runner.captured
    assert sync_modes == ["warn", 0]  # checked, then the mode restored
    runner.invalidate()
    runner.run(10)
    assert len(taken) == 17 and runner.graph.replays == 7
    runner.invalidate()
    runner.run(0)  # nothing to do, nothing taken
    assert len(taken) == 17 and not runner.captured

    @contextmanager
    def failing(graph: FakeGraph):
        raise RuntimeError("operation not permitted when stream is capturing")
        yield

    monkeypatch.setattr(torch.cuda, "graph", failing)
    with pytest.raises(RuntimeError, match=r"capturing.*failed.*graphs=False"):
        runner.run(6)
    assert len(taken) == 20  # the warm-up steps ran, the failed capture took none
    # a step that synchronises is never captured: it runs eagerly, every step once
    syncing[0] = True
    runner = StepRunner(step, torch.device("cuda"), graphed=True)
    with pytest.warns(RuntimeWarning, match="cannot be captured"):
        runner.run(6)
    assert len(taken) == 26 and not runner.graphed and not runner.captured


def test_cuda_graphs_need_a_cuda_device() -> None:
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device"):
        SharpEnsemble(config(), SEEDS, graphs=True)
    steps = []
    runner = StepRunner(lambda: steps.append(1), torch.device("cpu"), graphed=False)
    runner.run(5)
    assert len(steps) == 5


@pytest.mark.parametrize("dense", [False, True])
def test_the_cpu_shortcuts_equal_the_device_side_step_bit_for_bit(dense: bool) -> None:
    """On the CPU the wake step reads its masks (no synchronisation there) and skips the
    layers no member ticks and memory 0's Adam step when no gate is open; the branch-free
    step CUDA runs (``_host_reads`` False) must give the same ensemble, bit for bit, also
    with dense inputs (a random frozen (7, 5) table). Every stream is periodic, so every
    gate closes and both shortcuts are taken."""
    c = config(inputs="dense", input_dim=5) if dense else config()
    table = torch.randn(7, 5, generator=torch.Generator().manual_seed(7)) if dense else None
    ids = streams(STEPS + c.window)
    ids[1] = np.resize([2, 0, 6, 5], ids.shape[1])
    shortcut, branch_free = (SharpEnsemble(c, SEEDS, table=table) for _ in range(2))
    assert shortcut._host_reads
    branch_free._host_reads = False
    learned = []
    for i in range(STEPS):
        x, y = ids[:, i : i + c.window], ids[:, i + c.window]
        steps = [ensemble.learn(x, y) for ensemble in (shortcut, branch_free)]
        assert torch.equal(steps[0].loss, steps[1].loss) and torch.equal(
            steps[0].learned, steps[1].learned), i
        learned.append(steps[0].learned)
        if (i + 1) % c.sleep_every == 0:
            shortcut.sleep()
            branch_free.sleep()
    assert not torch.stack(learned)[200:].any()  # the gates closed: the skip was taken
    assert_same_state(shortcut.state_dict(), branch_free.state_dict(), atol=0)
