"""Spiking building blocks: LIF neurons (functional core + module), surrogates, encoders."""

from fastslow.spiking.encoders import ENCODINGS, encode_step, is_spiking
from fastslow.spiking.lif import LIF, LIFParams, LIFState, lif_init, lif_multistep, lif_multistep_pooled, lif_step
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
    "lif_multistep_pooled",
    "lif_step",
    "spike_fn",
]
