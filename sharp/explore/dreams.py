"""Looking inside SHARP's sleep (SPEC §4): tags, dreamed text, the replay each upper layer
sees, and the upper memories' recall loss on it.

Every function here leaves the learner as it found it: sampling uses the learner's own
generator (through :meth:`Sharp.dream_steps` and :meth:`Sharp.dream`), seeded for the call and
restored afterwards, so looking at dreams never changes what the next sleep does.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from sharp.model.learner import Sharp, Tag


@contextmanager
def seeded(learner: Sharp, seed: int) -> Iterator[None]:
    """Seed the learner's generator for the block; restore its state afterwards."""
    saved = learner.generator.get_state()
    learner.generator.manual_seed(seed)
    try:
        yield
    finally:
        learner.generator.set_state(saved)


def tag_table(learner: Sharp) -> pd.DataFrame:
    """One row per stored tag: the norms of its layer-0 state and of its context, and the
    cosine similarity of its context to the newest tag's."""
    tags = list(learner.tags)
    if not tags:
        return pd.DataFrame(columns=["tag", "state_norm", "context_norm", "context_cosine"])
    contexts = torch.cat([tag.context for tag in tags])
    newest = contexts[-1:].expand_as(contexts)
    return pd.DataFrame({
        "tag": range(len(tags)),
        "state_norm": [float(tag.state.norm()) for tag in tags],
        "context_norm": contexts.norm(dim=1).tolist(),
        "context_cosine": torch.cosine_similarity(contexts, newest, dim=1).tolist(),
    })


def _tag(learner: Sharp, tag: int | Tag) -> Tag:
    if isinstance(tag, Tag):
        return tag
    if not learner.tags:
        raise ValueError("the learner holds no tags: stream some tokens while memory 0 still "
                         "learns (recall EMA above tau), and dream before it sleeps")
    return learner.tags[tag]


@torch.no_grad()
def dream(learner: Sharp, tag: int | Tag = -1, steps: int = 200, seed: int = 0) -> np.ndarray:
    """Token ids dreamed from a tag, exactly as sleep's teacher does: layer 0 starts at the
    tag's state, head 0 reads it under the tag's context (held fixed), a token is sampled
    (the config's temperature and top-k) and fed back into memory 0."""
    chosen = _tag(learner, tag)
    with seeded(learner, seed):
        tokens = [int(token) for token, _ in
                  learner.dream_steps(chosen.state, chosen.context, steps)]
    return np.array(tokens, dtype=np.int64)


@torch.no_grad()
def replay_inputs(learner: Sharp, target: int, seed: int = 0) -> Tensor:
    """What upper memory ``target`` is trained on in sleep, for every stored tag: the
    dreamed layer-(target-1) states at the replay steps s with s mod a**target == 0,
    shape (tags, ticks, H_{target-1})."""
    if not 1 <= target < learner.config.layers:
        raise ValueError(f"target must be an upper layer 1..{learner.config.layers - 1}, "
                         f"got {target}")
    tags = list(learner.tags)
    if not tags:
        raise ValueError("the learner holds no tags to replay")
    with seeded(learner, seed):
        return learner.dream(tags, target)


@torch.no_grad()
def replay_loss(learner: Sharp, target: int, inputs: Tensor) -> float:
    """Mean recall loss (MSE) of memory ``target`` on replay ``inputs`` (from
    :func:`replay_inputs`), windowed as sleep does: a buffer of W vectors starting from
    zeros, the memory's carry from zero for each tag. No weight changes."""
    memory = learner.memories[target]
    window = learner.config.window
    size = inputs.shape[-1]
    buffer = [torch.zeros(1, size, device=inputs.device) for _ in range(window)]
    losses = []
    for trajectory in inputs:
        carry = torch.zeros(1, learner.config.hidden[target], device=inputs.device)
        for vector in trajectory:
            buffer = [*buffer[1:], vector.unsqueeze(0)]
            batch = torch.stack(buffer, dim=1)
            recall, _, carry = memory.encode(batch, carry)
            losses.append(float(memory.recall_loss(batch, recall)))
    return float(np.mean(losses))


def upper_memory_weights(learner: Sharp) -> list[Tensor]:
    """A copy of every upper memory's parameters, flattened (to compare before/after)."""
    return [torch.cat([p.detach().flatten() for p in memory.parameters()]).clone()
            for memory in learner.memories[1:]]
