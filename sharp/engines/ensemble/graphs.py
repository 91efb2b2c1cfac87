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
    device) after :data:`WARMUP` eager steps and replays the graph from then on.

    The last warm-up step runs under ``torch.cuda.set_sync_debug_mode("warn")``: a step that
    synchronises with the host cannot be captured, so the runner then warns and stays eager
    (no capture is tried, every step was taken once). A capture that fails all the same
    leaves CUDA's allocator mid-capture for the rest of the process, so it raises
    RuntimeError saying to run with ``graphs=False``. :attr:`captured` says whether the
    steps now replay a graph."""

    def __init__(self, step: Callable[[], None], device: torch.device, *, graphed: bool
                 ) -> None:
        if graphed and device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA device, not {device}")
        self.step, self.device, self.graphed = step, device, graphed
        self.graph: torch.cuda.CUDAGraph | None = None
        self.warm = 0

    @property
    def captured(self) -> bool:
        """Whether :meth:`run` replays a captured CUDA graph now."""
        return self.graph is not None

    def invalidate(self) -> None:
        """Drop the captured graph (e.g. a learning rate it baked in changed): the next
        :meth:`run` warms up and captures again."""
        self.graph, self.warm = None, 0

    def run(self, n: int) -> None:
        """Take ``n`` steps (the first ones eager while a graph is still to be captured).
        Raises RuntimeError if a capture fails (see the class)."""
        if self.graphed and self.graph is None:
            n = self._warm_up(n)
            if n and self.graphed:
                self._capture()
        step = self.step if self.graph is None else self.graph.replay
        for _ in range(n):
            step()

    def _warm_up(self, n: int) -> int:
        """Take the warm-up steps still due, at most ``n``, on a side stream, the last one
        watched for host synchronisations (which leave the runner eager, with a warning);
        the number of the ``n`` steps left."""
        eager = min(n, WARMUP - self.warm)
        side, main = torch.cuda.Stream(self.device), torch.cuda.current_stream(self.device)
        side.wait_stream(main)
        synced = False
        with torch.cuda.stream(side):
            for _ in range(eager):
                if self.warm == WARMUP - 1:
                    synced = self._synchronises()
                else:
                    self.step()
                self.warm += 1
        main.wait_stream(side)
        if synced:
            warnings.warn("the step synchronises with the host, so it cannot be captured "
                          "as a CUDA graph: it runs eagerly", RuntimeWarning, stacklevel=3)
            self.graphed = False
        return n - eager

    def _synchronises(self) -> bool:
        """Take one step under ``torch.cuda.set_sync_debug_mode("warn")``: whether it
        synchronised with the host."""
        mode = torch.cuda.get_sync_debug_mode()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                self.step()
            finally:
                torch.cuda.set_sync_debug_mode(mode)
        return any("synchroniz" in str(w.message) for w in caught)

    def _capture(self) -> None:
        """Capture one step (recorded, not taken) as :attr:`graph`. Raises RuntimeError if
        the capture fails (see the class)."""
        main = torch.cuda.current_stream(self.device)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                self.step()
        except RuntimeError as error:
            torch.cuda.set_stream(main)  # the capture's exit did not get that far
            raise RuntimeError(
                f"capturing a CUDA graph of the step failed ({error}); CUDA's allocator "
                "stays mid-capture in this process: run again with graphs=False "
                "(SharpEnsemble(..., graphs=False))") from error
        self.graph = graph
