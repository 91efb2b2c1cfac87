"""Memory layers: recurrent autoencoders over windows of W inputs (SPEC §2).

A memory never receives gradient from the prediction loss. Layer 0 reads tokens and
recalls them with cross-entropy (or, with dense inputs, reads each token's frozen vector
and is a vector memory: SPEC §11); layers above read the state vectors of the layer below
and recall them with mean squared error.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from sharp.engines.runtime import exact_float32

#: Steps per recurrent-kernel call over a long sequence. cuDNN refuses very long ones
#: (``CUDNN_STATUS_NOT_SUPPORTED`` at 200,000 steps on an H200 with torch 2.11 + CUDA 13;
#: 20,000 worked), so :func:`tanh_trajectory` runs longer sequences in chunks of this many.
TRAJECTORY_CHUNK = 16_384


def tanh_trajectory(projected: Tensor, start: Tensor, weights: Sequence[Tensor],
                    chunk: int = TRAJECTORY_CHUNK) -> Tensor:
    """States (T, H) after each step of a one-layer tanh RNN (``nn.RNN``'s arithmetic and
    kernel, cuDNN on CUDA) over the projected inputs ``projected`` (T, E), from ``start``
    (H,); ``weights`` are (W_ih (H, E), W_hh (H, H), b_ih (H,), b_hh (H,)).

    A sequence longer than ``chunk`` steps runs as consecutive kernel calls of at most
    ``chunk`` steps, each from the state the last one ended in. The input product
    W_ih·x + b_ih is then computed once for the whole sequence, outside the kernel, which
    reads it through an identity input weight (exact: x·1 plus zeros), so that on the CPU
    the result is bit-identical to one call over the whole sequence (computed per chunk,
    BLAS may round a product's rows differently by the number of rows: MKL does for short
    tails); on CUDA it agrees within float32 rounding.
    Raises ValueError for ``chunk`` < 1.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1 step, got {chunk}")
    steps, hidden = projected.shape[0], start.shape[-1]
    if steps == 0:
        return projected.new_zeros(0, hidden)
    state = start.reshape(1, 1, hidden)
    if steps <= chunk:
        return _rnn_tanh(projected, state, weights)[0]
    w_ih, w_hh, b_ih, b_hh = weights
    driven = nn.functional.linear(projected, w_ih, b_ih)
    identity = torch.eye(hidden, dtype=driven.dtype, device=driven.device)
    through = (identity, w_hh, torch.zeros_like(b_ih), b_hh)
    outputs = driven.new_empty(steps, hidden)
    for lo in range(0, steps, chunk):
        part, state = _rnn_tanh(driven[lo : lo + chunk], state, through)
        outputs[lo : lo + chunk] = part
    return outputs


