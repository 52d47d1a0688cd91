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

from fastslow.spiking.surrogate import SurrogateName, _surrogate, spike_fn

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


# Per-step maps larger than this (elements) are simulated in slices of this size, each slice over
# all T steps before the next: the slice's potential and spikes then stay in cache between the
# element-wise kernels instead of streaming the whole map through memory four times a step.
LIF_SLICE = 1 << 17
# The pooled inference kernel (lif_multistep_pooled) runs seven kernels per step on a slice of whole
# images; larger slices pay its per-kernel dispatch less often (measured on the conv benchmark).
POOLED_SLICE = 1 << 19


def _slices(size: int) -> list[slice]:
    if size <= 2 * LIF_SLICE:
        return [slice(0, size)]
    return [slice(start, min(start + LIF_SLICE, size)) for start in range(0, size, LIF_SLICE)]


def _slice_step(v: torch.Tensor, current: torch.Tensor, u: torch.Tensor, spike: torch.Tensor, params: LIFParams,
                in_place: bool) -> torch.Tensor:
    """One step on a slice of neurons: the pre-reset potential into ``u``, the spikes into ``spike``;
    returns the potential after the reset (written over ``u`` when ``in_place``)."""
    # beta·v, then + current: as lif_step rounds it (a fused multiply-add would not).
    torch.mul(v, params.beta, out=u)
    u.add_(current)
    torch.gt(u, params.threshold, out=spike)
    # Both resets multiply u or the threshold by a spike in {0, 1}: exact, as in lif_step.
    if params.reset == "zero":
        return u.addcmul_(u, spike, value=-1.0) if in_place else torch.addcmul(u, u, spike, value=-1.0)
    return u.add_(spike, alpha=-params.threshold) if in_place else torch.add(u, spike, alpha=-params.threshold)


class _FusedLIF(torch.autograd.Function):
    """All T steps of :func:`lif_step` in one autograd node, on currents [T, ...] seen as [T, M].

    Forward runs four element-wise kernels per step (leak, integrate, fire, reset) into
    preallocated buffers, slice by slice of the neurons (see :data:`LIF_SLICE`), and keeps only the
    pre-reset potentials u_t. Backward walks time in reverse over the same slices, recomputing
    spikes and surrogate slopes from u_t; the gradients equal autograd through the step loop
    (reset gradients included) up to float rounding, and the spikes equal it bit for bit.
    """

    @staticmethod
    def forward(ctx, currents: torch.Tensor, v0: torch.Tensor, params: LIFParams):
        steps = currents.shape[0]
        flat_currents = currents.reshape(steps, -1)  # a view, also for a constant current expanded over T
        potentials = torch.empty_like(flat_currents)
        spikes = torch.empty_like(flat_currents)
        parts = _slices(flat_currents.shape[1])
        v_last = None if len(parts) == 1 else torch.empty_like(flat_currents[0])
        flat_v0 = v0.reshape(-1)
        for part in parts:
            v = flat_v0[part]
            for t in range(steps):
                v = _slice_step(v, flat_currents[t, part], potentials[t, part], spikes[t, part], params, in_place=False)
            if v_last is None:
                v_last = v
            else:
                v_last[part] = v
        ctx.save_for_backward(potentials)
        ctx.params = params
        ctx.shape = currents.shape
        return spikes.view(currents.shape), v_last.view(currents.shape[1:])

    @staticmethod
    def backward(ctx, grad_spikes: torch.Tensor, grad_v_last: torch.Tensor | None):
        (potentials,) = ctx.saved_tensors
        p = ctx.params
        derivative = _surrogate(p.surrogate).derivative
        steps = potentials.shape[0]
        grad_spikes = grad_spikes.reshape(steps, -1)
        flat_grad_v_last = None if grad_v_last is None else grad_v_last.reshape(-1)
        grad_u = torch.empty_like(potentials)
        grad_v0 = torch.empty_like(potentials[0])
        for part in _slices(potentials.shape[1]):
            grad_v = None if flat_grad_v_last is None else flat_grad_v_last[part]  # w.r.t. v after step t's reset
            for t in range(steps - 1, -1, -1):
                u = potentials[t, part]
                shifted = u - p.threshold
                slope = derivative(shifted, p.slope)
                if p.reset == "zero":  # d v_after / d u = (1 − spike) − u·slope
                    keep = torch.le(shifted, 0.0, out=shifted).addcmul_(u, slope, value=-1.0)
                else:  # d v_after / d u = 1 − threshold·slope
                    keep = torch.mul(slope, -p.threshold).add_(1.0)
                grad = grad_u[t, part]
                torch.mul(grad_spikes[t, part], slope, out=grad)
                if grad_v is not None:
                    grad.addcmul_(keep, grad_v)
                grad_v = grad * p.beta
            grad_v0[part] = grad_v
        return grad_u.view(ctx.shape), grad_v0.view(ctx.shape[1:]), None


