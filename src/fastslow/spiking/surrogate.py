"""Surrogate gradients for the Heaviside spike function.

Forward: ``spike = (v - threshold > 0)``. Backward: a smooth stand-in for the
Dirac delta, scaled by ``slope`` (steeper = closer to the true step).
"""

from __future__ import annotations

import math
from typing import Literal

import torch

SurrogateName = Literal["fast_sigmoid", "arctan"]


def _heaviside(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """1.0 where x > 0 else 0.0, in x's dtype. Writing the comparison straight into a float
    tensor is several times faster on CPU than comparing to bool and converting."""
    return torch.gt(x, 0.0, out=torch.empty_like(x) if out is None else out)


class _SurrogateSpike(torch.autograd.Function):
    """Heaviside forward; backward multiplies by the subclass's ``derivative(x, slope)``."""

    @staticmethod
    def derivative(x: torch.Tensor, slope: float) -> torch.Tensor:
        raise NotImplementedError

    @classmethod
    def forward(cls, ctx, x: torch.Tensor, slope: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.slope = slope
        return _heaviside(x)

    @classmethod
    def backward(cls, ctx, grad_output: torch.Tensor):
        (x,) = ctx.saved_tensors
        return grad_output * cls.derivative(x, ctx.slope), None


class _FastSigmoidSpike(_SurrogateSpike):
    """SuperSpike (Zenke & Ganguli 2018): d spike / dx = 1 / (slope·|x| + 1)²."""

    @staticmethod
    def derivative(x: torch.Tensor, slope: float) -> torch.Tensor:
        return x.abs().mul_(slope).add_(1.0).square_().reciprocal_()


class _ArctanSpike(_SurrogateSpike):
    """Arctan surrogate (Fang et al. 2021): d spike / dx = (α/2) / (1 + (π/2·α·x)²)."""

    @staticmethod
    def derivative(x: torch.Tensor, slope: float) -> torch.Tensor:
        return x.mul(math.pi / 2.0 * slope).square_().add_(1.0).reciprocal_().mul_(slope / 2.0)


_SURROGATES = {"fast_sigmoid": _FastSigmoidSpike, "arctan": _ArctanSpike}


def _surrogate(name: str) -> type[_SurrogateSpike]:
    try:
        return _SURROGATES[name]
    except KeyError:
        raise ValueError(f"unknown surrogate {name!r}: use one of {sorted(_SURROGATES)}") from None


def spike_fn(x: torch.Tensor, surrogate: SurrogateName = "fast_sigmoid", slope: float = 25.0) -> torch.Tensor:
    """Heaviside step of ``x`` (1.0 where x > 0) with the named surrogate gradient."""
    return _surrogate(surrogate).apply(x, slope)


def surrogate_derivative(x: torch.Tensor, surrogate: SurrogateName = "fast_sigmoid", slope: float = 25.0) -> torch.Tensor:
    """The named surrogate's d spike / dx at ``x`` (what :func:`spike_fn`'s backward multiplies by)."""
    return _surrogate(surrogate).derivative(x, slope)
