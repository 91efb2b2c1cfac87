"""Memory layers: recurrent autoencoders over windows of W inputs (SPEC §2).

A memory never receives gradient from the prediction loss. Layer 0 reads tokens and
recalls them with cross-entropy; layers above read the state vectors of the layer below
and recall them with mean squared error.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


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

    def trajectory(self, inputs: Tensor, start: Tensor) -> Tensor:
        """States after each element of a whole sequence ``inputs`` (T,) or (T, inputs),
        from ``start`` (H,), in one recurrent call: (T, H)."""
        if inputs.shape[0] == 0:
            return start.new_zeros(0, self.hidden)
        outputs, _ = self.encoder(self.project(inputs).unsqueeze(0), start.view(1, 1, -1))
        return outputs[0]
