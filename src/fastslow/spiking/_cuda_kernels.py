"""Fused LIF kernels for CUDA (Triton, which CUDA builds of torch ship with), forward and backward.

On a GPU the torch path of :func:`fastslow.spiking.lif.lif_multistep` launches four element-wise
kernels per step (about seven, pooled), each tiny at the batch sizes System 1 runs: the time goes
to launches. Here one launch runs all T steps of a layer, each neuron's potential in a register:
leak, integrate, fire, reset (and, pooled, the 2×2 max-pool), each input's spike count per step
added into the run's records (pooled, also the synaptic operations the pooled spikes cause next:
float32 atomic sums of whole numbers, exact below 2^24 per input and step, beyond which their
rounding depends on the order of the adds); a second launch runs the backward, recomputing spikes
and surrogate slopes from the recorded pre-reset potentials. Same arithmetic as
:func:`fastslow.spiking.lif.lif_step` (β·v rounded, then + current: floating-point contraction is
off), so the spikes and potentials are the torch path's bits and the
gradients equal it up to rounding (tests; on a CPU they run in Triton's interpreter).
They run as the "triton" backend (:mod:`fastslow.spiking.backends` says when, and how to choose another).
"""

from __future__ import annotations

import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU builds of torch come without Triton: the torch path runs
    triton = None

_BLOCK = 512  # neurons per program (unpooled)
_POOL_BLOCK = 128  # 2×2 windows per program (pooled: four neurons each)
_MAX_GRID_ROWS = 65535  # CUDA's limit on a grid's second dimension
_SURROGATE_CODES = {"fast_sigmoid": 0, "arctan": 1}


