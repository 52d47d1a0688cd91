"""Which kernel runs a LIF layer: chosen by name or by a documented rule, never silently.

Backends:

- ``"torch"``: torch's element-wise operators, four per step (seven with 2×2 pooling), slice by
  slice, in place (:mod:`fastslow.spiking.lif`); gradients through one autograd node per layer.
  Any device, any floating dtype. :func:`fastslow.spiking.lif.lif_multistep` is this backend
  without accounting buffers: the reference.
- ``"numba"``: compiled CPU loops (numba, the optional extra ``fastslow[cpu]``), one pass per input
  over all T steps. CPU float32 inference only (no gradients). System 1's event-driven synapses sum
  their events in compiled loops too, and an MLP with membrane readouts runs each chunk of steps as
  one compiled call (:func:`mlp_inference`).
- ``"triton"``: fused CUDA kernels (Triton, which CUDA builds of torch ship): one launch per layer
  for all T steps, forward and backward. CUDA float32, fewer than 2^31 elements per call. CPU
  tensors only in Triton's interpreter (``TRITON_INTERPRET=1``, set before Triton is imported: for
  tests), and only when asked for by name.

``"auto"`` (the default) picks, per call: ``"triton"`` for CUDA float32 tensors where Triton is
installed (and the call has fewer than 2^31 elements), ``"numba"`` for CPU float32 tensors without
gradients where numba is installed, ``"torch"`` otherwise (another dtype, e.g. under autocast, or a
missing extra). Every backend gives the torch backend's spikes, counts and potentials bit for bit and
its gradients up to float rounding (tests check). A backend asked for by name that cannot run a call
raises ValueError naming the ones that can: nothing falls back to another.

System 1 takes the choice from ``System1Spec.backend`` (the ``[system1] backend`` config key) or its
``requested_backend`` attribute, and says which one runs (``System1.backend``). No environment
variable switches kernels.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch

from fastslow.spiking import _cpu_kernels, _cuda_kernels
from fastslow.spiking.lif import (
    LIFParams,
    LIFState,
    _add_counts,
    _check_state,
    _FusedLIF,
    _FusedLIFPool,
    _lif_forward,
    _lif_pool_forward,
    _pooled_records,
    check_params,
)

Backend = Literal["torch", "numba", "triton"]
BackendChoice = Literal["auto", "torch", "numba", "triton"]
BACKENDS: tuple[Backend, ...] = get_args(Backend)
BACKEND_CHOICES: tuple[BackendChoice, ...] = get_args(BackendChoice)
# The Triton kernels address elements with 32-bit offsets.
TRITON_MAX_ELEMENTS = 2**31


def check_backend_choice(choice: str) -> None:
    """Raise ValueError unless ``choice`` names a backend or "auto"."""
    if choice not in BACKEND_CHOICES:
        raise ValueError(f"unknown backend {choice!r}: use one of {', '.join(map(repr, BACKEND_CHOICES))}")


def unavailable_reason(
    backend: Backend, device: torch.device | str, dtype: torch.dtype, requires_grad: bool, numel: int = 0
) -> str | None:
    """Why ``backend`` cannot run a call on ``device`` with tensors of ``dtype`` (``numel`` elements;
    ``requires_grad``: a gradient is needed), or None if it can."""
    device = torch.device(device)
    if backend == "torch":
        return None
    if backend == "numba":
        if not _cpu_kernels.cpu_kernels_available():
            return "numba is not installed (pip install 'fastslow[cpu]')"
        if device.type != "cpu":
            return f"it runs CPU tensors, not {device.type} ones"
        if dtype != torch.float32:
            return f"it runs float32 tensors, not {dtype}"
        if requires_grad:
            return "it runs inference only (no gradients)"
        return None
    if backend == "triton":
        if not _cuda_kernels.cuda_kernels_available():
            return "Triton is not installed (CUDA builds of torch ship it)"
        if device.type != "cuda" and not (device.type == "cpu" and _cuda_kernels.interpreted()):
            return f"it runs CUDA tensors (CPU ones only in Triton's interpreter, TRITON_INTERPRET=1), not {device.type} ones"
        if dtype != torch.float32:
            return f"it runs float32 tensors, not {dtype}"
        if numel >= TRITON_MAX_ELEMENTS:
            return f"it runs calls of fewer than 2^31 elements (32-bit offsets), not {numel}"
        return None
    check_backend_choice(backend)
    raise ValueError(f"'auto' is a choice, not a backend: use one of {BACKENDS}")


def available_backends(
    device: torch.device | str, dtype: torch.dtype = torch.float32, requires_grad: bool = False, numel: int = 0
) -> list[Backend]:
    """The backends that can run such a call (see :func:`unavailable_reason`), "torch" always among them."""
    return [name for name in BACKENDS if unavailable_reason(name, device, dtype, requires_grad, numel) is None]


def select_backend(
    device: torch.device | str, dtype: torch.dtype, requires_grad: bool, override: BackendChoice = "auto", numel: int = 0
) -> Backend:
    """The backend that runs a LIF call on ``device`` with ``dtype`` tensors of ``numel`` elements
    (``requires_grad``: a gradient is needed): ``override`` itself, or for "auto" the module's rule
    (triton for CUDA float32, numba for CPU float32 inference, where installed; torch otherwise).
    Raises ValueError, naming the backends that can run the call, where ``override`` cannot."""
    if override == "auto":
        device = torch.device(device)
        if device.type == "cuda" and unavailable_reason("triton", device, dtype, requires_grad, numel) is None:
            return "triton"
        if device.type == "cpu" and unavailable_reason("numba", device, dtype, requires_grad, numel) is None:
            return "numba"
        return "torch"
    check_backend_choice(override)
    reason = unavailable_reason(override, device, dtype, requires_grad, numel)
    if reason is not None:
        usable = available_backends(device, dtype, requires_grad, numel)
        raise ValueError(
            f"backend {override!r} cannot run this call: {reason}. Available here: "
            f"{', '.join(map(repr, usable))} (or 'auto', which picks among them)"
        )
    return override


# -- System 1's entry points: a layer's LIF over all steps, with its accounting buffers --------------


def _check_count_buffer(name: str, buffer: torch.Tensor | None, currents: torch.Tensor, batch: int) -> None:
    """A buffer that per-step, per-input sums are added into: contiguous [T, B], no gradient, and float32
    for float32 or narrower currents (float64 for float64 ones: counts stay exact)."""
    if buffer is None:
        return
    dtype = torch.promote_types(currents.dtype, torch.float32)
    if (
        tuple(buffer.shape) != (currents.shape[0], batch)
        or not buffer.is_contiguous()
        or buffer.dtype != dtype
        or buffer.requires_grad
    ):
        raise ValueError(
            f"{name} must be a contiguous {dtype} [T, B] = {[currents.shape[0], batch]} without gradient, "
            f"got {list(buffer.shape)} {buffer.dtype}"
        )


def _advanced_rows(currents: torch.Tensor, state: LIFState | None, rows: torch.Tensor | None) -> int:
    """How many inputs a call advances: ``rows`` of ``state`` (None: every input of ``currents``)."""
    if rows is None:
        if state is not None:
            _check_state(state.v.shape, currents.shape[1:])
        return currents.shape[1]
    # Compiled kernels write the state through numpy, which autograd's version counter never sees.
    if state is None or state.v.requires_grad or torch.is_grad_enabled() and currents.requires_grad:
        raise ValueError("rows advance a given state in place, in inference only (a state without gradient)")
    if rows.dtype not in (torch.int64, torch.int32) or rows.dim() != 1 or len(rows) == 0:
        raise ValueError(
            f"rows must be a non-empty 1-D tensor of distinct integer positions, got {rows.dtype} {list(rows.shape)}"
        )
    # The compiled kernels check no bounds: a row outside the state would be written past its end.
    lowest, highest = torch.aminmax(rows)
    if int(lowest) < 0 or int(highest) >= state.v.shape[0]:
        raise ValueError(f"rows must be positions among the state's {state.v.shape[0]} inputs")
    _check_state(state.v.shape[1:], currents.shape[2:])
    return len(rows)


def _gathered(currents: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """The currents of ``rows``: a constant current (stride 0 in T) holds every row of the state
    (gathered once, still constant over T)."""
    if currents.stride(0) != 0:
        return currents
    rows_only = currents[0].index_select(0, rows)
    return rows_only.as_strided((currents.shape[0], *rows_only.shape), (0, *rows_only.stride()))


def _needs_grad(currents: torch.Tensor, v0: torch.Tensor | None) -> bool:
    return torch.is_grad_enabled() and (currents.requires_grad or v0 is not None and v0.requires_grad)


def _kernel_dtype(currents: torch.Tensor, v0: torch.Tensor | None) -> torch.dtype:
    """The dtype that decides the backend: the currents', or where the state's differs, whichever is
    not float32 (the compiled kernels take float32 currents and state only)."""
    if v0 is None or v0.dtype == currents.dtype:
        return currents.dtype
    return v0.dtype if currents.dtype == torch.float32 else currents.dtype


def _per_input(currents: torch.Tensor) -> torch.Tensor:
    """Currents [T, B, ...] as [T, B, N] for the compiled flat kernel: a view where it can be, and a
    constant current (stride 0 in T, which the kernel reads once) stays constant."""
    if currents.dim() == 3:
        return currents
    steps, batch = currents.shape[:2]
    neurons = math.prod(currents.shape[2:])
    if currents.stride(0) == 0:
        step = currents[0].reshape(batch, neurons)
        return step.as_strided((steps, batch, neurons), (0, *step.stride()))
    return currents.reshape(steps, batch, neurons)


def fused_lif_multistep(
    currents: torch.Tensor,
    state: LIFState | None,
    params: LIFParams,
    *,
    backend: BackendChoice = "auto",
    final_state: bool = True,
    counts: torch.Tensor | None = None,
    rows: torch.Tensor | None = None,
) -> tuple[torch.Tensor, LIFState | None]:
    """:func:`fastslow.spiking.lif.lif_multistep` on ``backend`` (see :func:`select_backend`), with
    System 1's accounting: the same spikes and state (bit for bit on every backend).

    ``currents`` [T, B, ...]; ``state`` None starts from rest; ``final_state=False`` returns None for
    the state after step T (the compiled loops then never write it). ``counts`` [T, B] (contiguous,
    float32, or float64 for float64 currents; no gradient): each input's spike count per step is
    added into it, by the LIF kernels themselves where they run (a firing rate is the count over the
    neurons per input).
    ``rows`` [n] (inference; distinct positions): advance only those inputs of ``state``, updating it
    in place and returning it whatever ``final_state``; ``currents`` and the outputs hold the n
    inputs in order, except a constant current expanded over T (stride 0 in T), which holds all of
    the state's."""
    check_params(params)
    batch = _advanced_rows(currents, state, rows)
    _check_count_buffer("counts", counts, currents, batch)
    v0 = None if state is None else state.v  # None: the kernels start from rest without a zero state
    needs_grad = _needs_grad(currents, v0)
    chosen = select_backend(currents.device, _kernel_dtype(currents, v0), needs_grad, backend, currents.numel())
    if chosen == "numba":  # one compiled pass per input over all steps instead of four kernels per step
        if rows is not None and not v0.is_contiguous():
            raise ValueError("advancing rows in place needs the state, contiguous")
        flat_v0 = None if v0 is None else v0.view(v0.shape[0], -1) if rows is not None else v0.reshape(v0.shape[0], -1)
        spikes, v = _cpu_kernels.lif_inference(
            _per_input(currents),
            flat_v0,
            params.beta,
            params.threshold,
            params.reset == "zero",
            keep_state=final_state,
            counts=counts,
            rows=rows,
        )
        spikes = spikes.view(currents.shape[0], batch, *currents.shape[2:])
        if rows is not None:
            return spikes, state
        return spikes, None if v is None else LIFState(v=v.view(batch, *currents.shape[2:]))
    if rows is not None:
        spikes, advanced = fused_lif_multistep(
            _gathered(currents, rows), LIFState(v0[rows]), params, backend=chosen, counts=counts
        )
        v0.index_copy_(0, rows, advanced.v)
        return spikes, state
    if needs_grad:
        spikes, v = _FusedLIF.apply(currents, v0, params, counts, chosen == "triton")
    elif chosen == "triton":
        spikes, v, _ = _cuda_kernels.lif_forward(
            currents, v0, params.beta, params.threshold, params.reset == "zero", record=False, counts=counts
        )
    else:
        spikes, v = _lif_forward(currents, v0, params, None)
        _add_counts(spikes, counts)
    return spikes, LIFState(v=v) if final_state else None


