"""Device handling that the CPU can check (issue 13, items 1 and B): the ``auto`` rule, long
sequences in chunks, generator states across device types, slices checked where they live.
What needs a GPU is in test_cuda.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_config

from sharp import protocol
from sharp.engines.ensemble import SharpEnsemble
from sharp.engines.runtime import load_generator_state, resolve_device
from sharp.model.learner import Sharp
from sharp.model.memory import Memory, tanh_trajectory
from sharp.protocol import token_tensor


@pytest.fixture
def cuda_present(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make torch say this machine has CUDA (nothing is put on it)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


def test_auto_keeps_a_sharp_stream_on_the_cpu_fused_engine_where_cuda_is(cuda_present) -> None:
    assert resolve_device("auto", "stream") == torch.device("cpu")
    assert resolve_device("auto", "batched") == torch.device("cuda")
    learner = Sharp(tiny_config(device="auto"))
    assert learner.device == torch.device("cpu")
    assert learner.engine == Sharp(tiny_config(device="cpu")).engine == "fused"


def test_auto_puts_batched_work_on_mps_where_only_mps_is(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto", "batched") == torch.device("mps")
    assert resolve_device("auto", "stream") == torch.device("cpu")


def test_auto_is_the_cpu_without_an_accelerator_and_a_name_overrides_the_rule(monkeypatch
                                                                              ) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto", "batched") == torch.device("cpu")
    assert resolve_device("cuda", "stream") == torch.device("cuda")
    assert resolve_device("cpu", "batched") == torch.device("cpu")


@pytest.mark.parametrize("tokens", [True, False])
def test_a_chunked_trajectory_is_bit_identical_to_one_call(tokens: bool) -> None:
    # H = 128, as the text8-small preset: a per-chunk input product would round some rows
    # differently (MKL does for short tails), so this holds only because it is computed once.
    torch.manual_seed(0)
    inputs, hidden, steps = 27, 128, 1_003
    memory = Memory(inputs, hidden, 30, 4, tokens=tokens)
    sequence = (torch.randint(0, inputs, (steps,)) if tokens
                else torch.randn(steps, inputs))
    start = torch.tanh(torch.randn(hidden))
    with torch.no_grad():
        whole = memory.trajectory(sequence, start, chunk=steps)
        for chunk in (1, 3, 7, 64, 500, 1_002):
            assert torch.equal(memory.trajectory(sequence, start, chunk=chunk), whole), chunk
        assert memory.trajectory(sequence[:0], start, chunk=5).shape == (0, hidden)


def test_a_trajectory_chunk_must_be_positive() -> None:
    with pytest.raises(ValueError, match="chunk must be at least 1"):
        tanh_trajectory(torch.zeros(3, 2), torch.zeros(4), [torch.zeros(4, 2)] * 2 + [
            torch.zeros(4)] * 2, chunk=0)


def test_a_generator_state_of_the_same_device_type_continues_exactly() -> None:
    source = torch.Generator().manual_seed(5)
    torch.rand(3, generator=source)
    target = torch.Generator().manual_seed(9)
    assert load_generator_state(target, source.get_state())
    assert torch.equal(torch.rand(4, generator=target), torch.rand(4, generator=source))


def test_a_generator_state_of_another_device_type_seeds_deterministically() -> None:
    cuda_state = torch.arange(16, dtype=torch.uint8)  # a CUDA generator's (seed, offset)
    draws = []
    for _ in range(2):
        generator = torch.Generator().manual_seed(1)
        assert not load_generator_state(generator, cuda_state)
        draws.append(torch.rand(4, generator=generator))
    assert torch.equal(draws[0], draws[1])
    assert not torch.equal(draws[0], torch.rand(4, generator=torch.Generator().manual_seed(1)))


def test_a_valid_tensor_slice_is_checked_where_it_lives(monkeypatch) -> None:
    ids = torch.tensor([0, 3, 6, 2, 1], dtype=torch.int32)
    refused = pytest.raises(ValueError, match="token id 7 at position 2 is outside")
    with refused:
        token_tensor(torch.tensor([0, 3, 7, 2]), 3, 7)
    with refused:
        token_tensor(np.array([0, 3, 7, 2]), 3, 7)

    def host_check(*args: object) -> None:
        raise AssertionError("a valid tensor went through the host check")

    monkeypatch.setattr(protocol, "check_stream", host_check)
    moved = token_tensor(ids, 3, 7)
    assert moved.dtype == torch.long and torch.equal(moved, ids.long())


def test_an_ensemble_reads_lists_arrays_and_tensors_as_the_same_tokens(random_stream) -> None:
    ensemble = SharpEnsemble(tiny_config(device="cpu"), [0, 1])
    tokens = random_stream[:60]
    results = [ensemble.evaluate([convert(tokens.tolist())] * 2)
               for convert in (list, np.asarray, torch.as_tensor)]
    for result in results[1:]:
        for got, want in zip(result, results[0], strict=True):
            assert np.array_equal(got.bits, want.bits)
