"""Compiled CPU kernels (numba, the optional extra ``fastslow[cpu]``) for inference without gradients.

The torch path of :func:`fastslow.spiking.lif.lif_multistep_pooled` runs about seven element-wise
kernels per step, each a full pass over memory. Here one loop does leak, integrate, fire, reset,
count and 2×2 pooling per neuron, an image per thread, all T steps while its potential stays in
cache. Same arithmetic as :func:`fastslow.spiking.lif.lif_step` (β·v rounded, then + current; no
fused multiply-add), so the spikes, counts and potentials are the torch path's bits (a test checks).
Compiled on first use (about 3 s) and cached on disk. ``FASTSLOW_CPU_KERNELS=0`` turns them off.
"""

from __future__ import annotations

import os
from functools import lru_cache

import numpy as np
import torch


@lru_cache(maxsize=1)
def _kernel():
    try:
        import numba
    except ImportError:
        return None

    @numba.njit(parallel=True, cache=True, nogil=True)
    def lif_pool(currents, v, beta, threshold, reset_zero, pooled, counts):  # pragma: no cover - compiled
        steps = pooled.shape[0]
        batch, height, width, channels = v.shape
        constant = currents.shape[0] == 1  # one current for every step
        pooled_height, pooled_width = height // 2, width // 2
        zero = np.float32(0.0)
        for b in numba.prange(batch):
            for t in range(steps):
                tc = 0 if constant else t
                count = 0
                for h in range(height):
                    for w in range(width):
                        in_window = h < 2 * pooled_height and w < 2 * pooled_width
                        for c in range(channels):
                            u = v[b, h, w, c] * beta
                            u = u + currents[tc, b, h, w, c]
                            if u > threshold:
                                count += 1
                                if in_window:
                                    pooled[t, b, h // 2, w // 2, c] = 1.0
                                v[b, h, w, c] = u - u if reset_zero else u - threshold
                            elif reset_zero:
                                v[b, h, w, c] = u - u * zero  # as torch's u − u·spike: NaN from ±inf
                            else:
                                v[b, h, w, c] = u
                counts[t, b] = count

    return numba, lif_pool


def cpu_kernels_available() -> bool:
    """Whether the compiled kernels can run: numba installed and not turned off by ``FASTSLOW_CPU_KERNELS=0``."""
    return os.environ.get("FASTSLOW_CPU_KERNELS", "1") != "0" and _kernel() is not None


def applies(currents: torch.Tensor, v0: torch.Tensor) -> bool:
    """Whether :func:`lif_pool_inference` can take these tensors (CPU float32, no gradient)."""
    return (
        currents.device.type == "cpu" and currents.dtype == torch.float32 and v0.dtype == torch.float32
        and not (torch.is_grad_enabled() and (currents.requires_grad or v0.requires_grad))
        and cpu_kernels_available()
    )


def lif_pool_inference(currents: torch.Tensor, v0: torch.Tensor, beta: float, threshold: float, reset_zero: bool
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The LIF over channels-last ``currents`` [T, B, H, W, C] from ``v0`` [B, H, W, C], then 2×2
    max-pooling of the spikes: (pooled spikes [T, B, H//2, W//2, C], spike count per map [T, B],
    v after step T), on as many threads as torch uses."""
    numba, kernel = _kernel()
    steps, batch, height, width, channels = currents.shape
    pooled = currents.new_zeros(steps, batch, height // 2, width // 2, channels)
    counts = currents.new_empty(steps, batch)
    v = v0.contiguous().clone()
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
    # A constant current expanded over T (stride 0 in T) is passed once, not copied T times; any other
    # layout is made contiguous (the compiled loop vectorises only there). float32 scalars: β·v must
    # round in float32, as torch computes it.
    source = currents[:1] if currents.stride(0) == 0 else currents
    kernel(source.contiguous().numpy(), v.numpy(), np.float32(beta), np.float32(threshold), bool(reset_zero), pooled.numpy(), counts.numpy())
    return pooled, counts, v
