"""Evaluation: strategies over recorded outputs, routing metrics, and the report."""

from fastslow.evaluation.evaluate import (
    StrategyResult,
    best_within,
    collect_outputs,
    evaluate_strategies,
    family_metrics,
    score_routing,
)
from fastslow.evaluation.metrics import RoutingMetrics, routing_metrics

__all__ = [
    "RoutingMetrics",
    "StrategyResult",
    "best_within",
    "collect_outputs",
    "evaluate_strategies",
    "family_metrics",
    "routing_metrics",
    "score_routing",
]
