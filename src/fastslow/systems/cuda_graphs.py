"""System 1 replayed from CUDA graphs, for inference and training.

At the batch sizes System 1 runs, a GPU spends a run's time on launching its ~30 kernels, not on
running them. A CUDA graph records one run per input shape and replays it with one launch (in
training, a second graph replays the backward pass); the records are the eager run's bits and
the gradients equal it up to rounding (tests on the GPU).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import fields

import torch
from torch import nn

from fastslow.systems.records import S1Record
from fastslow.systems.system1 import System1


class _RunRecords(nn.Module):
    """``model.run`` as a module returning its records as a tuple, which graph capture for
    training (``torch.cuda.make_graphed_callables``) requires."""

    def __init__(self, model: System1, timesteps: int | None) -> None:
        super().__init__()
        self.model, self.timesteps = model, timesteps

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        run = self.model.run(x, self.timesteps)
        return run.step_outputs, run.logits, run.synaptic_ops, run.dense_macs, run.spike_rates


class GraphedSystem1:
    """``model.run(x)`` on CUDA, captured once per input shape and mode (up to ``max_shapes``,
    least recently used dropped) and replayed. Without gradients it is inference; with them (the
    model's parameters requiring grad) the backward pass is a graph too, and ``loss.backward()``
    fills the parameters' ``.grad`` as usual. In training the returned records live in the graph's
    memory: the next call overwrites them, so take the loss's backward first (as a training loop
    does); and the gradients a backward leaves in ``.grad`` may share the graph's memory too, so
    zero them with ``set_to_none=True`` (the optimisers' default) before each step and do not
    accumulate over several backward passes. Deterministic encodings only (a rate code draws random
    spikes). The graphs read the parameters in place: optimiser updates are seen; after moving the
    model or replacing a parameter tensor, call :meth:`clear`."""

    def __init__(self, model: System1, max_shapes: int = 8) -> None:
        if model.spec.encoding == "rate":
            raise ValueError("CUDA graphs replay fixed work: use a deterministic encoding (direct or latency), not 'rate'")
        self.model, self.max_shapes = model, max_shapes
        self._graphs: OrderedDict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor, S1Record]] = OrderedDict()

    def clear(self) -> None:
        self._graphs.clear()

    def run(self, x: torch.Tensor, timesteps: int | None = None) -> S1Record:
        """As ``model.run(x, timesteps)``; ``x`` on the model's CUDA device."""
        if x.device.type != "cuda":
            raise ValueError(f"GraphedSystem1 runs CUDA tensors; got one on {x.device}: use model.run on a CPU")
        self.model.check_input(x)
        training = torch.is_grad_enabled() and any(p.requires_grad for p in self.model.parameters())
        key = (training, self.model.training, tuple(x.shape), x.dtype, x.device, timesteps)
        if key not in self._graphs:
            self._graphs[key] = self._capture_training(x, timesteps) if training else self._capture(x, timesteps)
            if len(self._graphs) > self.max_shapes:
                self._graphs.popitem(last=False)
        self._graphs.move_to_end(key)
        if training:
            step_outputs, logits, synaptic_ops, dense_macs, spike_rates = self._graphs[key](x)
            # The counts carry no gradient (the graph's autograd node marks every output differentiable).
            return S1Record(
                step_outputs,
                logits,
                synaptic_ops.detach(),
                dense_macs.detach(),
                neuron_updates=self.model.neuron_counts(x.dtype),
                spike_rates=spike_rates.detach(),
                exit_layers=self.model.exit_layers,
            )
        graph, static_input, static_run = self._graphs[key]
        static_input.copy_(x)
        graph.replay()
        # The next replay overwrites the static outputs: hand out copies.
        return S1Record(
            **{f.name: getattr(static_run, f.name).clone() for f in fields(S1Record) if f.name != "exit_layers"},
            exit_layers=static_run.exit_layers,
        )

    def _capture_training(self, x: torch.Tensor, timesteps: int | None):
        # Warm-up (three forward and backward passes that leave .grad alone), then the forward and
        # backward captures: torch's own recipe for graphing a module in training.
        return torch.cuda.make_graphed_callables(_RunRecords(self.model, timesteps), (x.clone(),))

    @torch.no_grad()
    def _capture(self, x: torch.Tensor, timesteps: int | None) -> tuple[torch.cuda.CUDAGraph, torch.Tensor, S1Record]:
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
