"""A distribution-free accuracy guarantee: Learn-then-Test (Angelopoulos, Bates, Candès, Jordan, Lei 2021).

For a policy knob λ_j on a grid, the risk is the accuracy System 2 has and the policy loses,
R(λ) = acc_S2 − acc_policy(λ). It is bounded by R⁺(λ) = P(policy wrong and System 2 right),
the mean of a 0/1 loss, so testing H0_j: R⁺(λ_j) > α with a valid p-value for bounded losses
is a (conservative) test of R(λ_j) > α, tighter than testing the {−1, 0, 1} loss on [−1, 1].
Knobs are tested in a fixed sequence from the safest (most escalation) on, each at level δ,
stopping at the first that is not rejected: the family-wise error is ≤ δ, so with probability
≥ 1 − δ over the calibration split every certified knob has R ≤ α. The cheapest certified knob
(least mean energy on the calibration split) is chosen.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np

from fastslow.errors import ConfigError

METHOD = "Learn-then-Test (Angelopoulos et al. 2021), Hoeffding–Bentkus p-values, fixed-sequence testing"


def _binom_cdf(k: int, n: int, p: float) -> float:
    """P(Binomial(n, p) ≤ k), summed in log space."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * math.log(p) + (n - i) * math.log1p(-p) for i in range(k + 1)]
    top = max(logs)
    return min(1.0, math.exp(top) * sum(math.exp(v - top) for v in logs))


def _kl_bernoulli(a: float, b: float) -> float:
    a = min(max(a, 1e-12), 1 - 1e-12)
    b = min(max(b, 1e-12), 1 - 1e-12)
    return a * math.log(a / b) + (1 - a) * math.log((1 - a) / (1 - b))


def hoeffding_bentkus_pvalue(mean_loss: float, n: int, alpha: float, low: float = 0.0, high: float = 1.0) -> float:
    """Valid p-value for H0: E[loss] > α from the mean of n i.i.d. losses in [low, high]."""
    span = high - low
    risk = (mean_loss - low) / span
    level = (alpha - low) / span
    hoeffding = math.exp(-n * _kl_bernoulli(min(risk, level), level))
    bentkus = math.e * _binom_cdf(math.ceil(n * risk), n, level)
    return min(hoeffding, bentkus, 1.0)


def learn_then_test(
    losses: np.ndarray, alpha: float, delta: float, order: Literal["fixed_sequence", "bonferroni"] = "fixed_sequence",
    low: float = 0.0, high: float = 1.0,
) -> tuple[list[int], list[float]]:
    """Certified knob indices and every knob's p-value; ``losses`` [n, J], knobs ordered safest first."""
    n, knobs = losses.shape
    pvalues = [hoeffding_bentkus_pvalue(float(losses[:, j].mean()), n, alpha, low, high) for j in range(knobs)]
    if order == "bonferroni":
        return [j for j, p in enumerate(pvalues) if p <= delta / knobs], pvalues
    certified = []
    for j, p in enumerate(pvalues):
        if p > delta:
            break
        certified.append(j)
    return certified, pvalues


@dataclass
class CalibrationResult:
    chosen: int | None
    certified: list[int]
    pvalues: list[float]
    n: int
    alpha: float
    delta: float
    method: str = METHOD
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def min_calibration_size(alpha: float, delta: float) -> int:
    """The fewest calibration inputs for which even zero observed losses certify risk ≤ α at level δ."""
    n = 1
    while hoeffding_bentkus_pvalue(0.0, n, alpha) > delta:
        n = n * 2
    low, high = n // 2, n
    while low + 1 < high:
        mid = (low + high) // 2
        low, high = (mid, high) if hoeffding_bentkus_pvalue(0.0, mid, alpha) > delta else (low, mid)
    return high


def _check(alpha: float, delta: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"allowed accuracy drop {alpha} is outside (0, 1): pass e.g. --max-accuracy-drop 0.005")
    if not 0.0 < delta < 1.0:
        raise ConfigError(f"delta {delta} is outside (0, 1): pass e.g. --delta 0.1")


def calibrate_knob(
    losses: np.ndarray, energies: np.ndarray, alpha: float, delta: float,
    order: Literal["fixed_sequence", "bonferroni"] = "fixed_sequence",
) -> CalibrationResult:
    """Choose the least-energy knob among those Learn-then-Test certifies; ``losses`` [n, J] 0/1
    (policy wrong where System 2 is right), ``energies`` [J] mean µJ per input at each knob."""
    _check(alpha, delta)
    losses = np.asarray(losses, dtype=float)
    if losses.ndim != 2 or losses.size == 0:
        raise ConfigError("calibration needs a non-empty [n, knobs] loss table: give a non-empty calibration split")
    if len(energies) != losses.shape[1]:
        raise ConfigError("calibration needs one energy per knob")
    certified, pvalues = learn_then_test(losses, alpha, delta, order)
    if not certified:
        needed = min_calibration_size(alpha, delta)
        reason = (f"the calibration split ({len(losses)}) is below the {needed} inputs any certificate of this drop needs"
                  if len(losses) < needed else "the safest knob's calibration risk is too close to the allowed drop")
        return CalibrationResult(None, [], pvalues, len(losses), alpha, delta, note=f"no knob certified: {reason}")
    chosen = min(certified, key=lambda j: energies[j])
    return CalibrationResult(chosen, certified, pvalues, len(losses), alpha, delta)
