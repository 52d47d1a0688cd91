"""Compiled CPU kernels (numba, the optional extra ``fastslow[cpu]``) for inference without gradients.

- LIF: the torch path runs four element-wise kernels per step (seven with 2×2 pooling), each a full
  pass over memory. Here one compiled loop per input does leak, integrate, fire, reset and count
  (and pools a pair of rows at a time), all T steps while its potential stays in cache, vectorised
  over the neurons or channels. Same arithmetic as :func:`fastslow.spiking.lif.lif_step` (β·v
  rounded, then + current; no fused multiply-add), so spikes, counts and potentials are the torch
  path's bits (tests check).
- Event-driven linear synapses: the fan-out rows of each input row's events summed in one pass
  per row (the same order as the autograd path's ``embedding_bag``: the same bits for 0/1 spikes;
  graded inputs may round differently); rows too dense for events are left to the caller's matmul.
- A spiking MLP (linear layers, membrane readouts): every layer, step and readout of a chunk in one
  call, one input per thread with all its layers' potentials and spikes in cache, the records
  written in place (:func:`mlp_inference`); and SEENN-I serving that steps each input until it is
  confident (:func:`mlp_until_confident`). Their event sums take rows of any density, so a row
  that the autograd path would give to a matmul rounds differently (~1e-7).

Compiled on first use (a few seconds) and cached on disk. They run as the "numba" backend
(:mod:`fastslow.spiking.backends` says when, and how to choose another).
"""

from __future__ import annotations

import threading
from functools import lru_cache
from types import SimpleNamespace
from typing import NamedTuple

import numpy as np
import torch

# What mlp_until_confident says of each input: it stopped confident, it reached the last step
# unconfident, or its confidence was too close to the threshold to call in float64 (the compiled
# kernel reads them as constants).
CONFIDENT, UNCONFIDENT, TOO_CLOSE = 1, 2, 3


