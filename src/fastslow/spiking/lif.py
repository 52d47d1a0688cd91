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

from fastslow.spiking.surrogate import SurrogateName, spike_fn, surrogate_derivative

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


class _FusedLIF(torch.autograd.Function):
    """All T steps of :func:`lif_step` in one autograd node.

    Forward keeps only the pre-reset potentials u_t [T, ...]; backward walks time in reverse and
    recomputes spikes and surrogate slopes from them, giving the same gradients as autograd through
    the step loop (reset gradients included) with one saved tensor instead of several per step.
    """

    @staticmethod
    def forward(ctx, currents: torch.Tensor, v0: torch.Tensor, params: LIFParams):
        potentials = torch.empty_like(currents)
        spikes = torch.empty_like(currents)
        v = v0
        for t in range(currents.shape[0]):
            u = params.beta * v + currents[t]
            spike = (u - params.threshold > 0).to(u.dtype)
            v = u - spike * params.threshold if params.reset == "subtract" else u * (1.0 - spike)
            potentials[t] = u
            spikes[t] = spike
        ctx.save_for_backward(potentials)
        ctx.params = params
        return spikes, v

    @staticmethod
    def backward(ctx, grad_spikes: torch.Tensor, grad_v_last: torch.Tensor | None):
        (potentials,) = ctx.saved_tensors
        p = ctx.params
        grad_currents = torch.empty_like(potentials)
        grad_v = torch.zeros_like(potentials[0]) if grad_v_last is None else grad_v_last
        for t in range(potentials.shape[0] - 1, -1, -1):
            u = potentials[t]
            slope = surrogate_derivative(u - p.threshold, p.surrogate, p.slope)
            if p.reset == "subtract":
                grad_u = (grad_spikes[t] - p.threshold * grad_v) * slope + grad_v
            else:
                spike = (u - p.threshold > 0).to(u.dtype)
                grad_u = grad_spikes[t] * slope + grad_v * ((1.0 - spike) - u * slope)
            grad_currents[t] = grad_u
            grad_v = p.beta * grad_u
        return grad_currents, grad_v, None


def lif_multistep(
    currents: torch.Tensor, state: LIFState | None, params: LIFParams
) -> tuple[torch.Tensor, LIFState]:
    """All timesteps of ``currents`` [T, ...] at once; same spikes and gradients as looping :func:`lif_step`."""
    if params.reset not in ("subtract", "zero"):
        raise ValueError(f"unknown reset {params.reset!r}: use 'subtract' or 'zero'")
    v0 = lif_init(currents[0]).v if state is None else state.v
    spikes, v = _FusedLIF.apply(currents, v0, params)
    return spikes, LIFState(v=v)


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
