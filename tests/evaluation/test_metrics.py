"""RouteLLM metrics (APGR, CPT) against hand-computed values."""

import pytest

from fastslow.evaluation import routing_metrics


def test_apgr_and_cpt_on_a_linear_curve():
    # a_S1 = 0.8, a_S2 = 0.9; accuracy rises linearly with rate: PGR(r) = r.
    points = [(r / 10, 0.8 + 0.01 * r) for r in range(11)]
    m = routing_metrics(points, 0.8, 0.9)
    assert m.apgr == pytest.approx(0.5)
    assert m.cpt50 == pytest.approx(0.5)
    assert m.cpt80 == pytest.approx(0.8)


def test_flat_extension_to_the_ends_and_interpolated_cpt():
    # Points at r = 0.2 (PGR 0.4) and r = 0.6 (PGR 1.0); flat outside.
    m = routing_metrics([(0.2, 0.84), (0.6, 0.9)], 0.8, 0.9)
    expected_area = 0.2 * 0.4 + 0.4 * (0.4 + 1.0) / 2 + 0.4 * 1.0
    assert m.apgr == pytest.approx(expected_area)
    # PGR 0.5 reached between 0.2 and 0.6: 0.2 + (0.1/0.6)·0.4.
    assert m.cpt50 == pytest.approx(0.2 + 0.4 / 6)
    assert m.cpt80 == pytest.approx(0.2 + 0.4 * 0.4 / 0.6)


def test_cpt_none_when_never_reached():
    m = routing_metrics([(0.1, 0.81), (0.5, 0.83)], 0.8, 0.9)
    assert m.cpt50 is None and m.cpt80 is None


def test_undefined_when_system2_is_not_better():
    m = routing_metrics([(0.5, 0.9)], 0.9, 0.88)
    assert m.apgr is None and m.cpt50 is None
    assert "undefined" in m.note


def test_a_family_that_never_escalates_has_no_routing_metrics():
    m = routing_metrics([(0.0, 0.90), (0.0, 0.96)], 0.95, 0.97)
    assert m.apgr is None and m.cpt50 is None and m.cpt80 is None and "never escalates" in m.note


def test_a_sweep_over_a_narrow_rate_range_says_it_was_extended():
    m = routing_metrics([(0.01, 0.85)], 0.95, 0.97)
    assert m.apgr == pytest.approx(-5.0) and "0.01 only" in m.note
    assert routing_metrics([(r / 10, 0.8 + 0.01 * r) for r in range(11)], 0.8, 0.9).note == ""


def test_pareto_front_of_accuracy_and_energy_keeps_ties_and_drops_the_beaten():
    from fastslow.pareto import pareto_front

    points = [(0.975, 0.098), (0.969, 0.115), (0.98, 0.2), (0.975, 0.098), (0.90, 0.05)]
    assert pareto_front(points) == [True, False, True, True, True]
