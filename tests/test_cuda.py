"""CUDA at every entry point (issue 13, item 1): run with ``pytest -m cuda`` on a machine with
an NVIDIA GPU (``tools/device_check.py`` does); skipped, visibly, everywhere else.

Tolerances. A GPU computes the CPU's float32 arithmetic in another order (and cuDNN's RNN
kernels in their own), so results agree up to rounding, not bit for bit: per-step bits within
``BITS_ATOL`` = 1e-3 over 500 steps with a sleep, evaluation mean bits within
``MEAN_ATOL`` = 1e-3. Sleep samples its dreams from the learner's generator, and a CUDA
generator draws other numbers than a CPU one from the same seed, so the comparisons sleep with
``top_k=1`` (the most likely token: the same on both devices).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sharp.config import SharpConfig, preset
from sharp.engines.ensemble import SharpEnsemble
from sharp.model.learner import Sharp
from sharp.runs.checkpoints import load_checkpoint, save_checkpoint
from sharp.runs.registry import BASELINE_KINDS, baseline_spec, build_learner

pytestmark = pytest.mark.cuda

BITS_ATOL = 1e-3
MEAN_ATOL = 1e-3
#: The slice length where cuDNN refused a whole-sequence call (issue 13).
LONG = 200_000


def tokens(n: int, seed: int = 0, vocab: int = 27) -> np.ndarray:
    """``n`` uniformly random token ids."""
    return np.random.default_rng(seed).integers(0, vocab, n).astype(np.int64)


def small(**overrides: object) -> SharpConfig:
    """``text8-small`` (H = 128) with short sleeps and deterministic dreams (``top_k=1``)."""
    return preset("text8-small", **{"sleep_steps": 65, "top_k": 1, "threads": 4,
                                    **overrides})


def stream(learner: Sharp, ids: np.ndarray, steps: int, sleep_at: int) -> list[float]:
    """Bits of ``steps`` wake steps over ``ids``, sleeping after step ``sleep_at``."""
    w, bits = learner.window, []
    for i in range(steps):
        bits.append(learner.learn(ids[i : i + w], int(ids[i + w])).bits)
        if i + 1 == sleep_at:
            learner.sleep()
    return bits


def test_wake_sleep_and_evaluation_agree_with_the_cpu_torch_engine() -> None:
    ids, held = tokens(600), tokens(20_000, seed=1)
    cpu, gpu = Sharp(small(engine="torch", device="cpu")), Sharp(small(device="cuda"))
    assert gpu.device.type == "cuda" and gpu.engine == "torch"
    on_cpu, on_gpu = stream(cpu, ids, 500, 250), stream(gpu, ids, 500, 250)
    np.testing.assert_allclose(on_gpu, on_cpu, rtol=0, atol=BITS_ATOL)
    mean_cpu, mean_gpu = cpu.evaluate(held).mean_bits(), gpu.evaluate(held).mean_bits()
    assert math.isfinite(mean_gpu) and abs(mean_gpu - mean_cpu) <= MEAN_ATOL


def test_sharp_evaluates_a_long_slice_on_cuda_from_a_cuda_tensor() -> None:
    learner = Sharp(small(device="cuda"))
    ids = torch.as_tensor(tokens(LONG), device="cuda")
    result = learner.evaluate(ids)
    assert result.tokens == LONG - learner.window and np.isfinite(result.bits).all()
    prefix = Sharp(small(device="cpu")).evaluate(tokens(LONG)[:20_000])
    assert abs(learner.evaluate(ids[:20_000]).mean_bits() - prefix.mean_bits()) <= MEAN_ATOL


def test_checkpoints_move_between_cpu_and_cuda(tmp_path) -> None:
    ids, held = tokens(400), tokens(5_000, seed=1)
    cpu = Sharp(small(device="cpu"))
    stream(cpu, ids, 200, 150)
    save_checkpoint(cpu, tmp_path / "cpu.pt")
    gpu = load_checkpoint(tmp_path / "cpu.pt", device="cuda")
    assert isinstance(gpu, Sharp) and gpu.device.type == "cuda"
    assert abs(gpu.evaluate(held).mean_bits() - cpu.evaluate(held).mean_bits()) <= MEAN_ATOL
    stream(gpu, ids[200:], 100, 0)
    save_checkpoint(gpu, tmp_path / "gpu.pt")
    back = load_checkpoint(tmp_path / "gpu.pt", device="cpu")
    assert isinstance(back, Sharp) and back.device.type == "cpu"
    assert abs(back.evaluate(held).mean_bits() - gpu.evaluate(held).mean_bits()) <= MEAN_ATOL
    # On the same device a checkpoint resumes bit-exactly.
    again = load_checkpoint(tmp_path / "gpu.pt", device="cuda")
    assert stream(again, ids[300:], 50, 0) == stream(gpu, ids[300:], 50, 0)


def test_an_ensemble_on_cuda_equals_its_cpu_run() -> None:
    c = small(layers=3)
    seeds = [0, 1, 2]
    runs = {device: SharpEnsemble(c.replace(device=device), seeds) for device in ("cpu", "cuda")}
    assert runs["cuda"].device.type == "cuda"
    streams = [tokens(400, seed=s) for s in seeds]
    losses: dict[str, list[np.ndarray]] = {device: [] for device in runs}
    for i in range(300):
        x = np.stack([s[i : i + c.window] for s in streams])
        y = np.array([s[i + c.window] for s in streams])
        for device, ensemble in runs.items():
            losses[device].append(ensemble.learn(x, y).loss.cpu().numpy())
            if i == 149:
                ensemble.sleep()
    np.testing.assert_allclose(losses["cuda"], losses["cpu"], rtol=0, atol=BITS_ATOL)
    held = [tokens(20_000, seed=10 + s) for s in seeds]
    for got, want in zip(runs["cuda"].evaluate(held), runs["cpu"].evaluate(held), strict=True):
        assert abs(got.mean_bits() - want.mean_bits()) <= MEAN_ATOL


@pytest.mark.parametrize("kind", BASELINE_KINDS)
def test_every_baseline_evaluates_a_long_slice_on_cuda(kind: str) -> None:
    spec = baseline_spec(kind, "paper", device="cuda", threads=4)
    learner = build_learner(spec)
    result = learner.evaluate(tokens(LONG))
    assert result.tokens == LONG - learner.window and np.isfinite(result.bits).all()
    cpu = build_learner(baseline_spec(kind, "paper", device="cpu", threads=4))
    prefix = tokens(LONG)[:5_000]
    assert abs(learner.evaluate(prefix).mean_bits() - cpu.evaluate(prefix).mean_bits()) \
        <= MEAN_ATOL


def test_the_segment_benchmark_runs_end_to_end_on_cuda(tmp_path) -> None:
    pd = pytest.importorskip("pandas")
    pytest.importorskip("tqdm")
    from sharp.cli import main

    out = tmp_path / "bench"
    code = main(["bench", "--no-notebook", "--quiet", "--corpus", "wiki", "--segment", "2000",
                 "--slice", "300", "--learners", "2", "--workers", "1", "--set", "device=cuda",
                 "--out", str(out)])
    assert code == 0
    results = pd.read_csv(out / "results.csv")
    assert results["learner"].nunique() == 1 + len(BASELINE_KINDS)
    assert np.isfinite(results["bits"]).all()
    assert (out / "summary.md").exists()


#: A graphed step replays the kernels its eager twin launches, on the same data: expected
#: bit-identical; held to GRAPH_ATOL (nats, and per weight) in case cuBLAS picks another
#: kernel while capturing. Gate decisions and step counts must be equal.
GRAPH_ATOL = 1e-5


def run_blocks(ensemble: SharpEnsemble, ids: np.ndarray, spans: list[tuple[int, int]]
               ) -> dict[str, torch.Tensor]:
    """Stream ``ids`` (M, n + W) through ``ensemble`` in the blocks ``spans`` (start, stop),
    sleeping after each; the (steps, M) losses, recall losses and gate decisions."""
    w = ensemble.window
    windows = torch.as_tensor(ids).unfold(1, w, 1).transpose(0, 1)
    targets = torch.as_tensor(ids[:, w:]).T
    blocks = []
    for lo, hi in spans:
        blocks.append(ensemble.learn_block(windows[lo:hi], targets[lo:hi]))
        ensemble.sleep()
    return {key: torch.cat([getattr(block, key) for block in blocks])
            for key in ("loss", "recall", "learned")}


def same_runs(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert torch.equal(got["learned"], want["learned"])
    for key in ("loss", "recall"):
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=GRAPH_ATOL)


def graph_pair(**overrides: object) -> tuple[SharpEnsemble, SharpEnsemble]:
    """Twin ensembles of 3 on CUDA (tau = 0.5: gates open and close), eager and graphed."""
    c = small(layers=3, tau=0.5, device="cuda", **overrides)
    eager, graphed = (SharpEnsemble(c, [0, 1, 2], graphs=flag) for flag in (False, True))
    assert graphed.graphs and not eager.graphs
    return eager, graphed


def test_graphed_wake_and_replay_steps_equal_eager_ones_over_500_steps() -> None:
    eager, graphed = graph_pair()
    ids = np.stack([tokens(600, seed=s) for s in range(3)])
    spans = [(0, 300), (300, 520)]  # a sleep after each; the first block is two of BLOCK
    same_runs(run_blocks(graphed, ids, spans), run_blocks(eager, ids, spans))
    assert graphed._wake.graph is not None
    assert all(replay.runner.graph is not None for replay in graphed._replays.values())
    state, twin = graphed.state_dict(), eager.state_dict()
    for got, want in zip(state["members"], twin["members"], strict=True):
        assert got["runtime"]["t"] == want["runtime"]["t"]
        assert len(got["runtime"]["tags"]) == len(want["runtime"]["tags"])
        for name, weight in want["weights"].items():
            torch.testing.assert_close(got["weights"][name], weight, rtol=0, atol=GRAPH_ATOL)


def test_a_dense_ensemble_graphed_equals_eager() -> None:
    """SPEC §11 in the captured wake and replay steps: memory 0 reads the rows of the frozen
    table inside the graph (the block buffers hold token ids)."""
    table = torch.randn(27, 12, generator=torch.Generator().manual_seed(7))
    c = small(layers=3, tau=0.5, device="cuda", inputs="dense", input_dim=12)
    eager, graphed = (SharpEnsemble(c, [0, 1, 2], table=table, graphs=flag)
                      for flag in (False, True))
    ids = np.stack([tokens(400, seed=s) for s in range(3)])
    spans = [(0, 300), (300, 390)]
    same_runs(run_blocks(graphed, ids, spans), run_blocks(eager, ids, spans))
    assert graphed._wake.graph is not None and graphed.table.device.type == "cuda"


def test_a_learning_rate_change_recaptures_the_wake_graph() -> None:
    eager, graphed = graph_pair()
    ids = np.stack([tokens(400, seed=s) for s in range(3)])
    same_runs(run_blocks(graphed, ids, [(0, 100)]), run_blocks(eager, ids, [(0, 100)]))
    before = graphed._wake.graph
    for ensemble in (eager, graphed):
        ensemble.memory_opt.lrs = [lr / 10 for lr in ensemble.memory_opt.lrs]
        ensemble.head_opt.lrs = [lr / 10 for lr in ensemble.head_opt.lrs]
    same_runs(run_blocks(graphed, ids, [(100, 300)]), run_blocks(eager, ids, [(100, 300)]))
    assert graphed._wake.graph is not None and graphed._wake.graph is not before
