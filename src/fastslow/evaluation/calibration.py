"""A distribution-free accuracy guarantee: Learn-then-Test (Angelopoulos, Bates, Candès, Jordan, Lei 2021).

Setting. A policy has a knob λ_j on a finite grid, ordered from the safest (most escalation to
System 2) to the least safe. On a calibration split of n i.i.d. inputs, input i at knob j has the
excess error against System 2

    L_ij = 1[policy at λ_j wrong on i] − 1[System 2 wrong on i]  ∈ {−1, 0, 1},

whose mean R(λ_j) = acc_S2 − acc_policy(λ_j) is the accuracy the policy gives up. We want, with
probability ≥ 1 − δ over the calibration split, R(λ) ≤ α for the knob we deploy.

Loss forms (``loss_form``):

* ``"upper"`` (default): the 0/1 loss L⁺_ij = 1[policy wrong on i and System 2 right on i].
  Per input L_ij ≤ L⁺_ij (the four cases: wrong/right → 1 ≤ 1; wrong/wrong → 0 ≤ 0;
  right/wrong → −1 ≤ 0; right/right → 0 ≤ 0), so R(λ) ≤ R⁺(λ) := E[L⁺]. Under the null
  H0_j: R(λ_j) > α we therefore have R⁺(λ_j) > α, so a valid p-value for "R⁺ > α" is a valid
  (conservative) p-value for "R > α". It is far tighter: on [0, 1] the Bentkus/KL tail is
  governed by the Bernoulli variance at α (≈ α), whereas rescaling the {−1, 0, 1} loss to [0, 1]
  puts the level at (1 + α)/2 ≈ ½ (maximal variance) and halves the margin α − R̂, so the signed
  form needs roughly 1/α times as many calibration inputs for the same certificate.
* ``"signed"``: the {−1, 0, 1} loss itself, tested with the bounds [−1, 1]. Valid, and it can use
  inputs on which the policy beats System 2, but it is loose unless n is very large.

p-values are LTT's Hoeffding–Bentkus ones (:func:`hoeffding_bentkus_pvalue`). Multiple testing:
``"fixed_sequence"`` tests the knobs safest first, each at level δ, and stops at the first that is
not rejected (family-wise error ≤ δ); ``"bonferroni"`` rejects where p ≤ δ/J in any order. With
probability ≥ 1 − δ every certified knob has R ≤ α; the certified knob with the least mean energy
on the calibration split is chosen (ties go to the safer knob).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from fastslow.errors import ConfigError

Order = Literal["fixed_sequence", "bonferroni"]
LossForm = Literal["upper", "signed"]

METHOD = "Learn-then-Test (Angelopoulos et al. 2021), Hoeffding–Bentkus p-values, fixed-sequence testing"

_ORDERS = ("fixed_sequence", "bonferroni")
_BOUNDS = {"upper": (0.0, 1.0), "signed": (-1.0, 1.0)}
_TOL = 1e-9


def method_name(order: Order = "fixed_sequence", loss_form: LossForm = "upper") -> str:
    """The method string for a result: :data:`METHOD` for the defaults."""
    testing = "fixed-sequence testing" if order == "fixed_sequence" else "Bonferroni correction"
    pvalues = "Hoeffding–Bentkus p-values" + (" on the signed loss in [−1, 1]" if loss_form == "signed" else "")
    return f"Learn-then-Test (Angelopoulos et al. 2021), {pvalues}, {testing}"


def _binom_cdf(k: int, n: int, p: float) -> float:
    """P(Binomial(n, p) ≤ k), the pmf built by its ratio recursion and summed in log space."""
    if k < 0:
        return 0.0
    if k >= n or p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    i = np.arange(k, dtype=float)
    # log pmf(0) = n log(1 − p); pmf(i + 1) / pmf(i) = (n − i) / (i + 1) · p / (1 − p)
    steps = np.log((n - i) / (i + 1.0)) + (math.log(p) - math.log1p(-p))
    logs = n * math.log1p(-p) + np.concatenate(([0.0], np.cumsum(steps)))
    top = float(logs.max())
    return min(1.0, math.exp(top) * float(np.exp(logs - top).sum()))


def _kl_bernoulli(a: float, b: float) -> float:
    """h(a, b) = a log(a/b) + (1 − a) log((1 − a)/(1 − b)), with 0 log 0 = 0; b in (0, 1)."""
    out = 0.0
    if a > 0.0:
        out += a * math.log(a / b)
    if a < 1.0:
        out += (1.0 - a) * math.log((1.0 - a) / (1.0 - b))
    return max(out, 0.0)


def hoeffding_bentkus_pvalue(mean_loss: float, n: int, alpha: float, low: float = 0.0, high: float = 1.0) -> float:
    """Valid p-value for H0: E[loss] > α from the mean of n i.i.d. losses in [low, high].

    Losses are rescaled to [0, 1] (R̂' = (R̂ − low)/(high − low), α' likewise); then
    p_H = exp(−n·h(min(R̂', α'), α')), p_B = e·P(Binomial(n, α') ≤ ⌈n R̂'⌉) and p = min(p_H, p_B, 1)
    (LTT, Proposition 3 / Bates et al. 2021, "Distribution-free, risk-controlling prediction sets").
    """
    if not high > low:
        raise ConfigError(f"loss bounds [{low}, {high}] are empty: pass low < high")
    if not (isinstance(n, (int, np.integer)) and n >= 1):
        raise ConfigError(f"the number of losses {n} is not a positive integer: give at least one calibration input")
    if not low < alpha < high:
        raise ConfigError(f"risk level {alpha} is outside the loss range ({low}, {high}): pass a level strictly inside it")
    if not (math.isfinite(mean_loss) and low - _TOL <= mean_loss <= high + _TOL):
        raise ConfigError(f"mean loss {mean_loss} is outside the loss range [{low}, {high}]: check the losses or the bounds")
    span = high - low
    risk = min(max((mean_loss - low) / span, 0.0), 1.0)
    level = (alpha - low) / span
    if risk >= level:  # p_H = 1 and p_B ≥ e·P(Bin ≤ median-ish) ≥ 1
        return 1.0
    hoeffding = math.exp(-n * _kl_bernoulli(risk, level))
    # n·R̂' is (half-)integral for 0/1 and {−1, 0, 1} losses; the tolerance keeps 5.0000000001 at 5.
    bentkus = math.e * _binom_cdf(math.ceil(n * risk - _TOL), n, level)
    return min(hoeffding, bentkus, 1.0)


def _check_alpha(alpha: float) -> None:
    if not (isinstance(alpha, numbers.Real) and 0.0 < alpha < 1.0):
        raise ConfigError(f"allowed accuracy drop {alpha} is outside (0, 1): pass e.g. --max-accuracy-drop 0.005")


def check_calibration_request(alpha: float, delta: float) -> None:
    """A clear error unless the allowed drop ``alpha`` and failure probability ``delta`` both lie in (0, 1)."""
    _check_alpha(alpha)
    if not (isinstance(delta, numbers.Real) and 0.0 < delta < 1.0):
        raise ConfigError(f"delta {delta} is outside (0, 1): pass e.g. --delta 0.1")


def _check_losses(losses, loss_form: str) -> np.ndarray:
    if loss_form not in _BOUNDS:
        raise ConfigError(f"unknown loss form {loss_form!r}: pass 'upper' (0/1 losses) or 'signed' ({{−1, 0, 1}} losses)")
    losses = np.asarray(losses, dtype=float)
    if losses.ndim != 2 or losses.size == 0:
        raise ConfigError(
            f"calibration needs a non-empty [n, knobs] loss table, got shape {losses.shape}: give a non-empty calibration split"
        )
    low, high = _BOUNDS[loss_form]
    if not np.isfinite(losses).all() or losses.min() < low or losses.max() > high:
        hint = " (losses below 0 need loss_form='signed')" if loss_form == "upper" and losses.min() >= -1 else ""
        raise ConfigError(f"losses must lie in [{low:g}, {high:g}] for loss_form={loss_form!r}{hint}: check the loss table")
    return losses


def ltt_pvalues(losses: np.ndarray, alpha: float, loss_form: LossForm = "upper") -> list[float]:
    """Each knob's Hoeffding–Bentkus p-value for H0_j: R(λ_j) > α; ``losses`` [n, J]."""
    _check_alpha(alpha)
    losses = _check_losses(losses, loss_form)
    low, high = _BOUNDS[loss_form]
    n = losses.shape[0]
    return [hoeffding_bentkus_pvalue(float(m), n, alpha, low, high) for m in losses.mean(axis=0)]


def _reject(pvalues: list[float], delta: float, order: str) -> list[int]:
    if order == "bonferroni":
        return [j for j, p in enumerate(pvalues) if p <= delta / len(pvalues)]
    certified = []
    for j, p in enumerate(pvalues):  # safest first; stop at the first knob not rejected
        if p > delta:
            break
        certified.append(j)
    return certified


def _check_order(order: str) -> None:
    if order not in _ORDERS:
        raise ConfigError(f"unknown testing order {order!r}: pass 'fixed_sequence' or 'bonferroni'")


def learn_then_test(
    losses: np.ndarray,
    alpha: float,
    delta: float,
    order: Order = "fixed_sequence",
    loss_form: LossForm = "upper",
) -> list[int]:
    """Indices of the knobs certified to have risk ≤ α, family-wise error ≤ δ.

    ``losses`` is [n, J] with the knobs ordered safest (most escalation) first; ``fixed_sequence``
    tests in that order at level δ each and stops at the first non-rejection, ``bonferroni`` rejects
    where p ≤ δ/J.
    """
    check_calibration_request(alpha, delta)
    _check_order(order)
    return _reject(ltt_pvalues(losses, alpha, loss_form), delta, order)


def min_calibration_size(alpha: float, delta: float, loss_form: LossForm = "upper") -> int:
    """The fewest calibration inputs for which a mean loss of 0 (the policy never worse than System 2
    in the ``upper`` form; no net change in the ``signed`` form) certifies risk ≤ α at level δ."""
    check_calibration_request(alpha, delta)
    low, high = _BOUNDS[loss_form]

    def rejects(n: int) -> bool:
        return hoeffding_bentkus_pvalue(0.0, n, alpha, low, high) <= delta

    n = 1
    while not rejects(n):
        n *= 2
    below, above = n // 2, n
    while below + 1 < above:
        mid = (below + above) // 2
        below, above = (below, mid) if rejects(mid) else (mid, above)
    return above


@dataclass
class CalibrationResult:
    """What :func:`calibrate_knob` chose; ``chosen`` indexes the knob grid, ``None`` when none is certified."""

    chosen: int | None
    certified: list[int]
    pvalues: list[float]
    n: int
    alpha: float
    delta: float
    method: str = METHOD
    note: str = ""
    order: str = "fixed_sequence"
    loss_form: str = "upper"

    def to_dict(self) -> dict:
        return asdict(self)


def calibrate_knob(
    losses: np.ndarray,
    energies: np.ndarray,
    alpha: float,
    delta: float,
    order: Order = "fixed_sequence",
    loss_form: LossForm = "upper",
) -> CalibrationResult:
    """Choose the least-energy knob among those Learn-then-Test certifies.

    ``losses`` [n, J]: per calibration input and knob (safest first), the 0/1 loss
    1[policy wrong and System 2 right] (``loss_form="upper"``, the default) or the signed excess
    error 1[policy wrong] − 1[System 2 wrong] (``loss_form="signed"``); ``energies`` [J]: mean energy
    per input at each knob on the calibration split. With probability ≥ 1 − δ over the calibration
    split, the chosen knob's accuracy is at most α below System 2's.
    """
    check_calibration_request(alpha, delta)
    _check_order(order)
    losses = _check_losses(losses, loss_form)
    energies = np.asarray(energies, dtype=float)
    if energies.ndim != 1 or len(energies) != losses.shape[1] or not np.isfinite(energies).all():
        raise ConfigError(
            f"calibration needs one finite mean energy per knob ({losses.shape[1]}), got shape {energies.shape}: "
            "pass energies[j] for each loss column j"
        )
    n, knobs = losses.shape
    pvalues = ltt_pvalues(losses, alpha, loss_form)
    certified = _reject(pvalues, delta, order)
    method = method_name(order, loss_form)
    if not certified:
        level = delta / knobs if order == "bonferroni" else delta
        needed = min_calibration_size(alpha, level, loss_form)
        reason = (
            f"the calibration split ({n}) is below the {needed} inputs any certificate of this drop needs"
            if n < needed
            else "the safest knob's calibration risk is too close to the allowed drop"
        )
        return CalibrationResult(
            None,
            [],
            pvalues,
            n,
            alpha,
            delta,
            method,
            f"no knob certified: {reason}; allow a larger drop (alpha) or failure probability (delta), or use a larger calibration split",
            order,
            loss_form,
        )
    chosen = min(certified, key=lambda j: (energies[j], j))
    return CalibrationResult(chosen, certified, pvalues, n, alpha, delta, method, "", order, loss_form)
