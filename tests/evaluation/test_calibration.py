"""Learn-then-Test: valid p-values, the testing procedures, and the guarantee over repeated calibration draws."""

import math

import numpy as np
import pytest

from fastslow.errors import ConfigError
from fastslow.evaluation.calibration import (
    METHOD,
    calibrate_knob,
    hoeffding_bentkus_pvalue,
    learn_then_test,
    min_calibration_size,
)

# --- p-values -------------------------------------------------------------------------------------


def test_pvalue_small_far_below_alpha_and_one_above():
    assert hoeffding_bentkus_pvalue(0.001, 5000, 0.01) < 1e-6
    assert hoeffding_bentkus_pvalue(0.02, 5000, 0.01) == 1.0
    assert hoeffding_bentkus_pvalue(0.01, 5000, 0.01) == 1.0
    assert 0.5 < hoeffding_bentkus_pvalue(0.0099, 5000, 0.01) <= 1.0


def test_pvalue_decreases_with_n():
    pvalues = [hoeffding_bentkus_pvalue(0.005, n, 0.01) for n in (100, 200, 500, 1000, 2000, 5000, 10_000)]
    assert all(a >= b for a, b in zip(pvalues, pvalues[1:]))
    assert pvalues[0] > 0.5 and pvalues[-1] < 1e-3


@pytest.mark.parametrize("n, alpha", [(50, 0.1), (500, 0.01), (2000, 0.005)])
def test_pvalue_is_super_uniform_at_the_null_boundary(n, alpha):
    # Worst case of H0: R > α is R = α. With 0/1 losses the sum is Binomial(n, α); P(p ≤ u) is exact.
    k = np.arange(n + 1)
    log_pmf = np.array([math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) for i in k])
    pmf = np.exp(log_pmf + k * math.log(alpha) + (n - k) * math.log1p(-alpha))
    pvalues = np.array([hoeffding_bentkus_pvalue(i / n, n, alpha) for i in k])
    for u in (0.01, 0.05, 0.1, 0.2, 0.5):
        assert pmf[pvalues <= u].sum() <= u


def test_signed_pvalue_is_super_uniform_at_the_null_boundary():
    # {−1, 0, 1} losses with P(+1) = 0.05, P(−1) = 0.03: R = 0.02 = α. Exact over the trinomial.
    n, alpha, up, down = 150, 0.02, 0.05, 0.03
    logf = [math.lgamma(i + 1) for i in range(n + 1)]
    prob = {}
    for a in range(n + 1):  # a losses of +1, b of −1
        for b in range(n + 1 - a):
            log_p = (
                logf[n]
                - logf[a]
                - logf[b]
                - logf[n - a - b]
                + a * math.log(up)
                + b * math.log(down)
                + (n - a - b) * math.log(1 - up - down)
            )
            p = hoeffding_bentkus_pvalue((a - b) / n, n, alpha, -1.0, 1.0)
            prob[p] = prob.get(p, 0.0) + math.exp(log_p)
    for u in (0.05, 0.1, 0.2, 0.5):
        assert sum(q for p, q in prob.items() if p <= u) <= u


def test_zero_losses_need_a_minimum_sample():
    # With no losses the Hoeffding p-value is exp(−n·h(0, α)) = (1 − α)^n (the Bentkus one is e times
    # that), so certification needs n ≥ ln(1/δ)/−ln(1 − α).
    assert min_calibration_size(0.01, 0.1) == math.ceil(math.log(1 / 0.1) / -math.log(1 - 0.01))
    # the signed form needs two orders of magnitude more
    assert min_calibration_size(0.01, 0.1, "signed") > 100 * min_calibration_size(0.01, 0.1)


# --- multiple testing -----------------------------------------------------------------------------


def _table(rates, n=2000):
    """A [n, J] 0/1 loss table whose column j has exactly round(rates[j]·n) losses."""
    out = np.zeros((n, len(rates)))
    for j, r in enumerate(rates):
        out[: round(r * n), j] = 1.0
    return out


def test_fixed_sequence_stops_at_the_first_non_rejection():
    losses = _table([0.0, 0.002, 0.02, 0.001, 0.0])  # knob 2 is above α; 3 and 4 are fine alone
    assert learn_then_test(losses, 0.01, 0.1) == [0, 1]
    assert learn_then_test(losses, 0.01, 0.1, order="bonferroni") == [0, 1, 3, 4]


def test_bonferroni_uses_delta_over_j():
    n, alpha, delta = 2000, 0.01, 0.1
    k = next(
        k
        for k in range(20, 0, -1)  # a loss count whose p-value lies in (δ/J, δ]
        if delta / 2 < hoeffding_bentkus_pvalue(k / n, n, alpha) <= delta
    )
    losses = _table([k / n, k / n], n)
    assert learn_then_test(losses, alpha, delta) == [0, 1]
    assert learn_then_test(losses, alpha, delta, order="bonferroni") == []


def test_calibrate_picks_the_least_energy_certified_knob():
    losses = _table([0.0, 0.001, 0.003, 0.05])
    result = calibrate_knob(losses, np.array([1.0, 0.6, 0.7, 0.1]), 0.01, 0.1)
    assert result.certified == [0, 1, 2] and result.chosen == 1
    assert result.method == METHOD and result.n == 2000 and len(result.pvalues) == 4
    assert result.to_dict()["chosen"] == 1


def test_nothing_certified_says_why():
    result = calibrate_knob(np.zeros((100, 3)), np.ones(3), 0.01, 0.1)
    assert result.chosen is None and result.certified == []
    assert "no knob certified" in result.note and "230" in result.note  # min_calibration_size(0.01, 0.1)


