"""Leaky integrate-and-fire neurons: a pure functional core, its torch implementation over all
timesteps at once, and a thin module.

Convention (per timestep, discrete time)::

    v[t]     = beta * v_after[t-1] + current[t]        # leak, then integrate
    spike[t] = 1 if v[t] > threshold else 0            # fire (strictly above)
    v_after[t] = v[t] - spike[t] * threshold           # reset="subtract"
    v_after[t] = v[t] * (1 - spike[t])                 # reset="zero"

The reset acts on the potential of the step that fired, *before* the next
step's leak (as SpikingJelly and Norse do). snnTorch's default "subtract" takes
the threshold off after the next leak instead, so its potentials differ by a
factor beta after a spike; with reset="zero" the spikes are identical.

:func:`lif_multistep` is the reference over all timesteps (torch operators only). System 1 runs its
layers through :mod:`fastslow.spiking.backends`, which adds the accounting buffers and the compiled
kernels (numba, Triton) and says which one runs; the torch pieces it uses live here.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from fastslow.spiking import _cuda_kernels
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


def check_params(params: LIFParams) -> None:
    """Raise ValueError, naming the field, for LIF constants no neuron can have."""
    if params.reset not in ("subtract", "zero"):
        raise ValueError(f"unknown reset {params.reset!r}: use 'subtract' or 'zero'")
    if params.surrogate not in ("fast_sigmoid", "arctan"):
        raise ValueError(f"unknown surrogate {params.surrogate!r}: use 'fast_sigmoid' or 'arctan'")
    if not 0.0 < params.beta <= 1.0:  # also rejects NaN
        raise ValueError(f"LIF beta (the per-step decay) must lie in (0, 1], got {params.beta}")
    if not params.threshold > 0.0 or math.isinf(params.threshold):
        raise ValueError(f"LIF threshold must be a positive number, got {params.threshold}")
    if not params.slope > 0.0:
        raise ValueError(f"the surrogate's slope must be positive, got {params.slope}")


def _check_state(state_shape: torch.Size, neurons_shape: torch.Size) -> None:
    if tuple(state_shape) != tuple(neurons_shape):
        raise ValueError(f"the LIF state must be shaped like one step's current, {list(neurons_shape)}, got {list(state_shape)}")


def lif_step(current: torch.Tensor, state: LIFState, params: LIFParams) -> tuple[torch.Tensor, LIFState]:
    """One LIF timestep. Returns (spikes in {0,1}, new state); shapes follow ``current``."""
    check_params(params)
    _check_state(state.v.shape, current.shape)
    v = params.beta * state.v + current
    spikes = spike_fn(v - params.threshold, params.surrogate, params.slope)
    if params.reset == "subtract":
        v = v - spikes * params.threshold
    else:
        v = v * (1.0 - spikes)
    return spikes, LIFState(v=v)


# Per-step maps larger than this (elements) are simulated in slices of this size, each slice over
# all T steps before the next: the slice's potential and spikes then stay in cache between the
# element-wise kernels instead of streaming the whole map through memory four times a step.
LIF_SLICE = 1 << 17
# The pooled LIF (_FusedLIFPool and _lif_pool_forward, forward and backward) runs about seven kernels per step on a
# slice of whole images; larger slices pay their dispatch less often (measured on the conv benchmark).
POOLED_SLICE = 1 << 19


def _slices(size: int) -> list[slice]:
    if size <= 2 * LIF_SLICE:
        return [slice(0, size)]
    return [slice(start, min(start + LIF_SLICE, size)) for start in range(0, size, LIF_SLICE)]


def _slice_step(
    v: torch.Tensor, current: torch.Tensor, u: torch.Tensor, spike: torch.Tensor, params: LIFParams, out: torch.Tensor
) -> torch.Tensor:
    """One step on a slice of neurons: the pre-reset potential into ``u``, the spikes into ``spike``,
    the potential after the reset into ``out`` (which may be ``u`` itself, or ``v``); returns ``out``."""
    # beta·v, then + current: as lif_step rounds it (a fused multiply-add would not).
    torch.mul(v, params.beta, out=u)
    u.add_(current)
    torch.gt(u, params.threshold, out=spike)
    # Both resets multiply u or the threshold by a spike in {0, 1}: exact, as in lif_step.
    if params.reset == "zero":
        return torch.addcmul(u, u, spike, value=-1.0, out=out)
    return torch.add(u, spike, alpha=-params.threshold, out=out)


def _slice_grad(
    u: torch.Tensor,
    grad_spikes: torch.Tensor,
    grad_v: torch.Tensor | None,
    grad_u: torch.Tensor,
    grad_v_out: torch.Tensor,
    params: LIFParams,
    derivative,
) -> torch.Tensor:
    """One step of the LIF backward on a slice: from the pre-reset potential ``u``, the gradient of the
    step's spikes and ``grad_v`` (w.r.t. the potential after its reset; None after the last step),
    writes the gradient w.r.t. ``u`` into ``grad_u`` (which may be ``u`` itself: u is read first) and
    the one w.r.t. the previous step's potential into ``grad_v_out`` (which may be ``grad_v``)."""
    shifted = u - params.threshold
    slope = derivative(shifted, params.slope)
    keep = None
    if grad_v is not None:
        if params.reset == "zero":  # d v_after / d u = (1 − spike) − u·slope
            keep = torch.le(shifted, 0.0, out=shifted).addcmul_(u, slope, value=-1.0)
        else:  # d v_after / d u = 1 − threshold·slope
            keep = torch.mul(slope, -params.threshold).add_(1.0)
    torch.mul(grad_spikes, slope, out=grad_u)
    if keep is not None:
        grad_u.addcmul_(keep, grad_v)
    return torch.mul(grad_u, params.beta, out=grad_v_out)


