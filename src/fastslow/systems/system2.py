"""System 2: a conventional ANN sized as a practitioner would size it for the data.

- images of at least 28×28: LeNet-5 (about 0.42 M MACs on 28×28);
- smaller images: a two-conv CNN, 16 and 32 channels (about 92 k MACs on 8×8);
- flat inputs: an MLP with one hidden layer.
Event frames [T, C, H, W] (``frames``) are first averaged over T: each pixel's share of the T bins
in which it fired, in [0, 1]; the network above is then sized for [C, H, W].
Any ``torch.nn.Module`` mapping inputs to logits can stand in from the Python API.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import nn


@dataclass(frozen=True)
class System2Spec:
    input_shape: tuple[int, ...]
    n_classes: int
    arch: Literal["auto", "lenet5", "cnn", "mlp"] = "auto"
    hidden: int = 128
    # Inputs are [T, *frame] binary event frames, averaged over T before the network.
    frames: bool = False

    @property
    def frame_shape(self) -> tuple[int, ...]:
        """What the network after the frame average takes: ``input_shape`` without T for ``frames``."""
        return tuple(self.input_shape[1:]) if self.frames else tuple(self.input_shape)

    def resolved_arch(self) -> str:
        if self.arch != "auto":
            return self.arch
        shape = self.frame_shape
        if len(shape) == 3 and min(shape[1:]) >= 28:
            return "lenet5"
        if len(shape) == 3 and min(shape[1:]) >= 4:
            return "cnn"
        return "mlp"

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(data: dict) -> "System2Spec":
        data = dict(data)
        data["input_shape"] = tuple(data["input_shape"])
        return System2Spec(**data)


class FrameMean(nn.Module):
    """Event frames [B, T, ...] → their mean over T [B, ...]: the share of the T bins in which each
    pixel fired (binary frames give values in [0, 1]). T·(frame size) additions, not counted as MACs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(1)


def build_system2(spec: System2Spec) -> nn.Module:
    """The default System 2 for ``spec`` (untrained)."""
    body = _network(spec)
    return nn.Sequential(FrameMean(), *body) if spec.frames else body


def _network(spec: System2Spec) -> nn.Sequential:
    arch = spec.resolved_arch()
    shape = spec.frame_shape
    channels, classes = shape[0], spec.n_classes
    if arch == "lenet5":
        _, height, width = shape
        flat = 16 * ((height // 2 - 4) // 2) * ((width // 2 - 4) // 2)
        return nn.Sequential(
            nn.Conv2d(channels, 6, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(flat, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, classes),
        )
    if arch == "cnn":
        _, height, width = shape
        flat = 32 * (height // 4) * (width // 4)
        return nn.Sequential(
            nn.Conv2d(channels, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(flat, 64),
            nn.ReLU(),
            nn.Linear(64, classes),
        )
    if arch == "mlp":
        features = math.prod(shape)
        return nn.Sequential(nn.Flatten(), nn.Linear(features, spec.hidden), nn.ReLU(), nn.Linear(spec.hidden, classes))
    raise ValueError(f"unknown System 2 arch {arch!r}: use auto, lenet5, cnn or mlp")
