"""The fused engine computes what the torch engine computes, and says when it cannot run."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
import torch
from conftest import tiny_config

import sharp.engines.fused
import sharp.engines.kernels
from sharp.config import SharpConfig
from sharp.engines.kernels import KernelUnavailable
from sharp.model.learner import Sharp
from sharp.runs.stream import run_stream

COLUMNS = ["bits", "recall", "memory_learned", "slept"]

CONFIGS = {
    "film, per-layer sizes": {"hidden": (24, 16, 20)},
    "concat, 3 head layers, E > H": {"head_type": "concat", "head_layers": 3, "hidden": 12,
                                     "embedding": 20},
    "one layer, one head layer": {"layers": 1, "hidden": 16, "head_layers": 1},
    "vocabulary wider than H, 4 layers": {"vocab_size": 40, "layers": 4, "hidden": 8,
                                          "window": 2, "accel": 2},
}


def stream(config: SharpConfig, n: int = 700) -> np.ndarray:
    """A period-9 pattern with 10% noise: memory 0's gate opens and closes."""
    rng = np.random.default_rng(3)
    tokens = np.tile(rng.integers(0, config.vocab_size, 9), n // 9 + 1)[:n]
    noise = rng.random(n) < 0.1
    tokens[noise] = rng.integers(0, config.vocab_size, noise.sum())
    return tokens.astype(np.int64)


def pair(config: SharpConfig) -> tuple[Sharp, Sharp]:
    """A torch-engine and a fused-engine learner of ``config``."""
    torch_learner = Sharp(config.replace(engine="torch"))
    fused_learner = Sharp(config.replace(engine="fused"))
    assert (torch_learner.engine, fused_learner.engine) == ("torch", "fused")
    return torch_learner, fused_learner


def assert_same_learners(a: Sharp, b: Sharp, atol: float = 1e-5) -> None:
    for (name, p), q in zip(a.net.named_parameters(), b.net.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=0, atol=atol, msg=lambda m, name=name: f"{name}: {m}")
    for opt_a, opt_b in ((a.memory_opt, b.memory_opt), (a.head_opt, b.head_opt)):
        for key in ("exp_avg", "exp_avg_sq", "steps"):
            for x, y in zip(opt_a.state_dict()[key], opt_b.state_dict()[key], strict=True):
                torch.testing.assert_close(y, x, rtol=1e-4, atol=atol)
    for s, t in zip(a.states, b.states, strict=True):
        torch.testing.assert_close(t, s, rtol=0, atol=atol)
    torch.testing.assert_close(b.carry, a.carry, rtol=0, atol=atol)
    assert b.recall_ema == pytest.approx(a.recall_ema, abs=1e-6)
    assert (len(b.tags), b.sleep_pending, b.t) == (len(a.tags), a.sleep_pending, a.t)


def lockstep(a: Sharp, b: Sharp, tokens: np.ndarray, offset: int = 0) -> list[bool]:
    """Step both learners through ``tokens`` (sleeping every ``sleep_every`` steps), the
    fused one restarted from the torch one's state before every step and sleep, so that
    each is compared on its own without rounding differences piling up; returns the gate
    decisions."""
    w, every = a.window, a.config.sleep_every
    gates = []
    for i in range(len(tokens) - w):
        if (offset + i) % every == every - 1:
            b.load_state_dict(a.state_dict())
            slept_a, slept_b = a.sleep(), b.sleep()
            assert [(x.windows, x.updates) for x in slept_a.layers] == \
                [(x.windows, x.updates) for x in slept_b.layers]
            assert_same_learners(a, b, atol=2e-4)  # a sleep is hundreds of Adam steps
        b.load_state_dict(a.state_dict())
        x, y = tokens[i : i + w], int(tokens[i + w])
        expected, got = a.learn(x, y), b.learn(x, y)
        assert got.memory_learned == expected.memory_learned
        assert got.loss == pytest.approx(expected.loss, abs=1e-5)
        assert got.recall == pytest.approx(expected.recall, abs=1e-5)
        torch.testing.assert_close(got.logits, expected.logits, rtol=0, atol=1e-5)
        assert_same_learners(a, b)
        gates.append(expected.memory_learned)
    return gates


@pytest.mark.parametrize("changes", CONFIGS.values(), ids=CONFIGS.keys())
def test_fused_engine_computes_every_step_and_sleep_as_the_torch_engine(changes: dict) -> None:
    config = tiny_config(sleep_every=150, tau=0.3, **changes)
    gates = lockstep(*pair(config), stream(config, 400))
    assert 0 < sum(gates) < len(gates)  # the gate both opened and closed


@pytest.mark.parametrize("changes", CONFIGS.values(), ids=CONFIGS.keys())
def test_free_running_engines_stay_close(changes: dict) -> None:
    config = tiny_config(sleep_every=250, lr=1e-3, **changes)
    tokens = stream(config)
    a, b = (run_stream(learner, tokens, progress=False) for learner in pair(config))
    assert a["slept"].sum() == 2
    assert a["memory_learned"].equals(b["memory_learned"])
    np.testing.assert_allclose(b["bits"], a["bits"], rtol=0, atol=2e-4)
    np.testing.assert_allclose(b["recall"], a["recall"], rtol=0, atol=2e-4)


@pytest.mark.parametrize("batched", [True, False])
def test_fused_sleep_reproduces_the_torch_sleep(batched: bool) -> None:
    config = tiny_config(tau=0.0, sleep_steps=33, hidden=(16, 12, 20))
    tokens = stream(config, 80)
    a, b = pair(config)
    run_stream(a, tokens, progress=False)
    b.load_state_dict(a.state_dict())
    report_a, report_b = a.sleep(batched=batched), b.sleep(batched=batched)
    assert report_a.tags == report_b.tags == config.tag_buffer
    for x, y in zip(report_a.layers, report_b.layers, strict=True):
        assert (x.layer, x.windows, x.updates) == (y.layer, y.windows, y.updates)
        assert x.first_loss == pytest.approx(y.first_loss, abs=1e-5)
        assert x.last_loss == pytest.approx(y.last_loss, abs=1e-5)
    assert_same_learners(a, b)


def test_learning_rates_and_tau_changed_mid_stream_reach_the_fused_engine() -> None:
    config = tiny_config(tau=0.3)
    tokens = stream(config, 200)
    a, b = pair(config)
    for learner in (a, b):
        learner.memory_opt.lrs = [0.05]
        learner.head_opt.lrs = [1e-4, 0.2, 0.0]
    lockstep(a, b, tokens[:100])
    for learner in (a, b):
        learner.config = learner.config.replace(tau=5.0)
    assert not any(lockstep(a, b, tokens[97:], offset=97))


def test_fused_engine_gives_the_torch_engines_token_errors() -> None:
    learner = Sharp(tiny_config(engine="fused"))
    with pytest.raises(ValueError, match=r"outside the vocabulary 0\.\.6"):
        learner.learn(np.array([0, 9, 1]), 2)
    with pytest.raises(ValueError, match="target token 7 is outside"):
        learner.learn(np.array([0, 1, 1]), 7)
    with pytest.raises(ValueError, match="window W is 3"):
        learner.learn(np.array([0, 1]), 2)


def test_checkpoints_move_between_engines(random_stream: np.ndarray) -> None:
    config = tiny_config(tau=0.5, sleep_every=150)
    fused = Sharp(config.replace(engine="fused"))
    run_stream(fused, random_stream[:203], progress=False)
    reference = Sharp(config.replace(engine="torch"))
    reference.load_state_dict(fused.state_dict())
    tail = random_stream[200:403]
    straight = run_stream(fused, tail, offset=200, progress=False)
    resumed = run_stream(reference, tail, offset=200, progress=False)
    assert straight["slept"].sum() == 1
    np.testing.assert_allclose(resumed["bits"], straight["bits"], rtol=0, atol=1e-4)
    assert_same_learners(reference, fused)


def test_auto_falls_back_to_torch_with_a_warning_and_fused_refuses(monkeypatch) -> None:
    def unavailable() -> None:
        raise KernelUnavailable("no C compiler found")

    monkeypatch.setattr(sharp.engines.fused, "load", unavailable)
    with pytest.warns(RuntimeWarning, match="torch engine.*no C compiler"):
        learner = Sharp(tiny_config(engine="auto"))
    assert learner.engine == "torch"
    with pytest.raises(KernelUnavailable, match="no C compiler found; use engine='torch'"):
        Sharp(tiny_config(engine="fused"))


def test_kernels_are_built_into_the_cache_and_compiler_errors_are_reported(
    tmp_path, monkeypatch
) -> None:
    build = sharp.engines.kernels.load.__wrapped__
    monkeypatch.setenv("SHARP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CC", "false")
    with pytest.raises(KernelUnavailable, match=r"compiling sharp_kernels\.c failed"):
        build()
    assert not list((tmp_path / "cache").glob("*.so"))
    monkeypatch.delenv("CC")
    library = build()
    assert hasattr(library, "sharp_wake")
    assert len(list((tmp_path / "cache").glob("sharp_kernels-*.so"))) == 1


def test_a_replaced_parameter_is_reported_not_silently_ignored() -> None:
    learner = Sharp(tiny_config(engine="fused"))
    learner.sleep()
    weight = learner.heads[0].mlp[-1].weight
    learner.heads[0].mlp[-1].weight = torch.nn.Parameter(weight.detach().clone())
    with pytest.raises(RuntimeError, match="replaced rather than updated in place"):
        learner.sleep()


def test_a_ctypes_struct_that_differs_from_the_c_header_is_refused(monkeypatch) -> None:
    fused = sharp.engines.fused
    lib = sharp.engines.kernels.load()
    fused.check_layout(lib)  # the shipped mirror matches
    swapped = type("_Norm", (ctypes.Structure,), {"_fields_": [
        ("g", fused._Param), ("n", ctypes.c_int32), ("b", fused._Param)]})
    structs = tuple(swapped if s is fused._Norm else s for s in fused.STRUCTS)
    with pytest.raises(KernelUnavailable, match=r"do not match sharp_kernels\.h.*"
                       r"Norm\.b offset: C 24, Python 32.*Norm\.n offset: C 48, Python 24"):
        fused.check_layout(lib, structs)
    narrow = type("_Gate", (ctypes.Structure,), {"_fields_": [
        ("coefficient", ctypes.c_double), ("tau", ctypes.c_float)]})
    with pytest.raises(KernelUnavailable, match=r"Gate\.tau size: C 8, Python 4.*"
                       r"Gate\.value offset: C 16, Python missing"):
        fused.check_layout(lib, (narrow,))
    monkeypatch.setattr(fused, "STRUCTS", structs)
    with pytest.warns(RuntimeWarning, match=r"torch engine.*Norm\.b offset"):
        assert Sharp(tiny_config(engine="auto")).engine == "torch"
    with pytest.raises(KernelUnavailable, match=r"Norm\.b offset.*use engine='torch'"):
        Sharp(tiny_config(engine="fused"))


def test_the_workspace_is_allocated_once_per_engine() -> None:
    learner = Sharp(tiny_config(engine="fused", tau=0.0))
    workspace = learner.kernels._workspace
    address = workspace.data_ptr()
    run_stream(learner, stream(learner.config, 120), progress=False)  # wakes and one sleep
    assert learner.kernels._workspace is workspace and workspace.data_ptr() == address