class _FusedLIF(torch.autograd.Function):
    """All T steps of :func:`lif_step` in one autograd node, on currents [T, ...] seen as [T, M].

    With ``triton`` the forward and backward are one Triton launch each (the "triton" backend);
    without, forward runs four element-wise kernels per step (leak, integrate, fire, reset) into
    preallocated buffers, slice by slice of the neurons (see :data:`LIF_SLICE`), and keeps only the
    pre-reset potentials u_t. Backward walks time in reverse over the same slices, recomputing
    spikes and surrogate slopes from u_t; the gradients equal autograd through the step loop
    (reset gradients included) up to float rounding, and the spikes equal it bit for bit.
    """

    @staticmethod
    def forward(
        ctx, currents: torch.Tensor, v0: torch.Tensor | None, params: LIFParams, counts: torch.Tensor | None, triton: bool
    ):
        ctx.fused = triton  # one launch for all steps (CUDA)
        if ctx.fused:
            spikes, v_last, potentials = _cuda_kernels.lif_forward(
                currents, v0, params.beta, params.threshold, params.reset == "zero", record=True, counts=counts
            )
        else:
            potentials = currents.new_empty(currents.shape[0], currents[0].numel())
            spikes, v_last = _lif_forward(currents, v0, params, potentials)
            _add_counts(spikes, counts)
        ctx.save_for_backward(potentials)
        ctx.params = params
        ctx.shape = currents.shape
        ctx.from_rest = v0 is None
        return spikes, v_last

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_spikes: torch.Tensor, grad_v_last: torch.Tensor | None):
        (potentials,) = ctx.saved_tensors
        p = ctx.params
        if ctx.fused:
            grad_u, grad_v0 = _cuda_kernels.lif_backward(
                potentials, grad_spikes, grad_v_last, p.beta, p.threshold, p.reset == "zero", p.surrogate, p.slope
            )
            return grad_u.view(ctx.shape), None if ctx.from_rest else grad_v0.view(ctx.shape[1:]), None, None, None
        derivative = _surrogate(p.surrogate).derivative
        steps = potentials.shape[0]
        grad_spikes = grad_spikes.reshape(steps, -1)
        flat_grad_v_last = None if grad_v_last is None else grad_v_last.reshape(-1)
        # Each u_t is read once, walking back in time, so its gradient overwrites it: no fresh [T, M]
        # buffer (a second backward through this node then fails autograd's in-place check).
        grad_u = potentials
        grad_v0 = torch.empty_like(potentials[0])
        for part in _slices(potentials.shape[1]):
            grad_v = None if flat_grad_v_last is None else flat_grad_v_last[part]  # w.r.t. v after step t's reset
            for t in range(steps - 1, -1, -1):
                grad_v = _slice_grad(
                    potentials[t, part], grad_spikes[t, part], grad_v, grad_u[t, part], grad_v0[part], p, derivative
                )
        return grad_u.view(ctx.shape), None if ctx.from_rest else grad_v0.view(ctx.shape[1:]), None, None, None


