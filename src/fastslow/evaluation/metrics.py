"""Routing metrics after RouteLLM (Ong et al. 2024), over a family's sweep.

PGR(r) = (a(r) − a_S1) / (a_S2 − a_S1); APGR = mean of PGR over r ∈ [0, 1]
(trapezoid over the swept points, flat to the ends); CPT(x) = smallest r whose
PGR reaches x, interpolated. Undefined (None, with a reason) when a_S2 ≤ a_S1 or when the
family never escalates (every point at r = 0: there is no curve over r to average).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RoutingMetrics:
    apgr: float | None
    cpt50: float | None
    cpt80: float | None
    note: str = ""

    def to_dict(self) -> dict:
        return {"APGR": self.apgr, "CPT(50%)": self.cpt50, "CPT(80%)": self.cpt80, "note": self.note}


def routing_metrics(points: list[tuple[float, float]], acc_s1: float, acc_s2: float) -> RoutingMetrics:
    """Metrics from ``points`` = [(escalation rate, accuracy), ...] of one family's sweep."""
    if acc_s2 <= acc_s1:
        return RoutingMetrics(
            None, None, None, f"undefined: System 2 accuracy ({acc_s2:.4f}) is not above System 1's ({acc_s1:.4f})"
        )
    if not points:
        return RoutingMetrics(None, None, None, "undefined: no swept points")
    widest = max(rate for rate, _ in points)
    if widest == 0:
        return RoutingMetrics(None, None, None, "undefined: this family never escalates to System 2 (every point at rate 0)")
    gap = acc_s2 - acc_s1
    curve = sorted((rate, (acc - acc_s1) / gap) for rate, acc in points)
    # Flat extension to r = 0 and r = 1, then the trapezoid rule.
    extended = [(0.0, curve[0][1])] + curve + [(1.0, curve[-1][1])]
    area = sum((r1 - r0) * (g0 + g1) / 2 for (r0, g0), (r1, g1) in zip(extended, extended[1:]))
    # Flat beyond the widest point is an assumption, not a measurement: say so when it covers most of [0, 1].
    note = "" if widest >= 0.5 else f"points reach escalation rate {widest:.3g} only; APGR extends them flat to 1"
    return RoutingMetrics(apgr=area, cpt50=_cpt(curve, 0.5), cpt80=_cpt(curve, 0.8), note=note)


def _cpt(curve: list[tuple[float, float]], target: float) -> float | None:
    previous = None
    for rate, pgr in curve:
        if pgr >= target:
            if previous is None or previous[1] >= target:
                return rate
            r0, g0 = previous
            return r0 + (target - g0) * (rate - r0) / (pgr - g0)
        previous = (rate, pgr)
    return None
