"""System 2: a conventional ANN sized as a practitioner would size it for the data.

- images of at least 28×28: LeNet-5 (about 0.42 M MACs on 28×28);
- smaller images: a two-conv CNN, 16 and 32 channels (about 92 k MACs on 8×8);
- flat inputs: an MLP with one hidden layer;
- colour 32×32 images (3 channels): a CIFAR ResNet-18 (3×3 stem, no max-pool, four stages of two
  basic blocks, 64·2^s channels × ``width``/64; about 0.56 G MACs at width 64).
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
    arch: Literal["auto", "lenet5", "cnn", "mlp", "resnet18"] = "auto"
    hidden: int = 128
    # ResNet-18's first stage's channels (64 as published; smaller for a quick fit).
    width: int = 64
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
        if shape == (3, 32, 32):
            return "resnet18"
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
        legacy = "width" not in data  # written before ResNet-18, when "auto" gave 3×32×32 LeNet-5
        spec = System2Spec(**data)
        if legacy and spec.arch == "auto" and spec.resolved_arch() == "resnet18":
            return System2Spec(**{**data, "arch": "lenet5"})
        return spec


class FrameMean(nn.Module):
    """Event frames [B, T, ...] → their mean over T [B, ...]: the share of the T bins in which each
    pixel fired (binary frames give values in [0, 1]). T·(frame size) additions, not counted as MACs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(1)


class BasicBlock(nn.Module):
    """ResNet's basic block: conv-BN-ReLU-conv-BN, plus the input (or its 1×1 conv-BN where the
    shape changes), then ReLU. ``counts_additions``: count_macs charges its residual addition, one
    per output value."""

    counts_additions = True

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.shortcut = (
            nn.Identity()
            if stride == 1 and in_channels == out_channels
            else nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


def resnet18(in_channels: int, n_classes: int, width: int = 64) -> nn.Sequential:
    """ResNet-18 for 32×32 images (He et al. 2016, as CIFAR code uses it: a 3×3 stem without max-pool),
    with ``width`` channels in the first stage (64 as published)."""
    if width < 1:
        raise ValueError(f"ResNet-18 width must be ≥ 1, got {width}")
    layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
    channels = width
    for stage in range(4):
        out = width * 2**stage
        layers += [BasicBlock(channels, out, 2 if stage > 0 else 1), BasicBlock(out, out, 1)]
        channels = out
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, n_classes))


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
    if arch == "resnet18":
        if len(shape) != 3:
            raise ValueError(f"System 2 resnet18 needs image inputs [C, H, W], got shape {shape}")
        return resnet18(channels, classes, spec.width)
    if arch == "mlp":
        features = math.prod(shape)
        return nn.Sequential(nn.Flatten(), nn.Linear(features, spec.hidden), nn.ReLU(), nn.Linear(spec.hidden, classes))
    raise ValueError(f"unknown System 2 arch {arch!r}: use auto, lenet5, cnn, mlp or resnet18")
