"""Policies: who answers each input (which System 1 exit, or System 2)."""

from fastslow.policies.base import Routing
from fastslow.policies.confidence import CONFIDENCE_MEASURES, confidence_routing, confidence_score
from fastslow.policies.references import oracle_routing, random_routing
from fastslow.policies.router import Router, router_features, router_loss, share_for_energy_budget, train_router

__all__ = [
    "CONFIDENCE_MEASURES",
    "Router",
    "Routing",
    "confidence_routing",
    "confidence_score",
    "oracle_routing",
    "random_routing",
    "router_features",
    "router_loss",
    "share_for_energy_budget",
    "train_router",
]
