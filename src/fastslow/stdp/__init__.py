"""Unsupervised, continually learning System 1: Diehl & Cook STDP and SpikeDyn, low-precision weights."""

from fastslow.stdp.network import (
    MODELS,
    SPIKEDYN_MECHANISMS,
    DiehlCookConstants,
    SpikeDynRules,
    STDPCounts,
    STDPNetwork,
    STDPSpec,
    STDPState,
    memory_bytes,
)
from fastslow.stdp.quantize import SUPPORTED_BITS, quantize_array

__all__ = [
    "MODELS",
    "SPIKEDYN_MECHANISMS",
    "SUPPORTED_BITS",
    "DiehlCookConstants",
    "STDPCounts",
    "STDPNetwork",
    "STDPSpec",
    "STDPState",
    "SpikeDynRules",
    "memory_bytes",
    "quantize_array",
]
