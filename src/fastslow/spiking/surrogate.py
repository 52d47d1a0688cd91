"""Surrogate gradients for the Heaviside spike function.

Forward: ``spike = (v - threshold > 0)``. Backward: a smooth stand-in for the
Dirac delta, scaled by ``slope`` (steeper = closer to the true step).
"""

from __future__ import annotations

import math
from typing import Literal

import torch

SurrogateName = Literal["fast_sigmoid", "arctan"]


class _FastSigmoidSpike(torch.autograd.Function):
    """SuperSpike (Zenke & Ganguli 2018): d spike / dx = 1 / (slope·|x| + 1)²."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, slope: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.slope = slope
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (x,) = ctx.saved_tensors
        grad = grad_output / (ctx.slope * x.abs() + 1.0) ** 2
        return grad, None


class _ArctanSpike(torch.autograd.Function):
    """Arctan surrogate (Fang et al. 2021): d spike / dx = (α/2) / (1 + (π/2·α·x)²)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, slope: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.slope = slope
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (x,) = ctx.saved_tensors
        alpha = ctx.slope
        grad = grad_output * (alpha / 2.0) / (1.0 + (math.pi / 2.0 * alpha * x) ** 2)
        return grad, None


_SURROGATES = {"fast_sigmoid": _FastSigmoidSpike, "arctan": _ArctanSpike}


def spike_fn(x: torch.Tensor, surrogate: SurrogateName = "fast_sigmoid", slope: float = 25.0) -> torch.Tensor:
    """Heaviside step of ``x`` (1.0 where x > 0) with the named surrogate gradient."""
    try:
        function = _SURROGATES[surrogate]
    except KeyError:
        raise ValueError(f"unknown surrogate {surrogate!r}: use one of {sorted(_SURROGATES)}") from None
    return function.apply(x, slope)
