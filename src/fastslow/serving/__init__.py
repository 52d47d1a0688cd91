"""Serving: answer inputs with any deployable policy, System 1 stopping early and System 2 only where needed."""

from fastslow.serving.adaptive import Answer, FastSlow
from fastslow.serving.chunks import ChunkPlanner
from fastslow.serving.deploy import Deployment, prediction_rows

__all__ = ["Answer", "ChunkPlanner", "Deployment", "FastSlow", "prediction_rows"]
