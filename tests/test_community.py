"""The community task: structure, the direction rule, and the optimal error."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from sharp.data import CommunityTask

DirectionRule = Callable[[list[int]], int]


def _sum_parity_rule(depth: int) -> DirectionRule:
    """The SPEC rule written independently: clockwise iff the last K choices sum to even."""

    def rule(past: list[int]) -> int:
        if len(past) < depth:
            return 1
        return 1 if sum(past[len(past) - depth :]) % 2 == 0 else -1

    return rule


def _parse(task: CommunityTask, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Community and direction of every visit, read back from the token stream."""
    n = task.members
    visits = tokens.reshape(-1, task.tokens_per_visit)
    assert (visits[:, -1] == task.separator).all()
    communities = visits[:, 0] // n
    assert (visits[:, :-1] // n == communities[:, None]).all()
    members = visits[:, :-1] % n
    assert (np.sort(members, axis=1) == np.arange(n)).all()  # every member exactly once
    directions = np.where((members[:, 1] - members[:, 0]) % n == 1, 1, -1)
    return communities, directions


def _online_error(task: CommunityTask, tokens: np.ndarray, rule: DirectionRule | None) -> float:
    """Mean per-token error (1 - probability given to the true token) of an online
    predictor that knows the task's structure; with ``rule=None`` it does not know the
    direction: it guesses clockwise for the second member, then reads the direction."""
    n, size = task.members, task.communities * task.members
    errors = np.zeros(tokens.size)
    past: list[int] = []
    position = 0  # index of the next token within its visit
    direction = 1
    for t, token in enumerate(tokens.tolist()):
        if position == 0:
            errors[t] = 1.0 - 1.0 / size  # community and start are fresh uniform draws
            direction = rule(past) if rule is not None else 1
            past.append(token // n)
        elif position < n:
            previous = tokens[t - 1]
            guess = (previous // n) * n + (previous % n + direction) % n
            errors[t] = float(guess != token)
            if rule is None and position == 1:  # the second member reveals the direction
                direction = 1 if (token - previous) % n == 1 else -1
        else:
            errors[t] = float(token != task.separator)
        position = (position + 1) % task.tokens_per_visit
    return float(errors.mean())


def test_vocabulary_and_layout() -> None:
    task = CommunityTask()
    assert (task.communities, task.members, task.depth, task.rule) == (2, 3, 2, "sum")
    assert task.vocab_size == 7
    assert task.separator == 6
    tokens = task.generate(1_000, seed=0)
    assert tokens.dtype == np.int64
    assert tokens.shape == (4_000,)
    assert tokens.min() >= 0 and tokens.max() < task.vocab_size
    _parse(task, tokens)


def test_bayes_optimal_predictor_reaches_optimal_error() -> None:
    task = CommunityTask(communities=2, members=3, depth=2, rule="sum")
    tokens = task.generate(20_000, seed=1)
    error = _online_error(task, tokens, _sum_parity_rule(2))
    assert task.optimal_error == pytest.approx(1 - (1 / 6 + 3) / 4)
    assert error == pytest.approx(0.2083, abs=0.01)
    assert error == pytest.approx(task.optimal_error, abs=0.01)
    # without the direction the same predictor is much worse (SPEC: about 0.333)
    blind = _online_error(task, tokens, None)
    assert blind == pytest.approx(1 / 3, abs=0.01)


def test_optimal_error_formula_for_other_sizes() -> None:
    task = CommunityTask(communities=3, members=4, depth=3, rule="hash")
    assert task.vocab_size == 13
    assert task.optimal_error == pytest.approx((1 - 1 / 12) / 5)
    tokens = task.generate(5_000, seed=2)
    communities, _ = _parse(task, tokens)
    known = task.directions(communities)

    def rule(past: list[int]) -> int:
        return int(known[len(past)])

    assert _online_error(task, tokens, rule) == pytest.approx(task.optimal_error, abs=0.01)


@pytest.mark.parametrize("rule", ["sum", "hash"])
def test_direction_follows_the_rule_for_every_visit(rule: str) -> None:
    task = CommunityTask(depth=2, rule=rule)  # type: ignore[arg-type]
    communities, directions = _parse(task, task.generate(5_000, seed=3))
    assert np.array_equal(directions, task.directions(communities))
    assert (directions[:2] == 1).all()  # clockwise before K choices exist
    if rule == "sum":
        parity = _sum_parity_rule(2)
        expected = [parity(communities[:t].tolist()) for t in range(communities.size)]
        assert directions.tolist() == expected


def test_direction_needs_the_last_k_visits() -> None:
    task = CommunityTask(depth=2, rule="sum")
    communities, directions = _parse(task, task.generate(20_000, seed=4))
    last, before = communities[1:-1], communities[:-2]
    now = directions[2:]
    for value in (0, 1):
        clockwise = (now[last == value] == 1).mean()
        assert 0.45 < clockwise < 0.55  # the last visit alone says nothing
        for earlier in (0, 1):
            both = now[(last == value) & (before == earlier)]
            assert both.size > 0 and np.unique(both).size == 1  # the last two decide it
    flipped = communities.copy()
    flipped[100] = 1 - flipped[100]
    changed = np.flatnonzero(task.directions(flipped) != task.directions(communities))
    assert changed.tolist() == [101, 102]


def test_hash_rule_depends_on_every_choice_in_the_window() -> None:
    task = CommunityTask(communities=2, depth=3, rule="hash")
    windows = np.array([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)])
    outcomes = {tuple(w): int(task.directions(np.append(w, 0))[-1]) for w in windows}
    for position in range(3):
        assert any(
            outcomes[tuple(w)] != outcomes[tuple(np.where(np.arange(3) == position, 1 - w, w))]
            for w in windows
        )


def test_seeds() -> None:
    task = CommunityTask()
    assert np.array_equal(task.generate(500, seed=7), task.generate(500, seed=7))
    assert not np.array_equal(task.generate(500, seed=7), task.generate(500, seed=8))


def test_invalid_tasks() -> None:
    with pytest.raises(ValueError, match="rule"):
        CommunityTask(rule="xor")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="depth"):
        CommunityTask(depth=-1)
    with pytest.raises(ValueError, match="community choices"):
        CommunityTask().directions(np.array([0, 2]))
