"""Leaky integrate-and-fire neurons: a pure functional core and a thin module.

Convention (per timestep, discrete time)::

    v[t]     = beta * v_after[t-1] + current[t]        # leak, then integrate
    spike[t] = 1 if v[t] > threshold else 0            # fire (strictly above)
    v_after[t] = v[t] - spike[t] * threshold           # reset="subtract"
    v_after[t] = v[t] * (1 - spike[t])                 # reset="zero"

The reset acts on the potential of the step that fired, *before* the next
step's leak (as SpikingJelly and Norse do). snnTorch's default "subtract" takes
the threshold off after the next leak instead, so its potentials differ by a
factor beta after a spike; with reset="zero" the spikes are identical.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
from torch import nn

from fastslow.spiking.surrogate import SurrogateName, spike_fn

ResetMode = Literal["subtract", "zero"]


class LIFParams(NamedTuple):
    """LIF constants. ``beta`` is the per-step decay, exp(-dt/tau)."""

    beta: float = 0.9
    threshold: float = 1.0
    reset: ResetMode = "subtract"
    surrogate: SurrogateName = "fast_sigmoid"
    slope: float = 25.0

    @staticmethod
    def from_tau(tau_steps: float, **kwargs) -> "LIFParams":
        """Params whose decay is exp(-1/tau), tau in timesteps."""
        return LIFParams(beta=math.exp(-1.0 / tau_steps), **kwargs)


class LIFState(NamedTuple):
    """Membrane potential after the last step's reset, same shape as the layer."""

    v: torch.Tensor


def lif_init(like: torch.Tensor) -> LIFState:
    """Resting state (v = 0) shaped like ``like``."""
    return LIFState(v=torch.zeros_like(like))


def lif_step(current: torch.Tensor, state: LIFState, params: LIFParams) -> tuple[torch.Tensor, LIFState]:
    """One LIF timestep. Returns (spikes in {0,1}, new state); shapes follow ``current``."""
    v = params.beta * state.v + current
    spikes = spike_fn(v - params.threshold, params.surrogate, params.slope)
    if params.reset == "subtract":
        v = v - spikes * params.threshold
    elif params.reset == "zero":
        v = v * (1.0 - spikes)
    else:
        raise ValueError(f"unknown reset {params.reset!r}: use 'subtract' or 'zero'")
    return spikes, LIFState(v=v)


def lif_multistep(
    currents: torch.Tensor, state: LIFState | None, params: LIFParams
) -> tuple[torch.Tensor, LIFState]:
    """Run ``lif_step`` over the leading time axis of ``currents`` [T, ...]."""
    if state is None:
        state = lif_init(currents[0])
    spikes = []
    for current in currents:
        spike, state = lif_step(current, state, params)
        spikes.append(spike)
    return torch.stack(spikes), state


class LIF(nn.Module):
    """Stateless module wrapper of :func:`lif_step`: state is passed and returned."""

    def __init__(self, params: LIFParams = LIFParams()) -> None:
        super().__init__()
        self.params = params

    def forward(self, current: torch.Tensor, state: LIFState | None = None) -> tuple[torch.Tensor, LIFState]:
        if state is None:
            state = lif_init(current)
        return lif_step(current, state, self.params)

    def extra_repr(self) -> str:
        p = self.params
        return f"beta={p.beta}, threshold={p.threshold}, reset={p.reset}, surrogate={p.surrogate}({p.slope})"
