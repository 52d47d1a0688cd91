"""bench/_stats.py against hand and scipy references."""

import importlib.util
import math
import sys
from pathlib import Path

import pytest
from scipy import stats

BENCH = Path(__file__).resolve().parents[2] / "bench"
_spec = importlib.util.spec_from_file_location("_stats", BENCH / "_stats.py")
bench_stats = importlib.util.module_from_spec(_spec)
sys.modules["_stats"] = bench_stats  # dataclasses look their module up there
_spec.loader.exec_module(bench_stats)


def test_mean_interval_matches_scipy_t_interval():
    values = [97.2, 98.1, 96.9, 98.6, 97.5]
    got = bench_stats.mean_interval(values)
    low, high = stats.t.interval(0.95, len(values) - 1, loc=sum(values) / 5, scale=stats.sem(values))
    assert got.mean == pytest.approx(97.66)
    assert (got.low, got.high) == pytest.approx((low, high))
    # Five values: t(0.975, 4) = 2.776 times sd / sqrt(5), the factor RESULTS.md states.
    sd = math.sqrt(sum((v - 97.66) ** 2 for v in values) / 4)
    assert got.half == pytest.approx(2.7764451 * sd / math.sqrt(5), rel=1e-6)


def test_one_value_has_no_interval_and_no_verdict():
    got = bench_stats.mean_interval([0.5])
    assert math.isnan(got.half) and not got.excludes_zero() and got.format(2) == "0.50"


def test_paired_difference_and_verdict():
    a, b = [1.0, 2.0, 3.0, 4.0], [0.5, 1.4, 2.6, 3.5]
    diff = bench_stats.paired_difference(a, b)
    assert diff.mean == pytest.approx(0.5) and diff.excludes_zero()
    assert bench_stats.verdict(diff, "A cheaper", "A dearer") == "A dearer"
    straddles = bench_stats.paired_difference([1.0, 2.0, 3.0], [1.5, 1.5, 3.0])
    assert bench_stats.verdict(straddles, "A cheaper", "A dearer") == "no difference"
    with pytest.raises(ValueError, match="length"):
        bench_stats.paired_difference([1.0], [1.0, 2.0])


def test_cheapest_within_picks_the_cheapest_eligible_point_of_the_families():
    strategies = [
        {"name": "system2", "family": "system2", "accuracy": 0.98, "energy_uj": 1.0},
        {"name": "confidence@0.9", "family": "confidence", "accuracy": 0.978, "energy_uj": 0.20},
        {"name": "confidence@0.5", "family": "confidence", "accuracy": 0.96, "energy_uj": 0.05},
        {"name": "seenn1@0.99+s2", "family": "seenn1+s2", "accuracy": 0.977, "energy_uj": 0.10},
        {"name": "seenn1@0.9", "family": "seenn1", "accuracy": 0.95, "energy_uj": 0.01},
        {"name": "router@steps,budget=0.2uJ", "family": "router_steps_budget", "accuracy": 0.979, "energy_uj": 0.30},
        {"name": "router@share=0.3", "family": "router", "accuracy": 0.981, "energy_uj": 0.40},
    ]
    target = bench_stats.reference(strategies)["accuracy"] - 0.003
    assert bench_stats.cheapest_within(strategies, bench_stats.THRESHOLD_FAMILIES, target)["name"] == "seenn1@0.99+s2"
    assert bench_stats.cheapest_within(strategies, bench_stats.LEARNED_FAMILIES, target)["name"] == "router@steps,budget=0.2uJ"
    assert bench_stats.cheapest_within(strategies, ("exits",), target) is None


def test_the_families_name_every_policy_family_of_a_fit(fitted_folder):
    import json

    families = {s["family"] for s in json.loads((fitted_folder / "results.json").read_text())["strategies"]}
    references = {"system1", "system2", "oracle", "aet_oracle", "random"}
    assert families - references == set(bench_stats.THRESHOLD_FAMILIES) | set(bench_stats.LEARNED_FAMILIES)


def test_learned_vs_threshold_pairs_the_seeds_where_both_reach_the_target():
    def run(router_ratio, cascade_ratio):
        s2 = {"name": "system2", "family": "system2", "accuracy": 0.98, "energy_uj": 1.0, "energy_ratio_vs_s2": 1.0}
        points = [s2]
        if router_ratio is not None:
            points.append(
                {
                    "name": "router@share=0.1",
                    "family": "router",
                    "accuracy": 0.979,
                    "energy_uj": router_ratio,
                    "energy_ratio_vs_s2": router_ratio,
                }
            )
        points.append(
            {
                "name": "seenn1@0.99+s2",
                "family": "seenn1+s2",
                "accuracy": 0.978,
                "energy_uj": cascade_ratio,
                "energy_ratio_vs_s2": cascade_ratio,
            }
        )
        return points

    runs = [run(0.30, 0.10), run(0.25, 0.12), run(None, 0.11), run(0.20, 0.10)]
    got = bench_stats.learned_vs_threshold(runs, within=0.003)
    assert got.learned[2] is None and got.threshold[2]["name"] == "seenn1@0.99+s2"
    reference = bench_stats.paired_difference([0.30, 0.25, 0.20], [0.10, 0.12, 0.10])
    assert got.difference == reference and got.difference.n == 3
    assert "over 3 of 4 seeds" in got.line(0.003) and "the router is dearer" in got.line(0.003)
    assert "too few" in bench_stats.learned_vs_threshold(runs[2:], 0.003).line(0.003)
