"""A step run many times: eagerly, or on CUDA captured once as a CUDA graph and replayed.

The ensemble's device-side steps (:meth:`~sharp.engines.ensemble.SharpEnsemble.learn_block`'s
wake step, the sleep-replay window step) read their inputs from static buffers at a cursor
held on the device and update every state tensor in place, so one captured step replayed n
times is n steps. Capture follows the PyTorch notes on CUDA graphs
(https://pytorch.org/docs/stable/notes/cuda.html#cuda-graphs): a few eager warm-up steps on a
side stream first (they are real steps, counted as such), then the capture of one step.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

#: Eager steps on a side stream before a capture (the PyTorch notes use 3).
WARMUP = 3


class StepRunner:
    """Runs ``step`` (no arguments, no host synchronisation, state updated in place) n times
    per :meth:`run`: eagerly unless ``graphed``, which captures it on ``device`` (a CUDA
    device) after :data:`WARMUP` eager steps and replays the graph from then on. A capture
    that fails (an op that cannot be captured) warns and leaves the runner eager: a
    capture only records, so no step was taken twice or lost."""

    def __init__(self, step: Callable[[], None], device: torch.device, *, graphed: bool
                 ) -> None:
        if graphed and device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA device, not {device}")
        self.step, self.device, self.graphed = step, device, graphed
        self.graph: torch.cuda.CUDAGraph | None = None
        self.warm = 0

    def invalidate(self) -> None:
        """Drop the captured graph (e.g. a learning rate it baked in changed): the next
        :meth:`run` warms up and captures again."""
        self.graph, self.warm = None, 0

    def run(self, n: int) -> None:
        """Take ``n`` steps (the first ones eager while a graph is still to be captured)."""
        if not self.graphed:
            for _ in range(n):
                self.step()
            return
        if self.graph is None:
            eager = min(n, WARMUP - self.warm)
            side, main = torch.cuda.Stream(self.device), torch.cuda.current_stream(self.device)
            side.wait_stream(main)
            with torch.cuda.stream(side):
                for _ in range(eager):
                    self.step()
            main.wait_stream(side)
            self.warm, n = self.warm + eager, n - eager
            if n == 0:
                return
            graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(graph):
                    self.step()
            except RuntimeError as error:  # a capture records and runs nothing: go eager
                warnings.warn(f"CUDA graph capture failed, so these steps run eagerly: "
                              f"{error}", RuntimeWarning, stacklevel=2)
                self.graphed = False
                self.run(n)
                return
            self.graph = graph
        for _ in range(n):
            self.graph.replay()
