"""Input encoders: turn an analog input x in [0, 1] into what layer 0 receives at step t.

- ``direct``: the analog value every step (layer 0 is then a dense, MAC layer).
- ``rate``: Bernoulli spikes with probability x each step.
- ``latency``: one spike per input at step round((1 - x)·(T - 1)); x = 0 never fires.
- ``events``: the input already is spikes, one frame per step (event-camera data binned into T
  frames, :mod:`fastslow.data.events`): x is [B, T, ...] and step t takes frame t as it is.
"""

from __future__ import annotations

from typing import Literal

import torch

EncodingName = Literal["direct", "rate", "latency", "events"]
ENCODINGS: tuple[str, ...] = ("direct", "rate", "latency", "events")


def is_spiking(encoding: EncodingName) -> bool:
    """Whether the encoder emits binary spikes (so layer 0 costs synaptic ops, not MACs)."""
    return encoding != "direct"


def encode_step(
    x: torch.Tensor,
    t: int,
    timesteps: int,
    encoding: EncodingName,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Layer-0 input at step ``t`` (0-based) of ``timesteps``; same shape as ``x`` (``events``: ``x``
    [B, T, ...] gives its frame t, [B, ...])."""
    if encoding == "events":
        return x[:, t]
    if encoding == "direct":
        return x
    if encoding == "rate":
        noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return (noise < x).to(x.dtype)
    if encoding == "latency":
        fire_step = torch.round((1.0 - x.clamp(0.0, 1.0)) * (timesteps - 1))
        return ((fire_step == t) & (x > 0)).to(x.dtype)
    raise ValueError(f"unknown encoding {encoding!r}: use one of {ENCODINGS}")
