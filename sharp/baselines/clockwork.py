"""Clockwork RNN baseline (Koutník, Greff, Gomez, Schmidhuber 2014; SPEC §7).

M modules of H tanh units; module i has period 2**i and updates only at clock times that
are multiples of it — so the modules updating at time t are always the fastest ones,
0..a(t)-1 with a(t) = 1 + (trailing zero bits of t), and all of them at t = 0. The
recurrent weights form one block-triangular (M·H)² matrix (:meth:`recurrent_matrix`):

* ``koutnik`` connectivity: module i reads itself and the slower modules j >= i (block
  upper-triangular, as in the paper that introduced the model);
* ``paper`` connectivity: module i reads the faster modules 0..i (block lower-triangular,
  the variant the SHARP authors ran).

The matrix is stored as its row blocks, each holding only the columns its module may
read, so the structural zeros are neither stored, multiplied nor trained, and an update
touches only the active modules' rows. (Slicing rows out of one full parameter would make
autograd build a full-size zero gradient at every step.) Every module reads the token
embedding; the read-out is linear over all modules. Streaming (``tbptt``/``paper``
modes) is :class:`StreamingRecurrent`'s.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sharp.baselines.config import ClockworkConfig
from sharp.baselines.recurrent import RecurrentCore, State, StreamingRecurrent
from sharp.config import check_instance
from sharp.model.inputs import input_layer


def active_modules(t: int, modules: int) -> int:
    """How many modules (the fastest ones) update at clock time ``t``."""
    return modules if t == 0 else min(modules, (t & -t).bit_length())


def readable_modules(module: int, modules: int, reads_slower: bool) -> range:
    """The modules whose state module ``module`` reads: itself and the slower ones
    (``reads_slower``, Koutník) or itself and the faster ones (the authors' variant)."""
    return range(module, modules) if reads_slower else range(module + 1)


class ClockworkCore(RecurrentCore):
    """Embedding -> clockwork modules (block-triangular recurrence) -> linear read-out."""

    def __init__(self, config: ClockworkConfig, table: Tensor | None = None) -> None:
        super().__init__()
        c = config
        self.modules_count, self.hidden = c.modules, c.hidden
        size = c.modules * c.hidden
        reads_slower = c.connectivity == "koutnik"
        #: state columns [lo, hi) that each module reads
        self.columns = [
            (min(r) * c.hidden, (max(r) + 1) * c.hidden)
            for r in (readable_modules(i, c.modules, reads_slower) for i in range(c.modules))
        ]
        self.embed = input_layer(c.vocab_size, c.embedding, table)
        self.w_in = nn.Parameter(torch.empty(size, c.embedding))
        self.bias = nn.Parameter(torch.zeros(size))
        self.recurrent = nn.ParameterList(
            nn.Parameter(torch.empty(c.hidden, hi - lo)) for lo, hi in self.columns
        )
        self.readout = nn.Linear(size, c.vocab_size)
        with torch.no_grad():
            nn.init.xavier_uniform_(self.w_in)
            for block in self.recurrent:
                nn.init.xavier_uniform_(block)

    def recurrent_matrix(self) -> Tensor:
        """The full block-triangular (M·H, M·H) recurrent matrix (zeros where a module
        does not read), rows = the updated module's units."""
        size = self.modules_count * self.hidden
        matrix = self.bias.new_zeros(size, size)
        for i, (block, (lo, hi)) in enumerate(zip(self.recurrent, self.columns, strict=True)):
            matrix[i * self.hidden : (i + 1) * self.hidden, lo:hi] = block.detach()
        return matrix

    def initial_state(self) -> State:
        return self.bias.new_zeros(self.bias.shape)

    def module_state(self, state: Tensor, module: int) -> Tensor:
        """Module ``module``'s part of a state."""
        return state[module * self.hidden : (module + 1) * self.hidden]

    def run(self, ids: Tensor, state: State, clock: int) -> tuple[Tensor, State]:
        assert isinstance(state, Tensor)
        modules, hidden = self.modules_count, self.hidden
        drive = nn.functional.linear(self.embed(ids), self.w_in, self.bias)
        drive = drive.view(-1, modules, hidden)
        blocks, columns = list(self.recurrent), self.columns
        h, outputs = state, []
        for s in range(ids.shape[0]):
            active = active_modules(clock + s, modules)
            parts = [
                torch.tanh(torch.addmv(drive[s, i], blocks[i], h[columns[i][0] : columns[i][1]]))
                for i in range(active)
            ]
            if active < modules:
                parts.append(h[active * hidden :])
            h = torch.cat(parts)
            outputs.append(h)
        return torch.stack(outputs), h


class ClockworkRNN(StreamingRecurrent):
    """Clockwork RNN baseline implementing the learner protocol. Raises TypeError for a
    ``config`` that is not a :class:`ClockworkConfig`."""

    kind = "clockwork"

    def __init__(self, config: ClockworkConfig, table: Tensor | None = None) -> None:
        check_instance(config, ClockworkConfig, "ClockworkRNN",
                       "sharp.baselines.baseline_preset('clockwork')")
        super().__init__(config, table)

    def _build_core(self) -> RecurrentCore:
        return ClockworkCore(self.config, self.table)  # type: ignore[arg-type]
