"""Low-precision synaptic weights (lpSpikeCon-style): storage on a fixed-point grid, STDP updates
kept by stochastic rounding.

A b-bit weight in [0, w_max] is stored as one of 2^b levels ``k · w_max / (2^b − 1)``. A
deterministic round would drop every STDP update smaller than half a level (most depression
steps at 4–8 bits); stochastic rounding rounds up with probability equal to the remainder, so
the expected stored weight equals the exact one and small updates survive on average.
32 bits means float32 storage, no grid.
"""

from __future__ import annotations

import numpy as np

from fastslow.errors import ConfigError

SUPPORTED_BITS = (4, 8, 16, 32)


def check_bits(bits: int) -> int:
    """``bits`` if supported, else a :class:`ConfigError` naming the choices."""
    if bits not in SUPPORTED_BITS:
        raise ConfigError(f"weight precision must be one of {', '.join(map(str, SUPPORTED_BITS))} bits, got {bits!r}")
    return bits


def grid_step(bits: int, w_max: float) -> float:
    """Distance between two storable weights (0 for float32)."""
    return 0.0 if check_bits(bits) == 32 else w_max / (2**bits - 1)


def quantize_array(weights: np.ndarray, bits: int, w_max: float, rng: np.random.Generator) -> np.ndarray:
    """``weights`` clipped to [0, w_max] and stochastically rounded onto the b-bit grid (new float32 array)."""
    clipped = np.clip(weights, 0.0, w_max).astype(np.float32, copy=False)
    step = grid_step(bits, w_max)
    if step == 0.0:
        return clipped
    levels = clipped / np.float32(step)
    floor = np.floor(levels)
    rounded = floor + (rng.random(levels.shape, dtype=np.float32) < levels - floor)
    return np.minimum(rounded * np.float32(step), np.float32(w_max))


def on_grid(weights: np.ndarray, bits: int, w_max: float) -> bool:
    """Whether every weight is a storable b-bit value in [0, w_max]."""
    if (weights < 0).any() or (weights > w_max * (1 + 1e-6)).any():
        return False
    step = grid_step(bits, w_max)
    if step == 0.0:
        return True
    levels = weights / step
    return bool((np.abs(levels - np.round(levels)) < 1e-3).all())
