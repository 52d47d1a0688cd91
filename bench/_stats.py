"""Shared by the benchmarks: intervals over seeds, paired differences, and the honest rival.

Every A-vs-B claim in ``bench/RESULTS.md`` is a paired difference over the same seeds (the same
split and training for A and B), reported as a mean and a 95% interval (Student t with n − 1
degrees of freedom); an interval that contains zero reads "no difference".

A learned router is compared with the best *threshold cascade*: the cheapest point, on the same
seed, of the families that stop or escalate by a fixed threshold (confidence, SEENN-I, exits,
pondering, each with System 2 behind it) at the same accuracy target, not with a policy that
runs every step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from scipy import stats

# Families by what decides: a fixed threshold on System 1's own signal, or a learned network. The
# names are results.json's ``family`` (a cascade with System 2 behind it is ``seenn1+s2``; a router
# of an energy budget ``router_steps_budget``).
THRESHOLD_FAMILIES = ("confidence", "seenn1", "seenn1+s2", "exits", "exits+s2", "ponder", "ponder+s2")
LEARNED_FAMILIES = (
    "router",
    "router_exits",
    "router_exits_budget",
    "router_steps",
    "router_steps_budget",
    "seenn2",
)


@dataclass(frozen=True)
class Interval:
    """A mean over n values and the half-width of its two-sided ``level`` t interval."""

    mean: float
    half: float
    n: int
    level: float = 0.95

    @property
    def low(self) -> float:
        return self.mean - self.half

    @property
    def high(self) -> float:
        return self.mean + self.half

    def excludes_zero(self) -> bool:
        return self.n > 1 and (self.low > 0 or self.high < 0)

    def format(self, digits: int = 2, scale: float = 1.0, signed: bool = False) -> str:
        """``mean ± half`` (the half-width ``nan`` when n = 1), both times ``scale``."""
        sign = "+" if signed else ""
        mean = f"{self.mean * scale:{sign}.{digits}f}"
        return mean if self.n < 2 else f"{mean} ± {self.half * scale:.{digits}f}"


def mean_interval(values: Iterable[float], level: float = 0.95) -> Interval:
    """Mean and t-interval half-width of ``values`` (half-width nan for one value)."""
    xs = [float(v) for v in values]
    if not xs:
        raise ValueError("no values")
    n = len(xs)
    mean = sum(xs) / n
    if n < 2:
        return Interval(mean, math.nan, n, level)
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    return Interval(mean, float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n), n, level)


def paired_difference(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Interval:
    """The mean of a_i − b_i over paired seeds, with its t interval."""
    if len(a) != len(b):
        raise ValueError(f"paired values differ in length: {len(a)} and {len(b)}")
    return mean_interval([x - y for x, y in zip(a, b, strict=True)], level)


def verdict(difference: Interval, lower_is: str, higher_is: str) -> str:
    """``lower_is`` / ``higher_is`` when the interval excludes zero, else "no difference"."""
    if not difference.excludes_zero():
        return "no difference"
    return lower_is if difference.high < 0 else higher_is


def cheapest_within(strategies: Iterable[dict], families: Sequence[str], min_accuracy: float) -> dict | None:
    """The cheapest (``energy_uj``) strategy of ``families`` with accuracy ≥ ``min_accuracy``
    (fractions, as in results.json's ``strategies``), or None where none reaches it."""
    eligible = [s for s in strategies if s["family"] in families and s["accuracy"] >= min_accuracy - 1e-12]
    return min(eligible, key=lambda s: (s["energy_uj"], s["name"])) if eligible else None


def reference(strategies: Iterable[dict], name: str = "system2") -> dict:
    """The strategy named ``name`` (a reference such as ``system2``)."""
    for strategy in strategies:
        if strategy["name"] == name:
            return strategy
    raise KeyError(f"no strategy {name!r} in the results")


@dataclass(frozen=True)
class RivalComparison:
    """Per seed, the cheapest learned point and the cheapest threshold cascade within the accuracy
    target (None where none reaches it), and the paired learned − threshold difference of their
    energy as a ratio to System 2's, over the seeds where both reach it (None under two seeds)."""

    learned: list[dict | None]
    threshold: list[dict | None]
    difference: Interval | None

    def line(self, within: float) -> str:
        """One sentence: the paired difference, its verdict, and on how many seeds both reached."""
        n = len(self.learned)
        both = sum(1 for a, b in zip(self.learned, self.threshold, strict=True) if a and b)
        head = f"learned router − best threshold cascade (cheapest within {100 * within:g} pt of System 2, × S2 energy)"
        if self.difference is None:
            return f"{head}: both reach the target on {both} of {n} seeds, too few for an interval"
        said = verdict(self.difference, "the router is cheaper", "the router is dearer")
        return f"{head}: {self.difference.format(3, signed=True)} over {both} of {n} seeds — {said}"


def learned_vs_threshold(runs: Sequence[Sequence[dict]], within: float) -> RivalComparison:
    """:class:`RivalComparison` over ``runs`` (each a seed's results.json ``strategies``)."""
    learned, threshold, pairs = [], [], []
    for strategies in runs:
        target = reference(strategies)["accuracy"] - within
        a, b = cheapest_within(strategies, LEARNED_FAMILIES, target), cheapest_within(strategies, THRESHOLD_FAMILIES, target)
        learned.append(a)
        threshold.append(b)
        if a and b:
            pairs.append((a["energy_ratio_vs_s2"], b["energy_ratio_vs_s2"]))
    difference = paired_difference(*zip(*pairs, strict=True)) if len(pairs) >= 2 else None
    return RivalComparison(learned, threshold, difference)
