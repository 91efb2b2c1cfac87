"""The prediction heads alone (SPEC §2): FiLM is the identity modulation when its context
weights are zero; the concat variant's shapes and use of the context."""

from __future__ import annotations

import pytest
import torch

from sharp.model.heads import ConcatHead, FiLMHead, make_head

H, OUT, C, B = 10, 7, 6, 4


def shared_weights(source: torch.nn.Module, target: torch.nn.Module) -> None:
    """Copy ``source``'s state-norm and MLP weights into ``target`` (a head without a
    context)."""
    state = {k: v for k, v in source.state_dict().items() if k.split(".")[0] in ("norm", "mlp")}
    target.load_state_dict(state)


@pytest.mark.parametrize("layers", [1, 3])
def test_film_with_zero_context_weights_is_the_head_without_context(layers) -> None:
    torch.manual_seed(0)
    head, plain = FiLMHead(H, OUT, layers, C), FiLMHead(H, OUT, layers, None)
    shared_weights(head, plain)
    torch.nn.init.zeros_(head.film.weight)
    torch.nn.init.zeros_(head.film.bias)
    h, context = torch.randn(B, H), torch.randn(B, C)
    gamma, beta = head.condition(context).chunk(2, dim=-1)
    assert not gamma.any() and not beta.any()  # (γ, β) = (0, 0): z = (1 + 0)·z + 0
    # the only difference left is a second LayerNorm of an already normalised vector
    torch.testing.assert_close(head(h, context), plain(h), atol=1e-4, rtol=1e-4)
    assert plain(h).shape == (B, OUT)


def test_film_context_modulates_and_no_context_skips_it() -> None:
    torch.manual_seed(0)
    head, plain = FiLMHead(H, OUT, 2, C), FiLMHead(H, OUT, 2, None)
    shared_weights(head, plain)
    h = torch.randn(B, H)
    assert torch.equal(head(h), plain(h))  # no context given: no modulation at all
    assert plain.film is None and plain.condition(torch.randn(B, C)) is None
    first, second = head(h, torch.randn(B, C)), head(h, torch.randn(B, C))
    assert not torch.allclose(first, second)


@pytest.mark.parametrize("kind", ["film", "concat"])
def test_condition_then_conditioned_is_forward(kind) -> None:
    torch.manual_seed(0)
    head = make_head(kind, H, OUT, 2, C)
    h, context = torch.randn(B, H), torch.randn(B, C)
    torch.testing.assert_close(head.conditioned(h, head.condition(context)), head(h, context))


def test_concat_head_shapes_and_behaviour() -> None:
    torch.manual_seed(0)
    head, top = make_head("concat", H, OUT, 3, C), make_head("concat", H, OUT, 3, None)
    assert isinstance(head, ConcatHead) and isinstance(top, ConcatHead)
    assert head.mlp[0].in_features == 2 * H and top.mlp[0].in_features == H
    assert [m.out_features for m in head.mlp] == [2 * H, 2 * H, OUT]
    h, context = torch.randn(B, H), torch.randn(B, C)
    assert head.condition(context).shape == (B, H)  # the context projected to H
    assert head(h, context).shape == (B, OUT) and top(h).shape == (B, OUT)
    assert not torch.allclose(head(h, context), head(h, torch.randn(B, C)))
    with torch.no_grad():
        head.context.weight.zero_()
        head.context.bias.zero_()
    # zero context weights: the output no longer depends on the context
    assert torch.equal(head(h, context), head(h, torch.randn(B, C)))
    assert isinstance(make_head("film", H, OUT, 1, None), FiLMHead)
