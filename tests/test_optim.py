"""FusedAdam computes exactly what torch.optim.Adam(fused=True) computes."""

from __future__ import annotations

import torch
from torch import nn

from sharp.engines.optim import FusedAdam


def _models() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    ours = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    theirs = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


def _step(model: nn.Module, optimiser: object, x: torch.Tensor, skip_last: bool) -> None:
    optimiser.zero_grad()
    model(x).square().mean().backward()
    if skip_last:
        for p in model[2].parameters():
            p.grad = None
    optimiser.step()


def test_matches_torch_adam_with_group_lrs_and_skipped_parameters() -> None:
    ours, theirs = _models()
    mine = FusedAdam([ours[0].parameters(), ours[2].parameters()], [1e-2, 3e-3],
                     weight_decay=1e-3)
    reference = torch.optim.Adam(
        [{"params": theirs[0].parameters(), "lr": 1e-2},
         {"params": theirs[2].parameters(), "lr": 3e-3}],
        weight_decay=1e-3, fused=True,
    )
    generator = torch.Generator().manual_seed(1)
    for step in range(12):
        x = torch.randn(4, 5, generator=generator)
        _step(ours, mine, x, skip_last=step % 3 == 1)
        _step(theirs, reference, x, skip_last=step % 3 == 1)
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    counts = [float(s) for s in mine.steps]
    assert counts == [12.0, 12.0, 8.0, 8.0]


def test_state_dict_round_trip_resumes_identically() -> None:
    ours, theirs = _models()
    first = FusedAdam([ours.parameters()], [1e-2])
    x = torch.randn(4, 5)
    for _ in range(3):
        _step(ours, first, x, skip_last=False)
    theirs.load_state_dict(ours.state_dict())
    second = FusedAdam([theirs.parameters()], [1e-2])
    second.load_state_dict(first.state_dict())
    for _ in range(3):
        _step(ours, first, x, skip_last=False)
        _step(theirs, second, x, skip_last=False)
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert [float(s) for s in second.steps] == [6.0] * 4