def lif_multistep(
    currents: torch.Tensor, state: LIFState | None, params: LIFParams
) -> tuple[torch.Tensor, LIFState]:
    """All timesteps of ``currents`` [T, ...] at once; same spikes and gradients as looping :func:`lif_step`."""
    if params.reset not in ("subtract", "zero"):
        raise ValueError(f"unknown reset {params.reset!r}: use 'subtract' or 'zero'")
    v0 = lif_init(currents[0]).v if state is None else state.v
    if torch.is_grad_enabled() and (currents.requires_grad or v0.requires_grad):
        spikes, v = _FusedLIF.apply(currents, v0, params)
    else:
        spikes, v = _lif_inference(currents, v0, params)
    return spikes, LIFState(v=v)


def _lif_inference(currents: torch.Tensor, v0: torch.Tensor, params: LIFParams) -> tuple[torch.Tensor, torch.Tensor]:
    """:class:`_FusedLIF`'s forward without a backward to serve: the potential of each slice lives in
    one reused buffer instead of a [T, M] record, so only the spikes take fresh memory (fresh
    buffers cost page faults on CPU). The same :func:`_slice_step`: the same bits."""
    steps = currents.shape[0]
    flat_currents = currents.reshape(steps, -1)
    spikes = torch.empty_like(flat_currents)
    v_last = torch.empty_like(flat_currents[0])
    flat_v0 = v0.reshape(-1)
    for part in _slices(flat_currents.shape[1]):
        v = flat_v0[part]
        u = v_last[part]  # the running potential, in place; it ends as v after step T
        for t in range(steps):
            v = _slice_step(v, flat_currents[t, part], u, spikes[t, part], params, in_place=True)
    return spikes.view(currents.shape), v_last.view(currents.shape[1:])


def lif_multistep_pooled(
    currents: torch.Tensor, state: LIFState, params: LIFParams
) -> tuple[torch.Tensor, torch.Tensor, LIFState]:
    """Inference only: :func:`lif_multistep` over channels-last maps ``currents`` [T, B, H, W, C], then
    2×2 max-pooling of the spikes (odd edges dropped, as ``max_pool2d``). Returns the pooled spikes
    [T, B, H//2, W//2, C], the spike count of each map [T, B] and the state after step T.

    Same bits as the unpooled path, but the full-size spike maps never reach memory: a few images
    at a time, each step's spikes land in a small reused buffer (in cache), where they are counted
    and pooled; writing and re-reading full-size float maps is what the unfused path spends most on.
    """
    if torch.is_grad_enabled() and (currents.requires_grad or state.v.requires_grad):
        raise ValueError("lif_multistep_pooled is for inference: run it under torch.no_grad()")
    if params.reset not in ("subtract", "zero"):
        raise ValueError(f"unknown reset {params.reset!r}: use 'subtract' or 'zero'")
    steps, batch, height, width, channels = currents.shape
    rows, cols = height // 2 * 2, width // 2 * 2
    group = min(batch, max(1, POOLED_SLICE // (height * width * channels)))  # images per slice
    pooled = currents.new_empty(steps, batch, height // 2, width // 2, channels)
    counts = currents.new_empty(steps, batch)
    v_last = currents.new_empty(batch, height, width, channels)
    spike_buffer = currents.new_empty(group, height, width, channels)
    row_buffer = currents.new_empty(group, height // 2, cols, channels)
    for first in range(0, batch, group):
        images = slice(first, min(first + group, batch))
        size = images.stop - first
        spikes, row_max = spike_buffer[:size], row_buffer[:size]
        v, u = state.v[images], v_last[images]  # u: the running potential, in place; it ends as v after step T
        for t in range(steps):
            v = _slice_step(v, currents[t, images], u, spikes, params, in_place=True)
            torch.sum(spikes, dim=(1, 2, 3), out=counts[t, images])
            torch.maximum(spikes[:, 0:rows:2, :cols], spikes[:, 1:rows:2, :cols], out=row_max)
            torch.maximum(row_max[:, :, 0::2], row_max[:, :, 1::2], out=pooled[t, images])
    return pooled, counts, LIFState(v=v_last)


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
