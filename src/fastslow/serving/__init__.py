"""Serving: answer inputs with System 1 stopping early and System 2 only where needed."""

from fastslow.serving.adaptive import AdaptiveAnswer, FastSlow

__all__ = ["AdaptiveAnswer", "FastSlow"]
