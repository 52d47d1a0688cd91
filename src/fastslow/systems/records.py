"""The one record of what System 1 ran: per-step outputs, answers and operation counts.

Every consumer reads this type: training (per-step losses), evaluation (each strategy's answers and
charges), policies (what they decide from) and serving (a prefix of steps for the inputs still
running). B = inputs, T = timesteps recorded, E = exits, K = components (layers, then exit heads),
H = hidden layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class S1Record:
    """What System 1 recorded over T steps for B inputs.

    - ``step_outputs`` [T, E, B, C]: each exit's readout at step t (for per-step losses).
    - ``logits`` [T, E, B, C]: each exit's cumulative mean output up to t (the answer at t).
    - ``synaptic_ops`` [K, T, B]: accumulate ops (input spikes × fan-out) per component.
    - ``dense_macs`` [K, T, B]: MACs of components fed by real values (direct encoding).
    - ``neuron_updates`` [K]: neuron state updates per component per timestep.
    - ``spike_rates`` [H, T, B]: fraction of each hidden layer's neurons that fired.
    - ``exit_layers``: the hidden layer each exit reads (the last exit reads the last layer).
    """

    step_outputs: torch.Tensor
    logits: torch.Tensor
    synaptic_ops: torch.Tensor
    dense_macs: torch.Tensor
    neuron_updates: torch.Tensor
    spike_rates: torch.Tensor
    exit_layers: tuple[int, ...] = ()

    @staticmethod
    def from_step_outputs(step_outputs: torch.Tensor, **fields) -> "S1Record":
        """A record whose answer at t is the mean of ``step_outputs`` [T, E, B, C] up to t."""
        return S1Record(step_outputs=step_outputs, logits=cumulative_mean(step_outputs), **fields)

    @property
    def final_logits(self) -> torch.Tensor:
        """[B, C] answer of the last exit after the last timestep."""
        return self.logits[-1, -1]

    @property
    def steps(self) -> int:
        """Timesteps recorded (T, or fewer for a prefix)."""
        return self.logits.shape[0]

    @property
    def last_exit(self) -> int:
        return self.logits.shape[1] - 1

    def __len__(self) -> int:
        return self.logits.shape[2]

    def rows(self, index: torch.Tensor) -> "S1Record":
        """The records of the inputs at ``index`` only."""
        return S1Record(
            step_outputs=self.step_outputs[:, :, index],
            logits=self.logits[:, :, index],
            synaptic_ops=self.synaptic_ops[:, :, index],
            dense_macs=self.dense_macs[:, :, index],
            neuron_updates=self.neuron_updates,
            spike_rates=self.spike_rates[:, :, index],
            exit_layers=self.exit_layers,
        )

    def to(self, device: torch.device | str) -> "S1Record":
        if self.logits.device == torch.device(device):
            return self
        move = lambda t: t.to(device)  # noqa: E731
        return S1Record(
            move(self.step_outputs),
            move(self.logits),
            move(self.synaptic_ops),
            move(self.dense_macs),
            move(self.neuron_updates),
            move(self.spike_rates),
            self.exit_layers,
        )

    @staticmethod
    def concatenate(records: list["S1Record"]) -> "S1Record":
        """Records of consecutive groups of inputs as one (along the batch)."""
        first = records[0]
        if len(records) == 1:
            return first
        cat = lambda name: torch.cat([getattr(r, name) for r in records], dim=2)  # noqa: E731
        return S1Record(
            cat("step_outputs"),
            cat("logits"),
            cat("synaptic_ops"),
            cat("dense_macs"),
            first.neuron_updates,
            cat("spike_rates"),
            first.exit_layers,
        )


def cumulative_mean(step_outputs: torch.Tensor) -> torch.Tensor:
    """[T, ...] the mean of ``step_outputs`` [T, ...] up to each t. One formula for every path
    (a run, serving's prefixes): on a CPU torch's cumsum accumulates in float64, so a prefix of the
    steps gives the full run's bits."""
    steps = step_outputs.shape[0]
    counts = torch.arange(1, steps + 1, dtype=step_outputs.dtype, device=step_outputs.device)
    return step_outputs.cumsum(0) / counts.view(steps, *([1] * (step_outputs.dim() - 1)))
