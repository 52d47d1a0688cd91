"""Pareto fronts of (accuracy, cost, …) points: which results no other beats."""

from __future__ import annotations

from collections.abc import Sequence


def pareto_front(points: Sequence[Sequence[float]]) -> list[bool]:
    """Which points (accuracy, cost, …) no other point beats: at least as accurate and no costlier in
    every cost, and strictly better in one (ties are all kept)."""

    def beats(other: Sequence[float], point: Sequence[float]) -> bool:
        no_worse = other[0] >= point[0] and all(o <= p for o, p in zip(other[1:], point[1:]))
        return no_worse and (other[0] > point[0] or any(o < p for o, p in zip(other[1:], point[1:])))

    return [not any(beats(other, point) for j, other in enumerate(points) if j != i) for i, point in enumerate(points)]
