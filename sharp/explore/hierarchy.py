"""The hierarchy of timescales: strides a**l, effective contexts W·a**l, and the layer states
over a stream. (The acceleration ablation of SPEC §8.4 is :mod:`sharp.experiments.acceleration`.)"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from sharp.config import SharpConfig
from sharp.data.streams import TokenIds, token_tensor
from sharp.model.learner import Sharp


def context_table(config: SharpConfig) -> pd.DataFrame:
    """Per layer: hidden size, stride a**l (tokens between two ticks), ticks per 1,000
    tokens, and the effective context W·a**l (tokens) its memory window spans."""
    return pd.DataFrame({
        "layer": range(config.layers),
        "hidden": config.hidden,
        "stride a^l": config.strides,
        "ticks per 1,000 tokens": [1_000 // s for s in config.strides],
        "context W·a^l (tokens)": [config.window * s for s in config.strides],
    }).set_index("layer")


@torch.inference_mode()
def layer_states(learner: Sharp, tokens: TokenIds) -> list[np.ndarray]:
    """The state every layer holds after each wake step over ``tokens``, from a reset
    state and without learning (the strides of wake and evaluation): one array of shape
    (steps, H_l) per layer, steps = len(tokens) - W. Layer l changes only at steps that
    are multiples of a**l. ``tokens`` is checked as a stream is (ValueError)."""
    c = learner.config
    ids = token_tensor(tokens, c.window, learner.vocab_size, learner.device)
    steps = ids.numel() - c.window
    t = torch.arange(1, steps + 1, device=learner.device)
    held, below = [], None
    for level, memory in enumerate(learner.memories):
        if level == 0:
            inputs = ids[c.window - 1 : -1]
        else:
            every = learner.strides[level] // learner.strides[level - 1]
            inputs = below[every - 1 :: every]
        start = torch.zeros(c.hidden[level], device=learner.device)
        below = memory.trajectory(inputs, start)
        padded = torch.cat([start.unsqueeze(0), below])
        held.append(padded[t // learner.strides[level]].cpu().numpy())
    return held