def _add_counts(spikes: torch.Tensor, counts: torch.Tensor | None) -> None:
    """Add each input's spike count per step (``spikes`` [T, B, ...]) into ``counts`` [T, B], if given."""
    if counts is not None:
        with torch.no_grad():
            counts.add_(spikes.detach().flatten(2).sum(2, dtype=counts.dtype))


def lif_multistep(currents: torch.Tensor, state: LIFState | None, params: LIFParams) -> tuple[torch.Tensor, LIFState]:
    """All timesteps of ``currents`` [T, ...] at once from ``state`` (None: at rest): (spikes in {0, 1}
    [T, ...], the state after step T). The spikes and state of looping :func:`lif_step`, bit for bit,
    and its gradients up to float rounding (one autograd node for all steps, which keeps only the
    pre-reset potentials).

    Torch operators only, on any device and dtype: the reference that every backend of
    :mod:`fastslow.spiking.backends` matches (System 1 runs its layers there, with its accounting
    buffers, on the backend it names)."""
    check_params(params)
    if state is not None:
        _check_state(state.v.shape, currents.shape[1:])
    v0 = None if state is None else state.v  # None: start from rest without a zero state
    if torch.is_grad_enabled() and (currents.requires_grad or v0 is not None and v0.requires_grad):
        spikes, v = _FusedLIF.apply(currents, v0, params, None, False)
    else:
        spikes, v = _lif_forward(currents, v0, params, None)
    return spikes, LIFState(v=v)


