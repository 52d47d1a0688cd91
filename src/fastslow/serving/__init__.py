"""Serving: answer inputs with any deployable policy, System 1 stopping early and System 2 only where needed."""

from fastslow.serving.adaptive import Answer, FastSlow
from fastslow.serving.chunks import ChunkPlanner
from fastslow.serving.deploy import Deployment, prediction_rows
from fastslow.serving.escalation import LocalSystem2, S2Reply, System2Endpoint
from fastslow.serving.remote import CircuitBreaker, RemoteSystem2, System2Identity

__all__ = [
    "Answer",
    "ChunkPlanner",
    "CircuitBreaker",
    "Deployment",
    "FastSlow",
    "LocalSystem2",
    "RemoteSystem2",
    "S2Reply",
    "System2Endpoint",
    "System2Identity",
    "prediction_rows",
]