def _rnn_tanh(inputs: Tensor, state: Tensor, weights: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """One call of torch's tanh RNN kernel on ``inputs`` (T, E) from ``state`` (1, 1, H):
    the outputs (T, H) and the final state (1, 1, H). (As ``nn.RNN`` calls it in training
    mode; dropout is 0; float32 products, never TF32. On CUDA, weights that are not one
    flattened buffer are copied into one per call, which costs nothing next to a long
    sequence: that warning is silenced.)"""
    with warnings.catch_warnings(), exact_float32():
        warnings.filterwarnings("ignore", message="RNN module weights are not part")
        outputs, final = torch.rnn_tanh(inputs.unsqueeze(0), state, list(weights), True, 1, 0.0,
                                        True, False, True)
    return outputs[0], final


class Memory(nn.Module):
    """Input projection -> one-layer tanh RNN -> W parallel linear read-outs.

    ``inputs`` is the vocabulary size for a token memory (``tokens=True``) or the input
    vector size otherwise. The read-outs recall every window position from the encoder's
    final state: ``x̂_t = R_t·h_T + b_t``.
    """

    def __init__(
        self,
        inputs: int,
        hidden: int,
        embedding: int,
        window: int,
        *,
        tokens: bool,
        reservoir: bool = False,
    ) -> None:
        super().__init__()
        self.tokens = tokens
        self.hidden = hidden
        self.project: nn.Module = (
            nn.Embedding(inputs, embedding) if tokens else nn.Linear(inputs, embedding)
        )
        self.encoder = nn.RNN(embedding, hidden, nonlinearity="tanh", batch_first=True)
        self.recall_weight = nn.Parameter(torch.empty(window, inputs, hidden))
        self.recall_bias = nn.Parameter(torch.zeros(window, inputs))
        self._init(reservoir)

    @property
    def device(self) -> torch.device:
        """The device this memory's parameters live on."""
        return self.recall_bias.device

    def _init(self, reservoir: bool) -> None:
        with torch.no_grad():
            if reservoir:
                self.encoder.weight_ih_l0.fill_(1.0)
                self.encoder.weight_hh_l0.fill_(1.0)
            else:
                nn.init.xavier_uniform_(self.encoder.weight_ih_l0)
                nn.init.orthogonal_(self.encoder.weight_hh_l0)
            self.encoder.bias_ih_l0.zero_()
            self.encoder.bias_hh_l0.zero_()
            nn.init.xavier_uniform_(self.recall_weight)
            if isinstance(self.project, nn.Linear):
                nn.init.xavier_uniform_(self.project.weight)
                self.project.bias.zero_()

    def encode(self, window: Tensor, start: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Encode a window from ``start`` (B, H).

        ``window`` is (B, W) token ids or (B, W, inputs) vectors. Returns the recall
        (B, W, inputs) — logits for a token memory, vectors otherwise — the final state
        (B, H), and the state after the window's first element (B, H), which is the right
        start for the next stride-1 window.
        """
        first, *rest = self._drive(self.project(window)).unbind(1)
        recurrent = self.encoder.weight_hh_l0.t()
        state = after_first = self._cell(first, start, recurrent)
        for driven in rest:
            state = self._cell(driven, state, recurrent)
        weight, bias = self.recall_weight, self.recall_bias
        recall = nn.functional.linear(state, weight.flatten(0, 1), bias.flatten())
        return recall.view(-1, *bias.shape), state, after_first

    def _drive(self, projected: Tensor) -> Tensor:
        """The input part of the recurrence, W_ih·x + b_ih + b_hh (both biases folded in
        once for the whole window, which saves two ops per element in the hot loop)."""
        rnn = self.encoder
        return nn.functional.linear(projected, rnn.weight_ih_l0, rnn.bias_ih_l0) + rnn.bias_hh_l0

    @staticmethod
    def _cell(driven: Tensor, state: Tensor, recurrent: Tensor) -> Tensor:
        """tanh(W_ih·x + b_ih + b_hh + h·W_hhᵀ), given the input part ``driven`` and
        ``recurrent`` = W_hhᵀ (transposed once per window)."""
        return torch.tanh(torch.addmm(driven, state, recurrent))

    def recall_loss(self, window: Tensor, recall: Tensor) -> Tensor:
        """Mean cross-entropy (token memory) or mean squared error (vector memory)."""
        if self.tokens:
            return nn.functional.cross_entropy(recall.flatten(0, 1), window.flatten())
        return nn.functional.mse_loss(recall, window)

    @torch.no_grad()
    def step(self, x: Tensor, state: Tensor) -> Tensor:
        """Advance the encoder one element: ``x`` is (B,) token ids or (B, inputs)."""
        return self._cell(self._drive(self.project(x)), state, self.encoder.weight_hh_l0.t())

    def trajectory(self, inputs: Tensor, start: Tensor, chunk: int = TRAJECTORY_CHUNK) -> Tensor:
        """States after each element of a whole sequence ``inputs`` (T,) or (T, inputs),
        from ``start`` (H,): (T, H), by :func:`tanh_trajectory` (recurrent calls of at most
        ``chunk`` steps, bit-identical to one call over the whole sequence)."""
        rnn = self.encoder
        weights = (rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0)
        return tanh_trajectory(self.project(inputs), start, weights, chunk)