def fused_lif_multistep_pooled(
    currents: torch.Tensor,
    state: LIFState | None,
    params: LIFParams,
    *,
    backend: BackendChoice = "auto",
    final_state: bool = True,
    counts: torch.Tensor | None = None,
    next_synaptic_ops: tuple[torch.Tensor, torch.Tensor] | None = None,
    rows: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, LIFState | None]:
    """:func:`fused_lif_multistep` over channels-last maps ``currents`` [T, B, H, W, C], then 2×2
    max-pooling of the spikes (odd edges dropped, as ``max_pool2d``), on ``backend``. Returns the
    pooled spikes [T, B, H//2, W//2, C], the spike count of each map [T, B] (no gradient; added into
    ``counts`` if given, which it then holds) and the state after step T (``state`` None: from rest;
    ``final_state=False`` returns None instead, which spares compiled CPU inference writing it).
    ``next_synaptic_ops`` (fan-out of each pooled position [H//2 · W//2], the same for every channel:
    synapse counts, whole numbers, which the compiled kernels sum in any order; out [T, B]): also add
    into out the synaptic operations the pooled spikes cause in the next layer, Σ fan-out × spike (no
    gradient; the compiled kernels sum them while the spikes are in cache). ``counts`` and out:
    contiguous, float32 (float64 for float64 currents). ``rows``: as :func:`fused_lif_multistep` (the
    state updated in place).

    Same spikes as the unpooled path, and gradients equal to ``max_pool2d``'s up to float rounding
    (for finite gradients: an infinite one spreads as NaN over its window), but no full-size spike
    map reaches memory: a few images at a time, each step's spikes land in a small reused buffer (in
    cache), where they are counted and pooled; writing and re-reading full-size float maps (and
    pooling indices) is what the unfused path spends most on."""
    check_params(params)
    if currents.dim() != 5 or min(currents.shape[:2]) == 0:
        raise ValueError(f"fused_lif_multistep_pooled expects currents [T, B, H, W, C] with T, B ≥ 1, got {list(currents.shape)}")
    batch = _advanced_rows(currents, state, rows)
    _check_count_buffer("counts", counts, currents, batch)
    _check_count_buffer("next_synaptic_ops' out", None if next_synaptic_ops is None else next_synaptic_ops[1], currents, batch)
    positions = (currents.shape[2] // 2) * (currents.shape[3] // 2)
    if next_synaptic_ops is not None and tuple(next_synaptic_ops[0].shape) != (positions,):
        # the compiled kernels read it unchecked, one entry per pooled position
        raise ValueError(
            f"next_synaptic_ops' fan-out must hold one entry per pooled position, [{positions}], "
            f"got {list(next_synaptic_ops[0].shape)}"
        )
    v0 = None if state is None else state.v
    needs_grad = _needs_grad(currents, v0)
    chosen = select_backend(currents.device, _kernel_dtype(currents, v0), needs_grad, backend, currents.numel())
    if chosen == "numba":  # one compiled loop per neuron instead of seven passes
        next_fanout, next_ops = (None, None) if next_synaptic_ops is None else next_synaptic_ops
        pooled, counts, v = _cpu_kernels.lif_pool_inference(
            currents,
            v0,
            params.beta,
            params.threshold,
            params.reset == "zero",
            keep_state=final_state,
            next_fanout=next_fanout,
            next_ops=next_ops,
            rows=rows,
            counts=counts,
        )
        return pooled, counts, None if v is None else LIFState(v=v)
    if rows is not None:
        pooled, counts, advanced = fused_lif_multistep_pooled(
            _gathered(currents, rows),
            LIFState(v0[rows]),
            params,
            backend=chosen,
            counts=counts,
            next_synaptic_ops=next_synaptic_ops,
        )
        v0.index_copy_(0, rows, advanced.v)
        return pooled, counts, state
    # v0 None: the kernels start from rest without a zero state
    if needs_grad:
        pooled, counts, v = _FusedLIFPool.apply(currents, v0, params, counts, next_synaptic_ops, chosen == "triton")
    elif chosen == "triton":  # one launch for all steps
        pooled, counts, v, _ = _cuda_kernels.lif_pool_forward(
            currents,
            v0,
            params.beta,
            params.threshold,
            params.reset == "zero",
            record=False,
            counts=counts,
            next_synaptic_ops=next_synaptic_ops,
        )
    else:  # nothing to record for a backward pass: the potential runs in place
        pooled, map_counts, v = _lif_pool_forward(currents, v0, params, None)
        counts = _pooled_records(pooled, map_counts, counts, next_synaptic_ops)
    return pooled, counts, LIFState(v=v) if final_state else None


# -- the numba backend's whole-network kernels (a spiking MLP in one compiled call) -------------------

MLPWeights = _cpu_kernels.MLPWeights
# What mlp_until_confident says of each input: it stopped confident, it reached the last step
# unconfident, or its confidence was too close to the threshold to call in float64.
CONFIDENT, UNCONFIDENT, TOO_CLOSE = _cpu_kernels.CONFIDENT, _cpu_kernels.UNCONFIDENT, _cpu_kernels.TOO_CLOSE


def mlp_weights(
    layers: list[torch.nn.Linear], heads: list[torch.nn.Linear], exit_layers: tuple[int, ...], key: tuple
) -> MLPWeights:
    """A spiking MLP's weights as :func:`mlp_inference` reads them (numpy views), tagged with ``key``
    (the weights' versions and addresses, to tell when to rebuild them)."""
    return _cpu_kernels.mlp_weights(layers, heads, exit_layers, key)


def mlp_inference(
    constant: torch.Tensor | None,
    inputs: torch.Tensor | None,
    weights: MLPWeights,
    states: tuple[torch.Tensor, ...] | None,
    beta: float,
    threshold: float,
    reset_zero: bool,
    records: torch.Tensor,
    keep_state: bool = True,
    rows: torch.Tensor | None = None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
    """A spiking MLP (linear layers → LIF, membrane readouts) over T steps in one compiled call (the
    "numba" backend: CPU float32, no gradients); its arguments and records as
    :func:`fastslow.spiking._cpu_kernels.mlp_inference` documents them."""
    return _cpu_kernels.mlp_inference(
        constant, inputs, weights, states, beta, threshold, reset_zero, records, keep_state=keep_state, rows=rows
    )


def mlp_until_confident(
    constant: torch.Tensor,
    weights: MLPWeights,
    states: tuple[torch.Tensor, ...],
    rows: torch.Tensor,
    starts: torch.Tensor,
    steps: int,
    beta: float,
    threshold: float,
    reset_zero: bool,
    confidence_threshold: float,
    temperature: float,
    margin: float,
    sums: torch.Tensor,
    charges: torch.Tensor,
    answers: torch.Tensor,
    stopped_at: torch.Tensor,
    status: torch.Tensor,
) -> None:
    """SEENN-I over a spiking MLP, each input stepped until it is confident, in one compiled call (the
    "numba" backend); its arguments and outputs as :func:`fastslow.spiking._cpu_kernels.mlp_until_confident`
    documents them (``status`` holds :data:`CONFIDENT`, :data:`UNCONFIDENT` or :data:`TOO_CLOSE`)."""
    _cpu_kernels.mlp_until_confident(
        constant,
        weights,
        states,
        rows,
        starts,
        steps,
        beta,
        threshold,
        reset_zero,
        confidence_threshold,
        temperature,
        margin,
        sums,
        charges,
        answers,
        stopped_at,
        status,
    )