# --- the guarantee --------------------------------------------------------------------------------


def _population(size: int, rng):
    """Synthetic inputs: a latent difficulty drives System 1's confidence and both systems' errors.

    System 2 is right ≈ 98%, System 1 ≈ 83%; knob j escalates to System 2 when confidence < t_j,
    thresholds from 1 (always escalate, safest) down. Returns per input and knob the 0/1 loss
    1[policy wrong, System 2 right], the signed loss 1[policy wrong] − 1[System 2 wrong], and energy.
    """
    hard = rng.random(size)
    confidence = 1.0 / (1.0 + np.exp(-(4.0 * (0.5 - hard) + 0.6 * rng.standard_normal(size))))  # in (0, 1)
    s1_right = rng.random(size) < 1.0 - 0.5 * hard**2
    s2_right = rng.random(size) < 1.0 - 0.06 * hard**2
    thresholds = np.linspace(1.0, 0.05, 20)
    escalate = confidence[:, None] < thresholds[None, :]
    policy_right = np.where(escalate, s2_right[:, None], s1_right[:, None])
    upper = (~policy_right & s2_right[:, None]).astype(float)
    signed = (~policy_right).astype(float) - (~s2_right[:, None]).astype(float)
    energy = 0.1 + escalate.astype(float)  # System 1 costs 0.1, System 2 another 1.0
    return upper, signed, energy


def test_guarantee_holds_over_repeated_calibration_splits():
    rng = np.random.default_rng(0)
    upper, signed, energy = _population(20_000, rng)
    alpha, delta, repeats, n_cal, n_test = 0.01, 0.1, 400, 1000, 5000
    population_risk = signed.mean(0)  # acc_S2 − acc_policy over the population, per knob
    assert population_risk[0] == 0.0 and population_risk[-1] > 5 * alpha  # knob 0 is System 2 itself
    always_s2_energy = energy[:, 0].mean()
    violations = test_violations = naive_violations = informative = 0
    for _ in range(repeats):
        order = rng.permutation(len(upper))
        cal, test = order[:n_cal], order[n_cal : n_cal + n_test]  # disjoint splits
        cal_energy = energy[cal].mean(0)
        result = calibrate_knob(upper[cal], cal_energy, alpha, delta)
        # negative control: "cheapest knob whose calibration risk is ≤ α", no certificate
        ok = np.flatnonzero(signed[cal].mean(0) <= alpha)
        naive_violations += population_risk[ok[np.argmin(cal_energy[ok])]] > alpha
        if result.chosen is None:
            continue
        j = result.chosen
        violations += population_risk[j] > alpha
        test_violations += signed[test, j].mean() > alpha
        informative += j > 0 and energy[:, j].mean() < always_s2_energy
    bound = delta + 3 * math.sqrt(delta * (1 - delta) / repeats)
    print(
        f"LTT violation rate: population {violations / repeats:.4f}, test split {test_violations / repeats:.4f}; "
        f"uncertified choice {naive_violations / repeats:.4f}; informative {informative / repeats:.3f}"
    )
    assert violations / repeats <= bound
    assert test_violations / repeats <= bound
    assert naive_violations / repeats > bound  # the simulation can see a violation when there is one
    assert informative >= 0.9 * repeats  # not vacuous: it saves energy against always escalating


def test_signed_form_is_valid_but_looser():
    rng = np.random.default_rng(1)
    upper, signed, energy = _population(20_000, rng)
    cal = rng.choice(len(upper), 1000, replace=False)
    tight = calibrate_knob(upper[cal], energy[cal].mean(0), 0.01, 0.1)
    loose = calibrate_knob(signed[cal], energy[cal].mean(0), 0.01, 0.1, loss_form="signed")
    assert tight.chosen is not None and tight.chosen > 0
    assert loose.chosen is None and "no knob certified" in loose.note and "[−1, 1]" in loose.method
    # with enough inputs (≥ min_calibration_size(0.01, 0.1, "signed") ≈ 32,000) the safe end is certified
    big = calibrate_knob(np.tile(signed, (2, 1)), energy.mean(0), 0.01, 0.1, loss_form="signed")
    assert big.certified[:1] == [0]


# --- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha, delta", [(0.0, 0.1), (1.0, 0.1), (-0.1, 0.1), (0.01, 0.0), (0.01, 1.5), (float("nan"), 0.1)])
def test_bad_alpha_or_delta_is_a_config_error(alpha, delta):
    with pytest.raises(ConfigError):
        calibrate_knob(np.zeros((10, 2)), np.zeros(2), alpha, delta)
    with pytest.raises(ConfigError):
        learn_then_test(np.zeros((10, 2)), alpha, delta)


@pytest.mark.parametrize(
    "losses, energies, kwargs, words",
    [
        (np.zeros(10), np.zeros(1), {}, "non-empty"),
        (np.zeros((0, 2)), np.zeros(2), {}, "non-empty"),
        (np.zeros((10, 2)), np.zeros(3), {}, "energy"),
        (-np.ones((10, 2)), np.zeros(2), {}, "signed"),
        (np.zeros((10, 2)), np.zeros(2), {"order": "holm"}, "order"),
        (np.zeros((10, 2)), np.zeros(2), {"loss_form": "abs"}, "loss form"),
    ],
)
def test_bad_tables_are_config_errors(losses, energies, kwargs, words):
    with pytest.raises(ConfigError, match=words) as err:
        calibrate_knob(losses, energies, 0.01, 0.1, **kwargs)
    assert "\n" not in str(err.value) and ":" in str(err.value)
