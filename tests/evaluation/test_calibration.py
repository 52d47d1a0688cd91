"""Learn-then-Test: valid p-values, and the guarantee holding over repeated calibration draws."""

import math

import numpy as np
import pytest

from fastslow.errors import ConfigError
from fastslow.evaluation.calibration import calibrate_knob, hoeffding_bentkus_pvalue, min_calibration_size


def test_pvalue_small_below_alpha_large_above():
    assert hoeffding_bentkus_pvalue(0.001, 5000, 0.01) < 1e-6
    assert hoeffding_bentkus_pvalue(0.02, 5000, 0.01) == pytest.approx(1.0)
    assert hoeffding_bentkus_pvalue(0.005, 2000, 0.01) < hoeffding_bentkus_pvalue(0.005, 500, 0.01)


def test_zero_losses_need_a_minimum_sample():
    # With no losses observed the Hoeffding p-value is exp(−n·KL(0‖α)) = (1 − α)^n (the Bentkus
    # one is e times that), so certification needs n ≥ ln(1/δ)/−ln(1−α).
    n = min_calibration_size(0.01, 0.1)
    assert n == math.ceil(math.log(1 / 0.1) / -math.log(1 - 0.01))


def _population(size: int, rng):
    """System 2 right 98%; System 1's confidence predicts its correctness; knobs = thresholds."""
    s2_right = rng.random(size) < 0.98
    confidence = rng.random(size)
    s1_right = rng.random(size) < 0.6 + 0.4 * confidence
    thresholds = np.linspace(1.0, 0.0, 21)  # safest (escalate everything) first
    escalate = confidence[:, None] < thresholds[None, :]
    policy_right = np.where(escalate, s2_right[:, None], s1_right[:, None])
    losses = (~policy_right & s2_right[:, None]).astype(float)
    risk = s2_right[:, None].astype(float) - policy_right  # per-input accuracy lost vs System 2
    energy = 0.1 + escalate.astype(float)  # System 1 costs 0.1, System 2 1.0
    return losses, risk, energy


def test_guarantee_holds_over_repeated_calibration_splits():
    rng = np.random.default_rng(0)
    losses, risk, energy = _population(40_000, rng)
    alpha, delta, repeats, n_cal = 0.01, 0.1, 300, 1000
    population_risk = risk.mean(0)
    violations, informative = 0, 0
    for _ in range(repeats):
        cal = rng.choice(len(losses), n_cal, replace=False)
        result = calibrate_knob(losses[cal], energy[cal].mean(0), alpha, delta)
        if result.chosen is None:
            continue
        violations += population_risk[result.chosen] > alpha
        informative += result.chosen > 0 and energy[:, result.chosen].mean() < energy[:, 0].mean()
    assert violations / repeats <= delta + 3 * math.sqrt(delta * (1 - delta) / repeats)
    assert informative >= 0.9 * repeats  # not vacuous: it saves energy against always escalating


@pytest.mark.parametrize("alpha, delta", [(0.0, 0.1), (1.0, 0.1), (0.01, 0.0), (0.01, 1.5)])
def test_bad_alpha_or_delta_is_a_config_error(alpha, delta):
    with pytest.raises(ConfigError):
        calibrate_knob(np.zeros((10, 2)), np.zeros(2), alpha, delta)
