"""Serving: answer inputs with System 1 stopping early and System 2 only where needed."""

from fastslow.serving.adaptive import AdaptiveAnswer, FastSlow
from fastslow.serving.chunks import ChunkPlanner

__all__ = ["AdaptiveAnswer", "ChunkPlanner", "FastSlow"]