@lru_cache(maxsize=1)
def _kernel():
    try:
        import numba
    except ImportError:
        return None
    # The kernels find their helpers as module globals, not closure variables: numba keys a kernel's
    # disk cache on a hash of its closure, which differs in every process for a dispatcher (a random
    # id), so every process compiled each kernel afresh (seconds) and added a file to the cache. All
    # of them live in this file, whose change invalidates the cache.
    global lif_span, list_events, sum_events, layer_offsets, load_potentials, store_potentials, mlp_step

    @numba.njit(inline="always", cache=True, nogil=True)
    def lif_span(cells, inputs, spikes, beta, threshold, reset_zero):  # pragma: no cover - compiled
        """One step of the neurons ``cells`` (potentials, updated in place) under ``inputs``, their
        spikes into ``spikes``; returns the spike count. Branch-free, so the loop vectorises.

        The count is a float32 sum of the 0/1 spikes, exact in any order below 2^24 neurons per call:
        the callers compile with fastmath's ``reassoc`` alone, so that this sum vectorises in
        full-width float lanes (an integer count would widen to int64 lanes). The only other chains
        reassociation may regroup are the pooled kernel's float64 sums of these counts and of
        fan-out × pooled spikes, exact in any order for whole-number fan-outs (synapse counts) below
        2^53. The LIF's own arithmetic is no such chain, and contraction (fused multiply-add) stays
        off, so spikes and potentials are the torch path's bits."""
        one, zero = np.float32(1.0), np.float32(0.0)
        count = zero
        for i in range(cells.shape[0]):
            u = cells[i] * beta
            u = u + inputs[i]
            fired = u > threshold
            spike = one if fired else zero
            count += spike
            spikes[i] = spike
            # Both resets are lif_step's products with the 0/1 spike, bit for bit.
            cells[i] = u - u * spike if reset_zero else u - threshold * spike
        return count

    @numba.njit(parallel=True, cache=True, nogil=True, fastmath={"reassoc"})
    def lif_pool(
        currents,
        v_in,
        from_rest,
        beta,
        threshold,
        reset_zero,
        pooled,
        counts,
        v,
        keep_state,
        fanout,
        fanned,
        state_rows,
        currents_by_row,
    ):  # pragma: no cover - compiled
        steps, batch = pooled.shape[:2]
        height, width, channels = currents.shape[2:]
        constant = currents.shape[0] == 1  # one current for every step
        in_place = state_rows.shape[0] > 0  # advance those rows of v_in where they are
        pooled_height, pooled_width = height // 2, width // 2
        row = width * channels
        size = height * row
        zero = np.float32(0.0)
        fan = fanout.shape[0] > 0  # also sum fan-out × pooled spikes (the next layer's synaptic ops)
        # Loops run over contiguous slices with indices from 0, so LLVM vectorises them: offset
        # indices it cannot prove non-negative get wrap-around checks that stop it.
        for b in numba.prange(batch):
            state_row = np.int64(state_rows[b]) if in_place else np.int64(b)  # one integer type (prange's index is unsigned)
            # The image's potentials: in place in v_in, in the output state, or (when nobody reads
            # it) in scratch memory that never leaves the cache; started by the image's own thread.
            if in_place:
                potentials = v_in[state_row].reshape(size)
            else:
                potentials = v[b].reshape(size) if keep_state else np.empty(size, np.float32)
                if from_rest:
                    potentials[:] = np.float32(0.0)
                else:
                    potentials[:] = v_in[b].reshape(size)
            current_row = state_row if currents_by_row else np.int64(b)
            spikes = np.empty(2 * row, np.float32)  # a pair of rows: one pooling window high
            for t in range(steps):
                image_currents = currents[0 if constant else t, current_row].reshape(size)
                image_pooled = pooled[t, b].reshape(pooled_height * pooled_width * channels)
                count = 0
                fanned_ops = 0.0  # float64: integer sums stay exact
                for first_row in range(0, height, 2):
                    rows = min(2, height - first_row)
                    cells = potentials[first_row * row : (first_row + rows) * row]
                    inputs = image_currents[first_row * row : (first_row + rows) * row]
                    count += lif_span(cells, inputs, spikes[: rows * row], beta, threshold, reset_zero)
                    if rows == 2:  # an odd last row or column is simulated but not pooled, as max_pool2d drops it
                        out_row = image_pooled[
                            (first_row // 2) * pooled_width * channels : (first_row // 2 + 1) * pooled_width * channels
                        ]
                        for pw in range(pooled_width):
                            left = 2 * pw * channels
                            top_left, top_right = spikes[left : left + channels], spikes[left + channels : left + 2 * channels]
                            bottom_left = spikes[row + left : row + left + channels]
                            bottom_right = spikes[row + left + channels : row + left + 2 * channels]
                            out = out_row[pw * channels : (pw + 1) * channels]
                            window = 0
                            for c in range(channels):
                                pooled_spike = max(max(top_left[c], top_right[c]), max(bottom_left[c], bottom_right[c]))
                                out[c] = pooled_spike
                                window += np.int32(pooled_spike > zero)
                            if fan:
                                fanned_ops += fanout[(first_row // 2) * pooled_width + pw] * window
                counts[t, b] += count
                if fan:
                    fanned[t, b] += fanned_ops

    @numba.njit(parallel=True, cache=True, nogil=True, fastmath={"reassoc"})
    def lif_dense(
        currents, v_in, from_rest, beta, threshold, reset_zero, spikes, counts, v, keep_state, state_rows, currents_by_row
    ):  # pragma: no cover - compiled
        steps, batch, neurons = spikes.shape
        constant = currents.shape[0] == 1
        in_place = state_rows.shape[0] > 0
        for b in numba.prange(batch):
            state_row = np.int64(state_rows[b]) if in_place else np.int64(b)  # one integer type (prange's index is unsigned)
            if in_place:
                potentials = v_in[state_row]
            else:
                potentials = v[b] if keep_state else np.empty(neurons, np.float32)
                if from_rest:
                    potentials[:] = np.float32(0.0)
                else:
                    potentials[:] = v_in[b]
            current_row = state_row if currents_by_row else np.int64(b)
            for t in range(steps):
                counts[t, b] += lif_span(
                    potentials, currents[0 if constant else t, current_row], spikes[t, b], beta, threshold, reset_zero
                )

    @numba.njit(inline="always", cache=True, nogil=True)
    def list_events(row, found):  # pragma: no cover - compiled
        """The row's events (non-zero columns, in order) into ``found``; returns how many. Listed
        without a branch: every column is stored and only a non-zero one advances the count (a branch
        per column mispredicts)."""
        events = 0
        for i in range(row.shape[0]):
            found[events] = i
            events += np.int32(row[i] != 0)
        return events

    @numba.njit(inline="always", cache=True, nogil=True)
    def sum_events(row, found, events, fanout_rows, bias, acc):  # pragma: no cover - compiled
        """acc = Σ over the row's ``events`` listed in ``found`` (column order) of value × fan-out row,
        then + bias (none: an empty bias)."""
        acc[:] = np.float32(0.0)
        for k in range(events):
            column = found[k]
            value = row[column]
            weights = fanout_rows[column]
            for j in range(acc.shape[0]):
                acc[j] += value * weights[j]
        if bias.shape[0] > 0:
            for j in range(acc.shape[0]):
                acc[j] += bias[j]

    @numba.njit(parallel=True, cache=True, nogil=True)
    def event_linear(inputs, fanout_rows, bias, max_events, out, dense):  # pragma: no cover - compiled
        rows, width = inputs.shape
        for r in numba.prange(rows):
            row = inputs[r]
            found = np.empty(width, np.int32)
            events = list_events(row, found)
            dense[r] = events > max_events
            if events <= max_events:
                sum_events(row, found, events, fanout_rows, bias, out[r])

    @numba.njit(inline="always", cache=True, nogil=True)
    def layer_offsets(widths):  # pragma: no cover - compiled
        """Where each layer's neurons start in one input's scratch row of every layer, and the end."""
        offsets = np.zeros(widths.shape[0] + 1, np.int64)
        for layer in range(widths.shape[0]):
            offsets[layer + 1] = offsets[layer] + widths[layer]
        return offsets

    @numba.njit(inline="always", cache=True, nogil=True)
    def load_potentials(potentials, offsets, states, row, from_rest):  # pragma: no cover - compiled
        """Every layer's potentials of input ``row`` (of ``states``, each layer's [B, H]) into scratch, or zeros."""
        for layer in range(offsets.shape[0] - 1):
            cells = potentials[offsets[layer] : offsets[layer + 1]]
            if from_rest:
                cells[:] = np.float32(0.0)
            else:
                cells[:] = states[layer][row]

    @numba.njit(inline="always", cache=True, nogil=True)
    def store_potentials(potentials, offsets, states, row):  # pragma: no cover - compiled
        for layer in range(offsets.shape[0] - 1):
            states[layer][row][:] = potentials[offsets[layer] : offsets[layer + 1]]

    @numba.njit(inline="always", cache=True, nogil=True)
    def mlp_step(
        layer0_current,
        layer0_input,
        fanouts,
        biases,
        heads,
        head_biases,
        exit_layers,
        first_exit,
        widths,
        offsets,
        potentials,
        spikes,
        current,
        found,
        beta,
        threshold,
        reset_zero,
        counts,
        readouts,
        ops,
    ):  # pragma: no cover - compiled
        """One step of one input through every layer (layer 0 from its constant current, or else by
        summing the events of ``layer0_input``), then the readouts of the exits from ``first_exit`` on
        into ``readouts`` [E, C]: each layer's spike count into ``counts`` [L], and each component's
        synaptic ops (input spikes × fan-out: layers, then exits; none for layer 0's constant current
        or an exit not read) into ``ops`` [L + E] (float64: whole numbers, exact)."""
        input_total = np.float32(0.0)
        for layer in range(widths.shape[0]):
            cells, fired = potentials[offsets[layer] : offsets[layer + 1]], spikes[offsets[layer] : offsets[layer + 1]]
            if layer == 0 and layer0_current.shape[0] > 0:
                layer_current = layer0_current
            else:
                source = layer0_input if layer == 0 else spikes[offsets[layer - 1] : offsets[layer]]
                if layer == 0:
                    for i in range(source.shape[0]):
                        input_total += source[i]
                layer_current = current[: widths[layer]]
                sum_events(source, found, list_events(source, found), fanouts[layer], biases[layer], layer_current)
            counts[layer] = lif_span(cells, layer_current, fired, beta, threshold, reset_zero)
        n_layers, classes = widths.shape[0], readouts.shape[1]
        ops[0] = np.float64(input_total) * widths[0]
        for layer in range(1, n_layers):
            ops[layer] = np.float64(counts[layer - 1]) * widths[layer]
        for e in range(exit_layers.shape[0]):
            ops[n_layers + e] = 0.0
        for e in range(first_exit, exit_layers.shape[0]):
            h = exit_layers[e]
            source = spikes[offsets[h] : offsets[h + 1]]
            sum_events(source, found, list_events(source, found), heads[e], head_biases[e], readouts[e])
            ops[n_layers + e] = np.float64(counts[h]) * classes

    @numba.njit(parallel=True, cache=True, nogil=True, fastmath={"reassoc"})
    def mlp(
        constant,
        inputs,
        fanouts,
        biases,
        heads,
        head_biases,
        exit_layers,
        widths,
        first_dense_macs,
        v_in,
        from_rest,
        beta,
        threshold,
        reset_zero,
        v_out,
        keep_state,
        state_rows,
        outputs,
        records,
    ):  # pragma: no cover - compiled
        steps, batch = records.shape[1], records.shape[2]
        n_layers, n_exits = widths.shape[0], exit_layers.shape[0]
        components = n_layers + n_exits
        has_constant = constant.shape[0] > 0  # layer 0's current, the same every step (direct encoding)
        in_place = state_rows.shape[0] > 0
        offsets = layer_offsets(widths)
        widest = max(widths.max(), inputs.shape[2])
        no_row = np.empty(0, np.float32)
        for b in numba.prange(batch):
            state_row = np.int64(state_rows[b]) if in_place else np.int64(b)  # one integer type (prange's index is unsigned)
            # Every layer's potentials and spikes side by side in scratch memory that stays in cache.
            potentials = np.empty(offsets[n_layers], np.float32)
            spikes = np.empty(offsets[n_layers], np.float32)
            current = np.empty(widest, np.float32)
            found = np.empty(widest, np.int32)
            counts = np.empty(n_layers, np.float32)
            ops = np.empty(components, np.float64)
            load_potentials(potentials, offsets, v_in, state_row, from_rest)
            layer0_current = constant[state_row] if has_constant else no_row  # (b itself unless rows were given)
            for t in range(steps):
                mlp_step(
                    layer0_current,
                    no_row if has_constant else inputs[t, b],
                    fanouts,
                    biases,
                    heads,
                    head_biases,
                    exit_layers,
                    0,
                    widths,
                    offsets,
                    potentials,
                    spikes,
                    current,
                    found,
                    beta,
                    threshold,
                    reset_zero,
                    counts,
                    outputs[t, :, b],
                    ops,
                )
                for component in range(components):  # (float32 of a float64 product of float32s: the float32 product's bits)
                    records[component, t, b] = ops[component]
                if has_constant:
                    records[components, t, b] = first_dense_macs
                for layer in range(n_layers):  # the share of neurons that fired
                    records[2 * components + layer, t, b] = counts[layer] / np.float32(widths[layer])
            if in_place:
                store_potentials(potentials, offsets, v_in, state_row)
            elif keep_state:
                store_potentials(potentials, offsets, v_out, np.int64(b))

    @numba.njit(parallel=True, cache=True, nogil=True, fastmath={"reassoc"})
    def mlp_until_confident(
        constant,
        fanouts,
        biases,
        heads,
        head_biases,
        exit_layers,
        widths,
        first_dense_macs,
        v,
        state_rows,
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
    ):  # pragma: no cover - compiled
        n_layers, n_exits = widths.shape[0], exit_layers.shape[0]
        components, last = n_layers + n_exits, n_exits - 1
        classes = heads[last].shape[1]
        offsets = layer_offsets(widths)
        no_row = np.empty(0, np.float32)
        for b in numba.prange(state_rows.shape[0]):
            row = np.int64(state_rows[b])
            start = starts[b]
            potentials = np.empty(offsets[n_layers], np.float32)
            spikes = np.empty(offsets[n_layers], np.float32)
            current = np.empty(widths.max(), np.float32)
            found = np.empty(widths.max(), np.int32)
            counts = np.empty(n_layers, np.float32)
            readouts = np.empty((n_exits, classes), np.float32)
            ops = np.empty(components, np.float64)
            logits = np.empty(classes, np.float64)
            load_potentials(potentials, offsets, v, row, start == 0)
            total = sums[row]
            answer = answers[row]
            t = start
            decided = 0  # not yet
            while decided == 0:
                mlp_step(
                    constant[row],
                    no_row,
                    fanouts,
                    biases,
                    heads,
                    head_biases,
                    exit_layers,
                    last,
                    widths,
                    offsets,
                    potentials,
                    spikes,
                    current,
                    found,
                    beta,
                    threshold,
                    reset_zero,
                    counts,
                    readouts,
                    ops,
                )
                t += 1
                # What this step costs (synaptic ops, only the final exit's among the exits, and
                # layer 0's dense MACs): whole numbers, exact in float64 in any order.
                for component in range(components):
                    charges[row, component] += ops[component]
                charges[row, components] += first_dense_macs
                # The answer at t, as serving and the evaluation compute it: the running sum in
                # float64 rounded to float32 (torch's CPU cumsum), over t in float32; the confidence
                # max softmax(answer · t / τ), here in float64.
                t32 = np.float32(t)
                top = -np.inf
                for c in range(classes):
                    total[c] += np.float64(readouts[last, c])
                    answer[c] = np.float32(total[c]) / t32
                    logits[c] = np.float64(np.float32(answer[c] * t32) / temperature)
                    top = max(top, logits[c])
                normaliser = 0.0
                for c in range(classes):
                    normaliser += np.exp(logits[c] - top)
                confidence = 1.0 / normaliser
                if abs(confidence - confidence_threshold) <= margin:
                    decided = TOO_CLOSE  # torch decides, from the answer
                elif confidence > confidence_threshold:
                    decided = CONFIDENT
                elif t == steps:
                    decided = UNCONFIDENT
            stopped_at[row] = t
            status[row] = decided
            if decided == TOO_CLOSE:  # it may go on: keep its potentials
                store_potentials(potentials, offsets, v, row)

    return SimpleNamespace(
        numba=numba,
        lif_pool=lif_pool,
        lif_dense=lif_dense,
        event_linear=event_linear,
        mlp=mlp,
        mlp_until_confident=mlp_until_confident,
    )


def cpu_kernels_available() -> bool:
    """Whether numba is importable (which backend runs is chosen in :mod:`fastslow.spiking.backends`)."""
    return _kernel() is not None


# Typed stand-ins for the arrays a call leaves out (no rows, no bias, no fan-out, no v0 or output
# state): the kernels never read or write them, so one shared empty or 1-element array each serves
# every call (a fresh one per call costs an allocation and a conversion, on a path called per chunk).
_NO_ROWS = np.zeros(0, np.int64)
_NO_BIAS = np.zeros(0, np.float32)
_NO_FANOUT = np.zeros(0, np.float64)
_UNUSED = {ndim: np.zeros((1,) * ndim, np.float32) for ndim in (2, 4)}
_NO_CONSTANT, _NO_INPUTS = np.zeros((0, 0), np.float32), np.zeros((0, 0, 0), np.float32)


def _rows_of(currents: torch.Tensor, v0: torch.Tensor | None, rows: torch.Tensor | None) -> tuple[int, np.ndarray, bool]:
    """(inputs advanced, the state rows as the kernel takes them, whether the currents are indexed by
    them too: a constant current, stride 0 in T, holds every row of the state). The rows themselves
    (integer, in range) are checked by the caller, :func:`fastslow.spiking.backends._advanced_rows`."""
    if rows is None:
        return currents.shape[1], _NO_ROWS, False
    if v0 is None or not v0.is_contiguous():
        raise ValueError("advancing rows in place needs the state, contiguous")
    by_row = currents.stride(0) == 0
    # The compiled loop checks no bounds: currents must hold the rows it reads.
    if currents.shape[1] != (v0.shape[0] if by_row else len(rows)):
        raise ValueError(f"{len(rows)} rows of a state of {v0.shape[0]} inputs to advance, but currents for {currents.shape[1]}")
    return len(rows), rows.to("cpu", torch.int64).contiguous().numpy(), by_row


def _check_sums(name: str, buffer: torch.Tensor | None, steps: int, batch: int) -> None:
    """A [T, B] buffer the compiled loops add into: they check no bounds, so a misshapen one would be
    written past its end."""
    if buffer is not None and (
        tuple(buffer.shape) != (steps, batch) or not buffer.is_contiguous() or buffer.dtype != torch.float32
    ):
        raise ValueError(
            f"{name} must be a contiguous float32 [T, B] = {[steps, batch]}, got {list(buffer.shape)} {buffer.dtype}"
        )


def lif_pool_inference(
    currents: torch.Tensor,
    v0: torch.Tensor | None,
    beta: float,
    threshold: float,
    reset_zero: bool,
    keep_state: bool = True,
    next_fanout: torch.Tensor | None = None,
    next_ops: torch.Tensor | None = None,
    rows: torch.Tensor | None = None,
    counts: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The LIF over channels-last ``currents`` [T, B, H, W, C] from ``v0`` [B, H, W, C] (None: at
    rest), then 2×2 max-pooling of the spikes: (pooled spikes [T, B, H//2, W//2, C], spike count per
    map [T, B] (added into ``counts`` if given, contiguous float32), v after step T or None without
    ``keep_state``), on as many threads as torch uses. Starting at rest and dropping the final state
    spare the pass over memory that each costs. With ``next_fanout`` [H//2 · W//2] (synapses leaving
    each pooled position, per channel) it also adds Σ fan-out × pooled spike into ``next_ops`` [T, B]
    (contiguous float32) while they are in cache.
    With ``rows`` [n] (distinct): advances only those rows of ``v0``, in place (returned as the state
    whatever ``keep_state``); the outputs hold the n rows in order, and so do the currents unless
    constant (stride 0 in T)."""
    kernels = _kernel()
    numba, kernel = kernels.numba, kernels.lif_pool
    batch, row_index, by_row = _rows_of(currents, v0, rows)
    steps, _, height, width, channels = currents.shape
    if (next_fanout is None) != (next_ops is None):
        raise ValueError("next_fanout and next_ops go together: the fan-out sums are added into next_ops")
    pooled = currents.new_empty(steps, batch, height // 2, width // 2, channels)
    _check_sums("counts", counts, steps, batch)
    _check_sums("next_ops", next_ops, steps, batch)
    counts = currents.new_zeros(steps, batch) if counts is None else counts
    unused = _UNUSED[4]
    v = currents.new_empty(batch, height, width, channels) if keep_state and rows is None else None
    fanout = _NO_FANOUT if next_fanout is None else next_fanout.detach().to("cpu", torch.float64).contiguous().numpy()
    fanned = unused[0, 0] if next_ops is None else next_ops.numpy()
    _threads(numba)
    # A constant current expanded over T (stride 0 in T) is passed once, not copied T times; any other
    # layout is made contiguous (the compiled loop vectorises only there). float32 scalars: β·v must
    # round in float32, as torch computes it.
    source = currents[:1] if currents.stride(0) == 0 else currents
    start = unused if v0 is None else v0.detach().contiguous().numpy()
    kernel(
        source.detach().contiguous().numpy(),
        start,
        v0 is None,
        np.float32(beta),
        np.float32(threshold),
        bool(reset_zero),
        pooled.numpy(),
        counts.numpy(),
        unused if v is None else v.numpy(),
        keep_state,
        fanout,
        fanned,
        row_index,
        by_row,
    )
    if rows is not None:
        return pooled, counts, v0
    return pooled, counts, v


_threads_set = threading.local()  # numba's thread count is per calling thread, as torch's is


def _threads(numba) -> None:
    """numba's kernels on as many threads as torch uses (set only when that changes: setting costs
    microseconds, on a path called per chunk; a count someone else sets on this thread stands until
    torch's changes, which only affects speed)."""
    torch_threads = torch.get_num_threads()
    wanted = max(1, min(torch_threads, numba.config.NUMBA_NUM_THREADS))
    if getattr(_threads_set, "count", None) != wanted:
        numba.set_num_threads(wanted)
        _threads_set.count = wanted
        # The first call starts numba's OpenMP pool, which sets the OpenMP thread count to
        # NUMBA_NUM_THREADS; where torch's OpenMP runtime answers that call, torch's count changed too.
        if torch.get_num_threads() != torch_threads:
            torch.set_num_threads(torch_threads)


def lif_inference(
    currents: torch.Tensor,
    v0: torch.Tensor | None,
    beta: float,
    threshold: float,
    reset_zero: bool,
    keep_state: bool = True,
    counts: torch.Tensor | None = None,
    rows: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The LIF over ``currents`` [T, B, N] (a constant current may come expanded over T, stride 0)
    from ``v0`` [B, N] (None: at rest): (spikes [T, B, N], v after step T or None without
    ``keep_state``); each row's spike count per step is added into ``counts`` [T, B] (contiguous
    float32) if given. One compiled pass per input row over all T steps, the row's potential in cache,
    instead of four kernels per step. ``rows``: as :func:`lif_pool_inference`."""
    kernels = _kernel()
    numba, kernel = kernels.numba, kernels.lif_dense
    batch, row_index, by_row = _rows_of(currents, v0, rows)
    steps, _, neurons = currents.shape
    # The compiled loop checks no bounds: misshapen buffers would be read or written past their end.
    state_rows = batch if rows is None else v0.shape[0]
    if v0 is not None and tuple(v0.shape) != (state_rows, neurons):
        raise ValueError(f"the state must be [B, N] = {[state_rows, neurons]}, got {list(v0.shape)}")
    _check_sums("counts", counts, steps, batch)
    spikes = currents.new_empty(steps, batch, neurons)
    counts = currents.new_zeros(steps, batch) if counts is None else counts
    unused = _UNUSED[2]
    v = currents.new_empty(batch, neurons) if keep_state and rows is None else None
    _threads(numba)
    source = currents[:1] if currents.stride(0) == 0 else currents
    start = unused if v0 is None else v0.detach().contiguous().numpy()
    kernel(
        source.detach().contiguous().numpy(),
        start,
        v0 is None,
        np.float32(beta),
        np.float32(threshold),
        bool(reset_zero),
        spikes.numpy(),
        counts.numpy(),
        unused if v is None else v.numpy(),
        keep_state,
        row_index,
        by_row,
    )
    if rows is not None:
        return spikes, v0
    return spikes, v


def event_linear_inference(
    inputs: torch.Tensor,
    fanout_rows: torch.Tensor,
    bias: torch.Tensor | None,
    max_events: int,
) -> tuple[torch.Tensor, np.ndarray]:
    """x·W + b for ``inputs`` [R, in] (contiguous float32) summed over each row's events (non-zeros),
    for the rows with at most ``max_events`` of them: (out [R, out], dense [R], a numpy bool array: the
    caller only looks for its True rows, cheaper there than in torch). The rows marked dense are left
    unwritten, for the caller's matmul. ``fanout_rows`` is Wᵀ [in, out]."""
    kernels = _kernel()
    numba, kernel = kernels.numba, kernels.event_linear
    out = inputs.new_empty(inputs.shape[0], fanout_rows.shape[1])
    dense = np.empty(inputs.shape[0], np.bool_)
    _threads(numba)
    kernel(
        inputs.detach().numpy(),
        fanout_rows.numpy(),
        _NO_BIAS if bias is None else bias.detach().numpy(),
        int(max_events),
        out.numpy(),
        dense,
    )
    return out, dense


class MLPWeights(NamedTuple):
    """A spiking MLP's weights as :func:`mlp_inference` reads them (numpy views), built once per
    version of the weights by :func:`mlp_weights`."""

    fanouts: tuple[np.ndarray, ...]  # each layer's Wᵀ [in, out]
    biases: tuple[np.ndarray, ...]
    heads: tuple[np.ndarray, ...]  # each exit's Wᵀ [H, C]
    head_biases: tuple[np.ndarray, ...]
    exit_layers: np.ndarray  # the layer each exit reads
    widths: np.ndarray  # each layer's neurons
    first_dense_macs: np.float32  # layer 0's MACs per step from a constant current
    key: tuple  # the weights' versions and addresses it was built from


def mlp_weights(
    layers: list[torch.nn.Linear], heads: list[torch.nn.Linear], exit_layers: tuple[int, ...], key: tuple
) -> MLPWeights:
    """:class:`MLPWeights` for these layers and exit heads (float32, on the CPU)."""
    numpy = lambda tensor: tensor.detach().contiguous().numpy()  # noqa: E731
    transposed = lambda layer: numpy(layer.weight.detach().t())  # noqa: E731
    bias = lambda layer: _NO_BIAS if layer.bias is None else numpy(layer.bias)  # noqa: E731
    return MLPWeights(
        tuple(transposed(layer) for layer in layers),
        tuple(bias(layer) for layer in layers),
        tuple(transposed(head) for head in heads),
        tuple(bias(head) for head in heads),
        np.array(exit_layers, np.int64),
        np.array([layer.out_features for layer in layers], np.int64),
        np.float32(layers[0].in_features * layers[0].out_features),
        key,
    )


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
    """A spiking MLP (linear layers → LIF, membrane readouts) over T steps in one compiled call, one
    input per thread at a time, every layer's potentials and spikes in cache: per step, each layer's
    current is summed over its input's events (:func:`event_linear_inference`'s arithmetic, for rows
    of any density), then the LIF (:func:`lif_inference`'s), then each exit's readout.

    Layer 0 takes ``constant`` [B, H0] (its current every step: direct encoding) or ``inputs``
    [T, B, in] (encoded spikes, summed over their events). ``states``: each layer's potentials [B, H]
    (None: at rest). ``records`` [2K + L, T, B] (contiguous float32, K = L + E components) receives
    System 1's records: each component's synaptic ops (layers, then exits), dense MACs (layer 0's,
    from a constant current), then each layer's share of neurons that fired. Returns (readouts [T,
    E, B, C], the new states, or None without ``keep_state``). ``rows``: as :func:`lif_inference`
    (the constant current holds every row of the state; ``inputs`` and the outputs the n rows in order)."""
    kernels = _kernel()
    n_layers, n_exits = len(weights.widths), len(weights.heads)
    steps = records.shape[1]
    batch = (constant.shape[0] if inputs is None else inputs.shape[1]) if rows is None else len(rows)
    state_rows = (constant.shape[0] if inputs is None else inputs.shape[1]) if rows is None else states[0].shape[0]
    if rows is not None and (states is None or constant is not None and constant.shape[0] != states[0].shape[0]):
        raise ValueError("advancing rows in place needs the state, and a constant current for every row of it")
    # The compiled loop checks no bounds: misshapen buffers or rows outside the state would be read or written past their end.
    if states is not None and any(
        tuple(v.shape) != (state_rows, int(width)) or not v.is_contiguous() for v, width in zip(states, weights.widths)
    ):
        raise ValueError(f"the state must be each layer's contiguous [B, H] for {state_rows} inputs")
    if (
        tuple(records.shape) != (2 * (n_layers + n_exits) + n_layers, steps, batch)
        or not records.is_contiguous()
        or records.dtype != torch.float32
    ):
        raise ValueError(
            f"records must be a contiguous float32 [2K + L, T, B] = {[2 * (n_layers + n_exits) + n_layers, steps, batch]}"
        )
    row_index = _NO_ROWS
    if rows is not None:
        lowest, highest = (int(bound) for bound in torch.aminmax(rows))
        if lowest < 0 or highest >= state_rows:
            raise ValueError(f"rows must be positions among the state's {state_rows} inputs, got {lowest}…{highest}")
        row_index = rows.to("cpu", torch.int64).contiguous().numpy()
    like = constant if inputs is None else inputs
    outputs = like.new_empty(steps, n_exits, batch, weights.heads[0].shape[1])
    new_states = tuple(like.new_empty(batch, int(width)) for width in weights.widths) if keep_state and rows is None else None
    unused = _UNUSED[2]
    no_states = (unused,) * n_layers
    _threads(kernels.numba)
    kernels.mlp(
        _NO_CONSTANT if constant is None else constant.detach().contiguous().numpy(),
        _NO_INPUTS if inputs is None else inputs.detach().contiguous().numpy(),
        weights.fanouts,
        weights.biases,
        weights.heads,
        weights.head_biases,
        weights.exit_layers,
        weights.widths,
        weights.first_dense_macs,
        no_states if states is None else tuple(v.numpy() for v in states),
        states is None,
        np.float32(beta),
        np.float32(threshold),
        bool(reset_zero),
        no_states if new_states is None else tuple(v.numpy() for v in new_states),
        keep_state,
        row_index,
        outputs.numpy(),
        records.numpy(),
    )
    return outputs, states if rows is not None else new_states


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
    """SEENN-I over a spiking MLP (:func:`mlp_inference`'s arithmetic, direct encoding), each input
    stepped until its confidence max softmax(S_t / τ) exceeds ``confidence_threshold`` or it reaches
    ``steps``: the inputs leave one by one, with no chunks and no call per step.

    For the inputs ``rows`` [m] (distinct, of the n in ``constant`` [n, H0]), each from step
    ``starts`` [m] (0: at rest; else from its potentials in ``states``, each layer's [n, H], and its
    running sum of readouts in ``sums`` [n, C] float64), it writes, by row: ``answers`` [n, C] (the
    mean readout at its last step, as torch's cumsum and division give it), ``stopped_at`` [n]
    (int64, that step), ``status`` [n] (int8: :data:`CONFIDENT`, :data:`UNCONFIDENT`, or
    :data:`TOO_CLOSE` where the float64 confidence lies within ``margin`` of the threshold: torch's
    float32 confidence decides those, and an input that goes on is passed again with its step as its
    start; its potentials are then in ``states``), and adds into ``charges`` [n, 2K] (float64) the
    synaptic ops of every component (layers, then exits; only the final exit runs) and dense MACs."""
    kernels = _kernel()
    count, classes = len(weights.widths), weights.heads[-1].shape[1]
    n = constant.shape[0]
    for name, tensor, shape, dtype in (
        ("sums", sums, (n, classes), torch.float64),
        ("answers", answers, (n, classes), torch.float32),
        ("charges", charges, (n, 2 * (count + len(weights.heads))), torch.float64),
        ("stopped_at", stopped_at, (n,), torch.int64),
        ("status", status, (n,), torch.int8),
        ("constant", constant, (n, int(weights.widths[0])), torch.float32),
    ):
        # The compiled loop checks no bounds: a misshapen buffer would be written past its end.
        if tuple(tensor.shape) != shape or tensor.dtype != dtype or not tensor.is_contiguous():
            raise ValueError(f"{name} must be a contiguous {dtype} {list(shape)}, got {tensor.dtype} {list(tensor.shape)}")
    if len(states) != count or any(
        tuple(v.shape) != (n, int(width)) or not v.is_contiguous() for v, width in zip(states, weights.widths)
    ):
        raise ValueError(f"the states must be each layer's contiguous [B, H] for {n} inputs")
    if len(rows) and (int(rows.min()) < 0 or int(rows.max()) >= n or int(starts.min()) < 0 or int(starts.max()) >= steps):
        raise ValueError(f"rows must be positions among {n} inputs and starts steps before {steps}")
    _threads(kernels.numba)
    kernels.mlp_until_confident(
        constant.detach().contiguous().numpy(),
        weights.fanouts,
        weights.biases,
        weights.heads,
        weights.head_biases,
        weights.exit_layers,
        weights.widths,
        np.float64(weights.first_dense_macs),
        tuple(v.numpy() for v in states),
        rows.to(torch.int64).contiguous().numpy(),
        starts.to(torch.int64).contiguous().numpy(),
        int(steps),
        np.float32(beta),
        np.float32(threshold),
        bool(reset_zero),
        float(confidence_threshold),
        float(temperature),
        float(margin),
        sums.numpy(),
        charges.numpy(),
        answers.numpy(),
        stopped_at.numpy(),
        status.numpy(),
    )