if triton is not None:

    @triton.jit
    def _slope(shifted, slope, ARCTAN: tl.constexpr):
        """d spike / d u at u − threshold = ``shifted``, as fastslow.spiking.surrogate computes it."""
        if ARCTAN:
            scaled = shifted * (slope * 1.5707963267948966)
            return (1.0 / (scaled * scaled + 1.0)) * (slope / 2.0)
        scaled = tl.abs(shifted) * slope + 1.0
        return 1.0 / (scaled * scaled)

    @triton.jit
    def _advance(v, current, beta, threshold, RESET_ZERO: tl.constexpr):
        """One LIF step: (pre-reset potential u, spike in {0, 1}, potential after the reset)."""
        u = v * beta + current  # contraction is off at launch: β·v rounds first, as in lif_step
        spike = (u > threshold).to(tl.float32)
        if RESET_ZERO:
            after = u - u * spike
        else:
            after = u - spike * threshold
        return u, spike, after

    @triton.jit
    def _retreat(u, grad_spike, grad_v, beta, threshold, slope, use_grad_v, RESET_ZERO: tl.constexpr, ARCTAN: tl.constexpr):
        """One step of the LIF backward: (gradient w.r.t. u, gradient w.r.t. the previous step's potential)."""
        shifted = u - threshold
        derivative = _slope(shifted, slope, ARCTAN)
        if RESET_ZERO:  # d after / d u = (1 − spike) − u·slope
            keep = (shifted <= 0.0).to(tl.float32) - u * derivative
        else:  # d after / d u = 1 − threshold·slope
            keep = 1.0 - derivative * threshold
        grad_u = grad_spike * derivative + tl.where(use_grad_v, keep * grad_v, 0.0)
        return grad_u, grad_u * beta

    @triton.jit
    def _lif_forward_kernel(
        currents,
        current_stride,
        v0,
        spikes,
        potentials,
        v_last,
        counts,
        neurons,
        per_input,
        batch,
        beta,
        threshold,
        STEPS: tl.constexpr,
        RESET_ZERO: tl.constexpr,
        RECORD: tl.constexpr,
        HAS_V0: tl.constexpr,
        COUNT: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        # Program (j, b): neurons j·BLOCK … of input b, so that a program's spikes belong to one input (its count).
        within = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = within < per_input
        offsets = tl.program_id(1) * per_input + within
        if HAS_V0:
            v = tl.load(v0 + offsets, mask=mask, other=0.0)
        else:  # from rest: no zero state to write and read
            v = tl.zeros([BLOCK], dtype=tl.float32)
        current_at, spike_at, potential_at = currents + offsets, spikes + offsets, potentials + offsets
        count_at = counts + tl.program_id(1)
        for _ in range(STEPS):
            u, spike, v = _advance(v, tl.load(current_at, mask=mask, other=0.0), beta, threshold, RESET_ZERO)
            tl.store(spike_at, spike, mask=mask)
            if RECORD:
                tl.store(potential_at, u, mask=mask)
            if COUNT:  # whole numbers below 2^24: exact in float32 in any order of addition
                tl.atomic_add(count_at, tl.sum(tl.where(mask, spike, 0.0), axis=0))
                count_at += batch
            current_at += current_stride
            spike_at += neurons
            potential_at += neurons
        tl.store(v_last + offsets, v, mask=mask)

    @triton.jit
    def _lif_backward_kernel(
        potentials,
        grad_spikes,
        grad_v_last,
        grad_u,
        grad_v0,
        neurons,
        beta,
        threshold,
        slope,
        STEPS: tl.constexpr,
        HAS_GRAD_V_LAST: tl.constexpr,
        FIRST_WITH_GRAD_V: tl.constexpr,
        RESET_ZERO: tl.constexpr,
        ARCTAN: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offsets < neurons
        if HAS_GRAD_V_LAST:
            grad_v = tl.load(grad_v_last + offsets, mask=mask, other=0.0)
        else:
            grad_v = tl.zeros([BLOCK], dtype=tl.float32)
        last = (STEPS - 1) * neurons
        u_at, grad_spike_at, grad_u_at = potentials + last + offsets, grad_spikes + last + offsets, grad_u + last + offsets
        for reverse in range(STEPS):
            u = tl.load(u_at, mask=mask, other=0.0)
            grad_spike = tl.load(grad_spike_at, mask=mask, other=0.0)
            grad, grad_v = _retreat(
                u, grad_spike, grad_v, beta, threshold, slope, reverse >= FIRST_WITH_GRAD_V, RESET_ZERO, ARCTAN
            )
            tl.store(grad_u_at, grad, mask=mask)  # may overwrite u_at: this program alone reads it
            u_at -= neurons
            grad_spike_at -= neurons
            grad_u_at -= neurons
        tl.store(grad_v0 + offsets, grad_v, mask=mask)

    @triton.jit
    def _windows(height, width, channels, BLOCK: tl.constexpr):
        """This program's 2×2 windows of image ``program_id(0)`` (channels-last [H, W, C]; the last row
        or column of windows is cut short where H or W is odd): the four neurons' offsets and masks,
        whether the window is whole (only whole ones are pooled), the pooled element's offset and its
        position in its pooled map (row-major)."""
        image = tl.program_id(0)
        window_rows, window_cols = (height + 1) // 2, (width + 1) // 2
        index = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        inside = index < window_rows * window_cols * channels
        channel = index % channels
        col = (index // channels) % window_cols
        row = index // (channels * window_cols)
        top_left = ((image * height + 2 * row) * width + 2 * col) * channels + channel
        has_right = inside & (2 * col + 1 < width)
        has_below = inside & (2 * row + 1 < height)
        whole = has_right & has_below
        position = row * (width // 2) + col
        pooled_at = (image * (height // 2) * (width // 2) + position) * channels + channel
        return (
            top_left,
            top_left + channels,
            top_left + width * channels,
            top_left + (width + 1) * channels,
            inside,
            has_right,
            has_below,
            whole,
            pooled_at,
            position,
        )

    @triton.jit
    def _lif_pool_forward_kernel(
        currents,
        current_stride,
        v0,
        pooled,
        counts,
        potentials,
        v_last,
        fanout,
        fanned,
        height,
        width,
        channels,
        batch,
        beta,
        threshold,
        STEPS: tl.constexpr,
        RESET_ZERO: tl.constexpr,
        RECORD: tl.constexpr,
        HAS_V0: tl.constexpr,
        FAN: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        at00, at01, at10, at11, in00, in01, in10, whole, pooled_at, position = _windows(height, width, channels, BLOCK)
        neurons = batch * height * width * channels
        pooled_step = batch * (height // 2) * (width // 2) * channels
        if HAS_V0:
            v00 = tl.load(v0 + at00, mask=in00, other=0.0)
            v01 = tl.load(v0 + at01, mask=in01, other=0.0)
            v10 = tl.load(v0 + at10, mask=in10, other=0.0)
            v11 = tl.load(v0 + at11, mask=whole, other=0.0)
        else:  # from rest
            v00 = tl.zeros([BLOCK], dtype=tl.float32)
            v01 = tl.zeros([BLOCK], dtype=tl.float32)
            v10 = tl.zeros([BLOCK], dtype=tl.float32)
            v11 = tl.zeros([BLOCK], dtype=tl.float32)
        count_at, fanned_at = counts + tl.program_id(0), fanned + tl.program_id(0)
        if FAN:
            fan = tl.load(fanout + position, mask=whole, other=0.0)
        for t in range(STEPS):
            current_at, potential_at = currents + t * current_stride, potentials + t * neurons
            u00, s00, v00 = _advance(v00, tl.load(current_at + at00, mask=in00, other=0.0), beta, threshold, RESET_ZERO)
            u01, s01, v01 = _advance(v01, tl.load(current_at + at01, mask=in01, other=0.0), beta, threshold, RESET_ZERO)
            u10, s10, v10 = _advance(v10, tl.load(current_at + at10, mask=in10, other=0.0), beta, threshold, RESET_ZERO)
            u11, s11, v11 = _advance(v11, tl.load(current_at + at11, mask=whole, other=0.0), beta, threshold, RESET_ZERO)
            if RECORD:
                tl.store(potential_at + at00, u00, mask=in00)
                tl.store(potential_at + at01, u01, mask=in01)
                tl.store(potential_at + at10, u10, mask=in10)
                tl.store(potential_at + at11, u11, mask=whole)
            window = tl.maximum(tl.maximum(s00, s01), tl.maximum(s10, s11))
            tl.store(pooled + t * pooled_step + pooled_at, window, mask=whole)
            fired = tl.where(in00, s00, 0.0) + tl.where(in01, s01, 0.0) + tl.where(in10, s10, 0.0) + tl.where(whole, s11, 0.0)
            # Sums of spikes (and of whole fan-outs) are whole numbers: exact in float32 in any order of
            # addition below 2^24.
            tl.atomic_add(count_at, tl.sum(fired, axis=0))
            count_at += batch
            if FAN:  # the synaptic ops these pooled spikes cause in the next layer
                tl.atomic_add(fanned_at, tl.sum(tl.where(whole, window * fan, 0.0), axis=0))
                fanned_at += batch
        tl.store(v_last + at00, v00, mask=in00)
        tl.store(v_last + at01, v01, mask=in01)
        tl.store(v_last + at10, v10, mask=in10)
        tl.store(v_last + at11, v11, mask=whole)

    @triton.jit
    def _lif_pool_backward_kernel(
        potentials,
        grad_pooled,
        grad_v_last,
        grad_u,
        grad_v0,
        height,
        width,
        channels,
        batch,
        beta,
        threshold,
        slope,
        STEPS: tl.constexpr,
        HAS_GRAD_V_LAST: tl.constexpr,
        FIRST_WITH_GRAD_V: tl.constexpr,
        RESET_ZERO: tl.constexpr,
        ARCTAN: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        at00, at01, at10, at11, in00, in01, in10, whole, pooled_at, position = _windows(height, width, channels, BLOCK)
        neurons = batch * height * width * channels
        pooled_step = batch * (height // 2) * (width // 2) * channels
        if HAS_GRAD_V_LAST:
            g00 = tl.load(grad_v_last + at00, mask=in00, other=0.0)
            g01 = tl.load(grad_v_last + at01, mask=in01, other=0.0)
            g10 = tl.load(grad_v_last + at10, mask=in10, other=0.0)
            g11 = tl.load(grad_v_last + at11, mask=whole, other=0.0)
        else:
            g00 = tl.zeros([BLOCK], dtype=tl.float32)
            g01 = tl.zeros([BLOCK], dtype=tl.float32)
            g10 = tl.zeros([BLOCK], dtype=tl.float32)
            g11 = tl.zeros([BLOCK], dtype=tl.float32)
        for reverse in range(STEPS):
            t = STEPS - 1 - reverse
            use_grad_v = reverse >= FIRST_WITH_GRAD_V
            u_at, grad_at = potentials + t * neurons, grad_u + t * neurons
            u00 = tl.load(u_at + at00, mask=in00, other=0.0)
            u01 = tl.load(u_at + at01, mask=in01, other=0.0)
            u10 = tl.load(u_at + at10, mask=in10, other=0.0)
            u11 = tl.load(u_at + at11, mask=whole, other=0.0)
            f00, f01, f10, f11 = u00 > threshold, u01 > threshold, u10 > threshold, u11 > threshold
            # max_pool2d routes a window's gradient to its first maximum in row-major order: the first
            # neuron that fired, or the top-left one when none did. Cut-short windows are not pooled.
            grad = tl.load(grad_pooled + t * pooled_step + pooled_at, mask=whole, other=0.0)
            none_before_11 = ~(f00 | f01 | f10)
            gs00 = tl.where(f00 | (none_before_11 & ~f11), grad, 0.0)
            gs01 = tl.where(f01 & ~f00, grad, 0.0)
            gs10 = tl.where(f10 & ~(f00 | f01), grad, 0.0)
            gs11 = tl.where(f11 & none_before_11, grad, 0.0)
            d00, g00 = _retreat(u00, gs00, g00, beta, threshold, slope, use_grad_v, RESET_ZERO, ARCTAN)
            d01, g01 = _retreat(u01, gs01, g01, beta, threshold, slope, use_grad_v, RESET_ZERO, ARCTAN)
            d10, g10 = _retreat(u10, gs10, g10, beta, threshold, slope, use_grad_v, RESET_ZERO, ARCTAN)
            d11, g11 = _retreat(u11, gs11, g11, beta, threshold, slope, use_grad_v, RESET_ZERO, ARCTAN)
            # May overwrite the potentials: each neuron's are read by the program that owns its window alone.
            tl.store(grad_at + at00, d00, mask=in00)
            tl.store(grad_at + at01, d01, mask=in01)
            tl.store(grad_at + at10, d10, mask=in10)
            tl.store(grad_at + at11, d11, mask=whole)
        tl.store(grad_v0 + at00, g00, mask=in00)
        tl.store(grad_v0 + at01, g01, mask=in01)
        tl.store(grad_v0 + at10, g10, mask=in10)
        tl.store(grad_v0 + at11, g11, mask=whole)


def cuda_kernels_available() -> bool:
    """Whether Triton is importable (which backend runs is chosen in :mod:`fastslow.spiking.backends`)."""
    return triton is not None


def interpreted() -> bool:
    """Whether Triton's interpreter is on (``TRITON_INTERPRET=1``, read when Triton defines the kernels):
    then the kernels also run CPU tensors, when the "triton" backend is asked for by name (tests)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _per_step(currents: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``currents`` [T, ...] as a tensor whose steps are contiguous, and its stride between steps:
    a constant current expanded over T (stride 0) is read in place, any other is made contiguous."""
    if currents.stride(0) == 0 and currents[0].is_contiguous():
        return currents, 0
    currents = currents.contiguous()
    return currents, currents[0].numel()


def _launch_options() -> dict:
    # No fused multiply-add for β·v + current: the torch path rounds the product first.
    return {} if os.environ.get("TRITON_INTERPRET", "0") == "1" else {"enable_fp_fusion": False}


def _backward_flags(grad_v_last: torch.Tensor | None, reset_zero: bool, surrogate: str) -> dict:
    """The backward kernels' compile-time switches."""
    if surrogate not in _SURROGATE_CODES:
        raise ValueError(f"unknown surrogate {surrogate!r}: use one of {sorted(_SURROGATE_CODES)}")
    has_grad_v_last = grad_v_last is not None
    return {
        "HAS_GRAD_V_LAST": has_grad_v_last,
        "FIRST_WITH_GRAD_V": 0 if has_grad_v_last else 1,
        "RESET_ZERO": reset_zero,
        "ARCTAN": _SURROGATE_CODES[surrogate] == 1,
    }


def lif_forward(
    currents: torch.Tensor,
    v0: torch.Tensor | None,
    beta: float,
    threshold: float,
    reset_zero: bool,
    record: bool,
    counts: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The LIF over ``currents`` [T, B, ...] from ``v0`` [B, ...] (None: at rest): (spikes [T, B, ...],
    v after step T, and the pre-reset potentials [T, B, ...] if ``record``). ``counts`` [T, B]
    (contiguous float32): each input's spike count per step is added into it."""
    currents, stride = _per_step(currents)
    steps = currents.shape[0]
    spikes = torch.empty(currents.shape, dtype=currents.dtype, device=currents.device)
    potentials = torch.empty_like(spikes) if record else spikes  # unread without RECORD
    v_last = torch.empty_like(spikes[0])
    neurons = v_last.numel()
    # Without counts the neurons are one run of blocks; with, a row of blocks per input (grid rows ≤ 65535).
    batch = 1 if counts is None or neurons == 0 else currents.shape[1]
    if batch > _MAX_GRID_ROWS:
        spikes, v_last, potentials = lif_forward(currents, v0, beta, threshold, reset_zero, record)
        counts.add_(spikes.flatten(2).sum(2))
        return spikes, v_last, potentials
    if neurons:
        per_input = neurons // batch
        _lif_forward_kernel[(triton.cdiv(per_input, _BLOCK), batch)](
            currents,
            stride,
            v_last if v0 is None else v0.contiguous(),
            spikes,
            potentials,
            v_last,
            spikes if counts is None else counts,
            neurons,
            per_input,
            batch,
            float(beta),
            float(threshold),
            STEPS=steps,
            RESET_ZERO=reset_zero,
            RECORD=record,
            HAS_V0=v0 is not None,
            COUNT=counts is not None,
            BLOCK=_BLOCK,
            **_launch_options(),
        )
    return spikes, v_last, potentials if record else None


def lif_backward(
    potentials: torch.Tensor,
    grad_spikes: torch.Tensor,
    grad_v_last: torch.Tensor | None,
    beta: float,
    threshold: float,
    reset_zero: bool,
    surrogate: str,
    slope: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients w.r.t. the currents [T, ...] (written over ``potentials``) and w.r.t. v0."""
    steps = potentials.shape[0]
    neurons = potentials[0].numel()
    grad_spikes = grad_spikes.contiguous()
    grad_v_last = None if grad_v_last is None else grad_v_last.contiguous()
    grad_v0 = torch.empty_like(potentials[0])
    if neurons:
        _lif_backward_kernel[(triton.cdiv(neurons, _BLOCK),)](
            potentials,
            grad_spikes,
            grad_v0 if grad_v_last is None else grad_v_last,
            potentials,
            grad_v0,
            neurons,
            float(beta),
            float(threshold),
            float(slope),
            STEPS=steps,
            **_backward_flags(grad_v_last, reset_zero, surrogate),
            BLOCK=_BLOCK,
            **_launch_options(),
        )
    return potentials, grad_v0


def _pool_grid(shape: torch.Size) -> tuple[int, int]:
    batch, height, width, channels = shape
    return batch, triton.cdiv(((height + 1) // 2) * ((width + 1) // 2) * channels, _POOL_BLOCK)


def lif_pool_forward(
    currents: torch.Tensor,
    v0: torch.Tensor | None,
    beta: float,
    threshold: float,
    reset_zero: bool,
    record: bool,
    counts: torch.Tensor | None = None,
    next_synaptic_ops: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The LIF over channels-last ``currents`` [T, B, H, W, C] from ``v0`` [B, H, W, C] (None: at
    rest), then 2×2 max-pooling: (pooled spikes [T, B, H//2, W//2, C], spike count per map [T, B]
    (added into ``counts`` if given), v after step T, and the pre-reset potentials [T, B, H, W, C] if
    ``record``). ``next_synaptic_ops`` (fan-out per pooled position [H//2 · W//2], out [T, B]): also
    add Σ fan-out × pooled spike into out."""
    currents, stride = _per_step(currents)
    steps, batch, height, width, channels = currents.shape
    pooled = currents.new_empty(steps, batch, height // 2, width // 2, channels)
    counts = currents.new_zeros(steps, batch) if counts is None else counts
    potentials = currents.new_empty(steps, batch, height, width, channels) if record else pooled  # unread without RECORD
    v_last = currents.new_empty(batch, height, width, channels)
    fanout, fanned = (counts, counts) if next_synaptic_ops is None else next_synaptic_ops  # unread without FAN
    if v_last.numel():
        _lif_pool_forward_kernel[_pool_grid(v_last.shape)](
            currents,
            stride,
            v_last if v0 is None else v0.contiguous(),
            pooled,
            counts,
            potentials,
            v_last,
            fanout.to(currents.dtype).contiguous(),
            fanned,
            height,
            width,
            channels,
            batch,
            float(beta),
            float(threshold),
            STEPS=steps,
            RESET_ZERO=reset_zero,
            RECORD=record,
            HAS_V0=v0 is not None,
            FAN=next_synaptic_ops is not None,
            BLOCK=_POOL_BLOCK,
            **_launch_options(),
        )
    return pooled, counts, v_last, potentials if record else None


def lif_pool_backward(
    potentials: torch.Tensor,
    grad_pooled: torch.Tensor,
    grad_v_last: torch.Tensor | None,
    beta: float,
    threshold: float,
    reset_zero: bool,
    surrogate: str,
    slope: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients w.r.t. the currents [T, B, H, W, C] (written over ``potentials``) and w.r.t. v0,
    the pooled spikes' gradient routed as ``max_pool2d`` routes it."""
    steps, batch, height, width, channels = potentials.shape
    grad_pooled = grad_pooled.contiguous()
    grad_v_last = None if grad_v_last is None else grad_v_last.contiguous()
    grad_v0 = torch.empty_like(potentials[0])
    if grad_v0.numel():
        _lif_pool_backward_kernel[_pool_grid(grad_v0.shape)](
            potentials,
            grad_pooled,
            grad_v0 if grad_v_last is None else grad_v_last,
            potentials,
            grad_v0,
            height,
            width,
            channels,
            batch,
            float(beta),
            float(threshold),
            float(slope),
            STEPS=steps,
            **_backward_flags(grad_v_last, reset_zero, surrogate),
            BLOCK=_POOL_BLOCK,
            **_launch_options(),
        )
    return potentials, grad_v0
