"""Spiking building blocks: LIF neurons (functional core + module), surrogates, encoders; which kernel
runs System 1's layers is :mod:`fastslow.spiking.backends`'s choice (or the user's)."""

from fastslow.spiking.encoders import ENCODINGS, encode_step, is_spiking
from fastslow.spiking.lif import LIF, LIFParams, LIFState, lif_init, lif_multistep, lif_step
from fastslow.spiking.surrogate import spike_fn

__all__ = [
    "ENCODINGS",
    "LIF",
    "LIFParams",
    "LIFState",
    "encode_step",
    "is_spiking",
    "lif_init",
    "lif_multistep",
    "lif_step",
    "spike_fn",
]
