"""System 1 inference replayed from CUDA graphs.

At the batch sizes System 1 serves, a GPU spends a run's time on launching its ~40 kernels, not on
running them. A CUDA graph records one run per input shape and replays it with one launch; the
answers are the eager run's bits (a test on the GPU checks).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import fields

import torch

from fastslow.systems.system1 import S1Run, System1


class GraphedSystem1:
    """``model.run(x)`` for inference on CUDA, captured once per input shape (up to ``max_shapes``,
    least recently used dropped) and replayed. Deterministic encodings only (a rate code draws
    random spikes). The graphs read the model's parameters in place: updates to their values are
    seen; after moving the model or replacing a parameter tensor, call :meth:`clear`."""

    def __init__(self, model: System1, max_shapes: int = 8) -> None:
        if model.spec.encoding == "rate":
            raise ValueError("CUDA graphs replay fixed work: use a deterministic encoding (direct or latency), not 'rate'")
        self.model, self.max_shapes = model, max_shapes
        self._graphs: OrderedDict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor, S1Run]] = OrderedDict()

    def clear(self) -> None:
        self._graphs.clear()

    @torch.no_grad()
    def run(self, x: torch.Tensor, timesteps: int | None = None) -> S1Run:
        """As ``model.run(x, timesteps)`` without gradients; ``x`` on the model's CUDA device."""
        if x.device.type != "cuda":
            raise ValueError(f"GraphedSystem1 runs CUDA tensors; got one on {x.device}: use model.run on a CPU")
        self.model._check_input(x)
        key = (tuple(x.shape), x.dtype, x.device, timesteps)
        if key not in self._graphs:
            self._graphs[key] = self._capture(x, timesteps)
            if len(self._graphs) > self.max_shapes:
                self._graphs.popitem(last=False)
        self._graphs.move_to_end(key)
        graph, static_input, static_run = self._graphs[key]
        static_input.copy_(x)
        graph.replay()
        # The next replay overwrites the static outputs: hand out copies.
        return S1Run(**{f.name: getattr(static_run, f.name).clone() for f in fields(S1Run)})

    def _capture(self, x: torch.Tensor, timesteps: int | None) -> tuple[torch.cuda.CUDAGraph, torch.Tensor, S1Run]:
        static_input = x.clone()
        # Warm-up on a side stream first (kernels compile, the allocator settles), as capture requires.
        side = torch.cuda.Stream(device=x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):
            for _ in range(2):
                self.model.run(static_input, timesteps)
        torch.cuda.current_stream(x.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_run = self.model.run(static_input, timesteps)
        return graph, static_input, static_run
