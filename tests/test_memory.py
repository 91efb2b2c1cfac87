"""The memory layer alone (SPEC §2): encode, step and trajectory compute the same
recurrence; recall shapes and losses of token and vector memories."""

from __future__ import annotations

import pytest
import torch

from sharp.model.memory import Memory

V, H, E, W, B = 7, 12, 5, 4, 3


@pytest.fixture(params=["tokens", "vectors"])
def case(request) -> tuple[Memory, torch.Tensor]:
    """A memory and a batch of windows (B, W) token ids or (B, W, V) vectors."""
    torch.manual_seed(0)
    tokens = request.param == "tokens"
    memory = Memory(V, H, E, W, tokens=tokens)
    windows = torch.randint(0, V, (B, W)) if tokens else torch.randn(B, W, V)
    return memory, windows


def test_encode_step_and_trajectory_agree(case) -> None:
    memory, windows = case
    start = torch.tanh(torch.randn(B, H))
    recall, final, after_first = memory.encode(windows, start)
    state, stepped = start, []
    for t in range(W):
        state = memory.step(windows[:, t], state)
        stepped.append(state)
    torch.testing.assert_close(after_first, stepped[0])
    torch.testing.assert_close(final, stepped[-1])
    for b in range(B):
        path = memory.trajectory(windows[b], start[b])
        assert path.shape == (W, H)
        torch.testing.assert_close(path, torch.stack([s[b] for s in stepped]))
    assert recall.shape == (B, W, V)  # logits over V (tokens) or the V-vector (vectors)


def test_stride_one_windows_from_the_carried_state_follow_the_trajectory(case) -> None:
    # The wake rule encodes each window from the state after the previous window's first
    # element: the final states are then the trajectory's states, one per window.
    memory, windows = case
    sequence = windows.flatten(0, 1)[: 2 * W]  # one stream of 2W elements
    path = memory.trajectory(sequence, torch.zeros(H))
    carry = torch.zeros(1, H)
    for i in range(len(sequence) - W + 1):
        _, final, after_first = memory.encode(sequence[i : i + W].unsqueeze(0), carry)
        torch.testing.assert_close(final[0], path[i + W - 1])
        carry = after_first
    assert memory.trajectory(sequence[:0], torch.zeros(H)).shape == (0, H)


def test_recall_is_linear_in_the_final_state(case) -> None:
    memory, windows = case
    recall, final, _ = memory.encode(windows, torch.zeros(B, H))
    expected = torch.einsum("wvh,bh->bwv", memory.recall_weight, final) + memory.recall_bias
    torch.testing.assert_close(recall, expected)


def test_step_records_no_gradient_and_encode_does(case) -> None:
    memory, windows = case
    assert not memory.step(windows[:, 0], torch.zeros(B, H)).requires_grad
    recall, _, _ = memory.encode(windows, torch.zeros(B, H))
    memory.recall_loss(windows, recall).backward()
    assert all(p.grad is not None for p in memory.parameters())


def test_token_recall_loss_is_cross_entropy() -> None:
    torch.manual_seed(0)
    memory = Memory(V, H, E, W, tokens=True)
    windows = torch.randint(0, V, (B, W))
    logits = torch.randn(B, W, V)
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, V), windows.reshape(-1))
    torch.testing.assert_close(memory.recall_loss(windows, logits), expected)
    certain = 50.0 * torch.nn.functional.one_hot(windows, V).float()
    assert memory.recall_loss(windows, certain) < 1e-6


def test_vector_recall_loss_is_mean_squared_error() -> None:
    memory = Memory(V, H, E, W, tokens=False)
    windows = torch.randn(B, W, V)
    assert memory.recall_loss(windows, windows) == 0
    torch.testing.assert_close(memory.recall_loss(windows, windows + 0.5), torch.tensor(0.25))


def test_reservoir_initialisation_sets_the_encoder_to_ones() -> None:
    memory = Memory(H, H, E, W, tokens=False, reservoir=True)
    assert torch.equal(memory.encoder.weight_ih_l0, torch.ones(H, E))
    assert torch.equal(memory.encoder.weight_hh_l0, torch.ones(H, H))
    assert not memory.encoder.bias_ih_l0.any() and not memory.encoder.bias_hh_l0.any()