def _lif_forward(
    currents: torch.Tensor, v0: torch.Tensor | None, params: LIFParams, potentials: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The LIF over currents [T, ...] seen as [T, M], slice by slice: (spikes, v after step T).
    Records the pre-reset potentials into ``potentials`` [T, M] if given; without (no backward to
    serve) each slice's potential runs in one reused buffer, so only the spikes take fresh memory
    (fresh buffers cost page faults on CPU)."""
    steps = currents.shape[0]
    flat_currents = currents.reshape(steps, -1)  # a view, also for a constant current expanded over T
    spikes = torch.empty_like(flat_currents)
    v_last = torch.empty_like(flat_currents[0])
    flat_v0 = (lif_init(currents[0]).v if v0 is None else v0).reshape(-1)  # None: from rest
    for part in _slices(flat_currents.shape[1]):
        v, after = flat_v0[part], v_last[part]  # the potential after each step's reset ends as v after step T
        for t in range(steps):
            u = after if potentials is None else potentials[t, part]
            v = _slice_step(v, flat_currents[t, part], u, spikes[t, part], params, out=after)
    return spikes.view(currents.shape), v_last.view(currents.shape[1:])


def _image_groups(shape: torch.Size) -> tuple[int, list[slice]]:
    """Slices of whole images [B, H, W, C] of about :data:`POOLED_SLICE` neurons, and their largest size."""
    batch = shape[0]
    group = min(batch, max(1, POOLED_SLICE // math.prod(shape[1:])))
    return group, [slice(first, min(first + group, batch)) for first in range(0, batch, group)]


def _pool_into(spikes: torch.Tensor, row_max: torch.Tensor, out: torch.Tensor) -> None:
    """2×2 max-pool of spike maps [n, H, W, C] into ``out`` [n, H//2, W//2, C] (odd edges dropped):
    two element-wise maxima, row pairs into ``row_max`` then column pairs."""
    rows, cols = spikes.shape[1] // 2 * 2, spikes.shape[2] // 2 * 2
    torch.maximum(spikes[:, 0:rows:2, :cols], spikes[:, 1:rows:2, :cols], out=row_max)
    torch.maximum(row_max[:, :, 0::2], row_max[:, :, 1::2], out=out)


def _unpool_into(grad_pooled: torch.Tensor, spikes: torch.Tensor, grad_spikes: torch.Tensor, rest: torch.Tensor) -> None:
    """``max_pool2d``'s gradient for {0, 1} spike maps [n, H, W, C], into ``grad_spikes``: each window's
    gradient goes to its first maximum in row-major order (its first spike, the top-left when none
    fired), as ``max_pool2d`` routes it. ``rest`` [n, H//2, W//2, C] holds what no earlier position took."""
    rows, cols = spikes.shape[1] // 2 * 2, spikes.shape[2] // 2 * 2
    if (rows, cols) != tuple(spikes.shape[1:3]):
        grad_spikes.zero_()  # the dropped odd edge gets no gradient
    corners = [(0, 0), (0, 1), (1, 0), (1, 1)]
    rest.copy_(grad_pooled)
    for row, col in corners:
        taken = grad_spikes[:, row:rows:2, col:cols:2]
        torch.mul(rest, spikes[:, row:rows:2, col:cols:2], out=taken)  # exactly the gradient or 0
        rest.sub_(taken)
    grad_spikes[:, 0:rows:2, 0:cols:2].add_(rest)  # windows without a spike


def _lif_pool_forward(
    currents: torch.Tensor, v0: torch.Tensor | None, params: LIFParams, potentials: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The LIF over [T, B, H, W, C] then 2×2 pooling, a few whole images at a time: (pooled spikes, spike
    count per map, v after step T) from ``v0`` (None: at rest). Records the pre-reset potentials into
    ``potentials`` if given."""
    steps, batch, height, width, channels = currents.shape
    v0 = lif_init(currents[0]).v if v0 is None else v0  # None: from rest
    group, groups = _image_groups(currents.shape[1:])
    pooled = currents.new_empty(steps, batch, height // 2, width // 2, channels)
    counts = currents.new_empty(steps, batch)
    v_last = currents.new_empty(batch, height, width, channels)
    spike_buffer = currents.new_empty(group, height, width, channels)
    row_buffer = currents.new_empty(group, height // 2, width // 2 * 2, channels)
    for images in groups:
        size = images.stop - images.start
        spikes, row_max = spike_buffer[:size], row_buffer[:size]
        v, after = v0[images], v_last[images]  # the potential after each step's reset ends as v after step T
        for t in range(steps):
            u = after if potentials is None else potentials[t, images]
            v = _slice_step(v, currents[t, images], u, spikes, params, out=after)
            torch.sum(spikes, dim=(1, 2, 3), out=counts[t, images])
            _pool_into(spikes, row_max, pooled[t, images])
    return pooled, counts, v_last


class _FusedLIFPool(torch.autograd.Function):
    """:class:`_FusedLIF` followed by 2×2 max-pooling of the spikes, over channels-last maps
    [T, B, H, W, C]: with ``triton``, one Triton launch forward and one backward; without, a few
    whole images at a time, as follows. Forward keeps the pre-reset potentials (as
    :class:`_FusedLIF`) and writes only the pooled spikes and each map's spike count (and, if asked,
    the synaptic operations the pooled spikes cause in the next layer); the full-size
    spike maps live in a small reused buffer, in cache. Backward recomputes them from the
    potentials and routes each window's gradient as ``max_pool2d`` does, so gradients equal
    ``max_pool2d`` over :func:`lif_multistep` up to float rounding, and the spikes are the same bits."""

    @staticmethod
    def forward(
        ctx,
        currents: torch.Tensor,
        v0: torch.Tensor | None,
        params: LIFParams,
        counts: torch.Tensor | None,
        next_synaptic_ops: tuple[torch.Tensor, torch.Tensor] | None,
        triton: bool,
    ):
        ctx.fused = triton  # one launch for all steps (CUDA)
        if ctx.fused:
            pooled, counts, v_last, potentials = _cuda_kernels.lif_pool_forward(
                currents,
                v0,
                params.beta,
                params.threshold,
                params.reset == "zero",
                record=True,
                counts=counts,
                next_synaptic_ops=next_synaptic_ops,
            )
        else:
            potentials = currents.new_empty(currents.shape)
            pooled, map_counts, v_last = _lif_pool_forward(currents, v0, params, potentials)
            counts = _pooled_records(pooled, map_counts, counts, next_synaptic_ops)
        ctx.save_for_backward(potentials)
        ctx.params = params
        ctx.from_rest = v0 is None
        ctx.mark_non_differentiable(counts)
        return pooled, counts, v_last

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_pooled: torch.Tensor, grad_counts: torch.Tensor | None, grad_v_last: torch.Tensor | None):
        (potentials,) = ctx.saved_tensors
        p = ctx.params
        if ctx.fused:
            grad_u, grad_v0 = _cuda_kernels.lif_pool_backward(
                potentials, grad_pooled, grad_v_last, p.beta, p.threshold, p.reset == "zero", p.surrogate, p.slope
            )
            return grad_u, None if ctx.from_rest else grad_v0, None, None, None, None
        derivative = _surrogate(p.surrogate).derivative
        steps, _, height, width, channels = potentials.shape
        group, groups = _image_groups(potentials.shape[1:])
        grad_u = potentials  # each u_t is read once, then overwritten by its gradient (as in _FusedLIF)
        grad_v0 = torch.empty_like(potentials[0])
        spike_buffer = potentials.new_empty(group, height, width, channels)
        grad_spike_buffer = torch.empty_like(spike_buffer)
        rest_buffer = potentials.new_empty(group, height // 2, width // 2, channels)
        for images in groups:
            size = images.stop - images.start
            spikes, grad_spikes, rest = spike_buffer[:size], grad_spike_buffer[:size], rest_buffer[:size]
            grad_v = None if grad_v_last is None else grad_v_last[images]  # w.r.t. v after step t's reset
            for t in range(steps - 1, -1, -1):
                u = potentials[t, images]
                torch.gt(u, p.threshold, out=spikes)
                _unpool_into(grad_pooled[t, images], spikes, grad_spikes, rest)
                grad_v = _slice_grad(u, grad_spikes, grad_v, grad_u[t, images], grad_v0[images], p, derivative)
        return grad_u, None if ctx.from_rest else grad_v0, None, None, None, None


def _pooled_records(
    pooled: torch.Tensor,
    map_counts: torch.Tensor,
    counts: torch.Tensor | None,
    next_synaptic_ops: tuple[torch.Tensor, torch.Tensor] | None,
) -> torch.Tensor:
    """The torch path's records: ``map_counts`` added into ``counts`` (if given; returned), and the
    next layer's synaptic ops from the ``pooled`` spikes added into ``next_synaptic_ops``' out."""
    with torch.no_grad():
        if next_synaptic_ops is not None:
            next_fanout, next_ops = next_synaptic_ops
            per_position = pooled.detach().sum(-1).flatten(2)  # [T, B, positions]
            next_ops.add_(torch.matmul(per_position, next_fanout.to(per_position.dtype)))
        return map_counts if counts is None else counts.add_(map_counts)


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
