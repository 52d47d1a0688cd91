"""Synapses: a linear layer driven by spike events (it only touches the weights of inputs that
fired), and convolutions whose currents come channels-last in memory, as the LIF reads them.

A spiking layer's input is mostly zeros. On CPU, summing the weight rows of an input's active
synapses (``F.embedding_bag``: one accumulate per event and fan-out, as neuromorphic hardware does)
beats a dense matmul once fewer than about one input in ten is active; above that, or on a GPU,
the dense matmul wins. :func:`spike_linear` chooses per input row, so whether a row is summed
over its events never depends on which other inputs share its batch, and a sparse row's result is
the same bits in a multi-step call, T single-step calls or a batch that shrinks as inputs stop
early. A dense row is a BLAS matmul's, as ``nn.Linear``'s, whose rounding may depend on the
number of rows (differences of the order of 1e-7).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fastslow.spiking import _cpu_kernels
from fastslow.spiking.backends import BackendChoice, select_backend

EVENT_DENSITY = 0.1  # largest share of non-zero inputs in a row for which the event path is used
# Finding the events costs a pass over the input whatever the layer's width; it pays only when
# each event fans out to many neurons (measured on a 2-core CPU with embedding_bag: a 10-wide
# readout never gains). Inference keeps the same rule so that it gives training's spikes.
MIN_EVENT_FANOUT = 128


def _fanout_rows(layer: nn.Linear) -> torch.Tensor:
    """Wᵀ, one row per input (its fan-out weights), as the event path reads it. Kept on the layer
    and rebuilt when the weight changes, so a step-by-step caller does not copy W every step."""
    weight = layer.weight
    key = (weight._version, weight.data_ptr())
    cached = layer.__dict__.get("_fastslow_fanout_rows")
    if cached is None or cached[0] != key:
        cached = (key, weight.detach().t().contiguous())
        layer.__dict__["_fastslow_fanout_rows"] = cached
    return cached[1]


class _EventLinear(torch.autograd.Function):
    """y = x·Wᵀ + b for x [N, in]: summed over the events (non-zeros) of the rows ``event_rows``
    (None: every row), a dense matmul for the rows ``dense_rows`` (None: none).

    ``fanout_rows`` is Wᵀ; ``rows``/``cols`` are the event rows' non-zeros in row-major order (rows
    numbered in x) and ``offsets`` where each event row's events start. Both parts are written
    into one output, with no autograd node per part, so neither pass copies the whole [N, out].
    Backward: the input gradient is the dense g·W (every input needs one); the weight gradient
    sums, for each input, the output gradients of the event rows where it fired (the same events
    regrouped by input), plus the dense rows' gᵀ·x.
    """

    @staticmethod
    def forward(ctx, inputs, weight, bias, fanout_rows, rows, cols, offsets, event_rows, dense_rows):
        values = inputs[rows, cols]
        events = F.embedding_bag(cols, fanout_rows, offsets, mode="sum", per_sample_weights=values)
        if bias is not None:
            events += bias
        dense_inputs = None
        if dense_rows is None:
            out = events
        else:
            dense_inputs = inputs[dense_rows]
            out = inputs.new_empty(inputs.shape[0], weight.shape[0])
            out.index_copy_(0, event_rows, events)
            out.index_copy_(0, dense_rows, F.linear(dense_inputs, weight, bias))
        ctx.save_for_backward(weight, rows, cols, values, dense_rows, dense_inputs)
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        weight, rows, cols, values, dense_rows, dense_inputs = ctx.saved_tensors
        grad_out = grad_out.contiguous()  # embedding_bag reads it as a table of rows
        grad_inputs = grad_out @ weight if ctx.needs_input_grad[0] else None
        grad_weight = None
        if ctx.needs_input_grad[1]:
            by_input = torch.argsort(cols, stable=True)
            per_input = torch.bincount(cols, minlength=weight.shape[1])
            grad_weight = F.embedding_bag(
                rows[by_input], grad_out, _offsets(per_input), mode="sum", per_sample_weights=values[by_input]
            ).t()
            if dense_rows is not None:
                grad_weight = grad_weight + grad_out[dense_rows].t() @ dense_inputs
        grad_bias = grad_out.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_inputs, grad_weight, grad_bias, None, None, None, None, None, None


def _offsets(counts: torch.Tensor) -> torch.Tensor:
    offsets = torch.zeros_like(counts)
    offsets[1:] = counts.cumsum(0)[:-1]
    return offsets


def spike_linear(
    inputs: torch.Tensor, layer: nn.Linear, event_density: float = EVENT_DENSITY, backend: BackendChoice = "auto"
) -> torch.Tensor:
    """``layer`` applied to ``inputs`` [..., in] → [..., out].

    On CPU, for a layer at least :data:`MIN_EVENT_FANOUT` wide, each row with at most
    ``event_density`` non-zeros (a share) takes the event path and the other rows one dense
    matmul; otherwise (another device, a narrow layer, ``event_density`` 0) all rows are dense.
    The event path is a compiled per-row sum on the "numba" backend (CPU float32 inference) and
    ``embedding_bag`` (an autograd node) on "torch"; ``backend`` chooses as
    :func:`fastslow.spiking.backends.select_backend` does ("auto": numba where it can run). The
    same rows take the event path either way, so both give the same spikes.
    """
    if event_density <= 0 or inputs.device.type != "cpu" or inputs.numel() == 0 or layer.out_features < MIN_EVENT_FANOUT:
        return F.linear(inputs, layer.weight, layer.bias)
    flat = inputs.reshape(-1, inputs.shape[-1])
    max_events = math.floor(event_density * flat.shape[1])  # one integer cutoff for both paths
    parameters = (layer.weight,) if layer.bias is None else (layer.weight, layer.bias)
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (flat, *parameters))
    if select_backend(flat.device, flat.dtype, needs_grad, backend) == "numba":
        # Inference: one compiled pass per row counts its events and sums their fan-out rows (numba;
        # the same order, so the same bits for spikes, as the embedding_bag below).
        out, dense = _cpu_kernels.event_linear_inference(flat.contiguous(), _fanout_rows(layer), layer.bias, max_events)
        dense_rows = np.flatnonzero(dense)
        if len(dense_rows) == len(flat):
            return F.linear(inputs, layer.weight, layer.bias)
        if len(dense_rows):
            dense_rows = torch.from_numpy(dense_rows).long()  # intp is 32-bit on some platforms; index_copy_ takes int64
            out.index_copy_(0, dense_rows, F.linear(flat[dense_rows], layer.weight, layer.bias))
        return out.view(*inputs.shape[:-1], layer.out_features)
    rows, cols = flat.detach().nonzero(as_tuple=True)  # row-major: each row's events in column order
    counts = torch.bincount(rows, minlength=flat.shape[0])
    sparse = counts <= max_events
    n_sparse = int(sparse.sum())
    if n_sparse == 0:
        return F.linear(inputs, layer.weight, layer.bias)
    if n_sparse == flat.shape[0]:
        out = _EventLinear.apply(flat, layer.weight, layer.bias, _fanout_rows(layer), rows, cols, _offsets(counts), None, None)
    else:
        event_rows, dense_rows = sparse.nonzero().squeeze(1), (~sparse).nonzero().squeeze(1)
        keep = sparse[rows]
        out = _EventLinear.apply(
            flat,
            layer.weight,
            layer.bias,
            _fanout_rows(layer),
            rows[keep],
            cols[keep],
            _offsets(counts[event_rows]),
            event_rows,
            dense_rows,
        )
    return out.view(*inputs.shape[:-1], layer.out_features)


def conv_channels_last(maps: torch.Tensor, layer: nn.Conv2d) -> torch.Tensor:
    """``layer`` applied to ``maps`` [N, C, H, W] → [N, C_out, H', W'], channels-last in memory.

    A one-channel input is ambiguous in layout (NCHW and NHWC are the same bytes), so torch runs
    its NCHW convolution, about ten times slower on CPU than the channels-last one, and the result
    would need a copy to channels-last. On CPU it is computed as one matmul of the k×k shifted
    views (im2col) instead, which also gives channels-last output: the convolution's values up to
    float rounding (on the benchmark networks every spike count still equals the peers')."""
    plain = (
        layer.stride == (1, 1)
        and layer.dilation == (1, 1)
        and layer.padding_mode == "zeros"
        and not isinstance(layer.padding, str)
    )
    if layer.in_channels != 1 or maps.device.type != "cpu" or not plain:
        return layer(maps.contiguous(memory_format=torch.channels_last))
    (kh, kw), (ph, pw) = layer.kernel_size, layer.padding
    padded = F.pad(maps[:, 0], (pw, pw, ph, ph))
    height, width = padded.shape[1] - kh + 1, padded.shape[2] - kw + 1
    columns = torch.stack([padded[:, i : i + height, j : j + width] for i in range(kh) for j in range(kw)], dim=-1)
    weight = layer.weight.view(layer.out_channels, kh * kw).t()
    flat = columns.view(-1, kh * kw)
    out = torch.mm(flat, weight) if layer.bias is None else torch.addmm(layer.bias, flat, weight)
    return out.view(maps.shape[0], height, width, layer.out_channels).permute(0, 3, 1, 2)
