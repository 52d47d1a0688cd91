"""The deep System 1 backbones for colour images (32×32×3): VGG-style and ResNet-style.

Both are built from *units*: one LIF population each, whose input current is the sum of its
branches, each a convolution followed by batch norm (conv → BN) of a source's spikes, or, for an
identity shortcut, the source's spikes themselves. A VGG-style stage is a chain of conv-BN-LIF units
ending in a 2×2 max-pool of the spikes; a ResNet-style basic block is two units, conv-BN-LIF then
conv-BN + shortcut → LIF (the LIF after the addition, as in SEENN's and TET's ResNet-19), after a
stem of half the first stage's channels; the first block of a later stage strides by 2, and a block
that strides or widens has a 1×1 conv-BN shortcut.

Batch norm through time (as TET and SEENN use it, SpikingJelly's ``SeqToANNContainer``): a unit's
convolution and BN see all T steps of all B inputs as one [T·B, C, H, W] batch, so its statistics
are shared over time and inputs. At inference BN is a per-channel affine map that folds into the
convolution's weights and bias: it adds no operation to the count.

Operation counting, one rule for every branch: the synaptic ops a branch causes are the spikes its
source emitted × the fan-out of each (the output positions and channels a spike reaches, exact at the
borders and under strides); an identity shortcut has fan-out 1: each spike of the block's input is
one accumulate into the neuron after the addition (the residual addition, counted spike by spike).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

DEEP_ARCHS = ("vgg", "resnet")
# (channels per stage, units or basic blocks per stage): VGG-16 (five stages, 13 conv layers) and
# ResNet-19 (a 64-channel stem, then 3, 3 and 2 basic blocks), the CIFAR networks of TET and SEENN.
DEFAULT_STAGES: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "vgg": ((64, 128, 256, 512, 512), (2, 2, 3, 3, 3)),
    "resnet": ((128, 256, 512), (3, 3, 2)),
}


def conv_fanout(conv: nn.Conv2d, in_shape: tuple[int, ...]) -> torch.Tensor:
    """[H·W] synapses leaving each input position of ``conv`` (on inputs [C, H, W]): the output
    positions its kernel reaches from there (exact at borders and under strides) × output channels,
    the same for every input channel. Ungrouped, undilated, zero-padded convolutions only."""
    if conv.dilation != (1, 1) or conv.groups != 1 or isinstance(conv.padding, str):
        raise ValueError("fan-out counting supports undilated, ungrouped convolutions with numeric padding")
    height, width = in_shape[1:]
    (kh, kw), (sh, sw), (ph, pw) = conv.kernel_size, conv.stride, conv.padding
    out_h, out_w = (height + 2 * ph - kh) // sh + 1, (width + 2 * pw - kw) // sw + 1
    # The transpose of the convolution scatters each output position back onto the inputs it read;
    # output_padding extends it to the inputs' full size (rows and columns no output read get 0).
    extra = (height - ((out_h - 1) * sh - 2 * ph + kh), width - ((out_w - 1) * sw - 2 * pw + kw))
    reached = torch.zeros(height, width)
    full = F.conv_transpose2d(
        torch.ones(1, 1, out_h, out_w), torch.ones(1, 1, kh, kw), stride=(sh, sw), padding=(ph, pw), output_padding=extra
    )
    reached += full[0, 0, :height, :width]
    return (reached * conv.out_channels).flatten()


def synaptic_ops(spikes: torch.Tensor, fanout: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[N] accumulate ops that ``spikes`` [N, ...] cause through a branch with ``fanout``: a scalar
    (every spike reaches that many neurons) or one per position [H·W] of maps [N, C, H, W]."""
    if fanout.dim() == 0:
        return spikes.flatten(1).sum(1, dtype=dtype) * fanout.to(dtype)
    return torch.mv(spikes.sum(1, dtype=dtype).flatten(1), fanout.to(dtype))


class ConvBN(nn.Module):
    """A convolution without bias followed by batch norm over its whole batch ([T·B, C, H, W] when
    fed all steps of all inputs: statistics shared through time)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, padding: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(maps))


class SpikingUnit(nn.Module):
    """One LIF population of a deep System 1: current = Σ branch(source spikes), then the LIF, then
    optionally a 2×2 max-pool of its spikes.

    ``sources[i]`` is the unit whose (pooled) spikes branch i reads, -1 for the network's input;
    a branch is a :class:`ConvBN` or ``nn.Identity`` (an identity shortcut)."""

    is_conv = True  # its maps are [C, H, W]

    def __init__(self, sources: tuple[int, ...], branches: list[nn.Module], in_shapes: list[tuple[int, ...]], pool: bool):
        super().__init__()
        self.sources = tuple(sources)
        self.branches = nn.ModuleList(branches)
        self.in_shape = in_shapes[0]
        shapes = set()
        for index, (branch, shape) in enumerate(zip(branches, in_shapes)):
            if isinstance(branch, ConvBN):
                fanout = conv_fanout(branch.conv, shape)
                with torch.no_grad():
                    shapes.add(tuple(branch.conv(torch.zeros(1, *shape)).shape[1:]))
            else:
                fanout = torch.tensor(1.0)
                shapes.add(tuple(shape))
            self.register_buffer(f"fanout{index}", fanout, persistent=False)
        if len(shapes) != 1:
            raise ValueError(f"a unit's branches must give maps of one shape, got {sorted(shapes)}")
        self.out_shape = shapes.pop()
        self.pool = pool
        self.pooled_shape = (self.out_shape[0], self.out_shape[1] // 2, self.out_shape[2] // 2) if pool else self.out_shape
        self.neurons = math.prod(self.out_shape)
        first = branches[0]
        # MACs of the first branch on real-valued input (direct encoding into the first unit),
        # counting zero-padding positions as count_macs does for System 2.
        self.dense_macs = (
            self.neurons * first.conv.in_channels * math.prod(first.conv.kernel_size) if isinstance(first, ConvBN) else 0
        )

    def fanouts(self) -> list[torch.Tensor]:
        return [getattr(self, f"fanout{index}") for index in range(len(self.branches))]


def deep_units(
    arch: str, in_shape: tuple[int, ...], channels: tuple[int, ...], blocks: tuple[int, ...]
) -> tuple[list[SpikingUnit], list[int]]:
    """The units of a VGG-style or ResNet-style network on inputs ``in_shape`` [C, H, W] with
    ``channels[s]`` channels and ``blocks[s]`` units (VGG) or basic blocks (ResNet) in stage s, and
    the index of each stage's last unit (where an exit head may read). ValueError for a bad shape."""
    if arch not in DEEP_ARCHS:
        raise ValueError(f"unknown deep arch {arch!r}: use one of {', '.join(DEEP_ARCHS)}")
    if len(in_shape) != 3:
        raise ValueError(f"a {arch} System 1 needs image inputs [C, H, W], got shape {tuple(in_shape)}")
    if len(channels) != len(blocks) or not channels:
        raise ValueError(f"stage_channels and stage_blocks need one entry per stage, got {channels} and {blocks}")
    units: list[SpikingUnit] = []
    shapes: list[tuple[int, ...]] = []  # each unit's output, after its pool
    stage_ends: list[int] = []

    def add(sources: tuple[int, ...], branches: list[nn.Module], pool: bool) -> int:
        in_shapes = [tuple(in_shape) if s < 0 else shapes[s] for s in sources]
        unit = SpikingUnit(sources, branches, in_shapes, pool)
        units.append(unit)
        shapes.append(unit.pooled_shape)
        return len(units) - 1

    previous, width = -1, in_shape[0]
    if arch == "vgg":
        for stage, (out, count) in enumerate(zip(channels, blocks)):
            for k in range(count):
                size = min((tuple(in_shape) if previous < 0 else shapes[previous])[1:])
                previous = add((previous,), [ConvBN(width, out, 3, 1, 1)], pool=k == count - 1 and size >= 2)
                width = out
            stage_ends.append(previous)
        return units, stage_ends
    # The stem has half the first stage's channels (ResNet-19's 64 before 128), so the first block
    # widens through a 1×1 conv-BN shortcut, as in TET's ResNet-19.
    stem = max(1, channels[0] // 2)
    previous, width = add((-1,), [ConvBN(width, stem, 3, 1, 1)], pool=False), stem
    for stage, (out, count) in enumerate(zip(channels, blocks)):
        for k in range(count):
            stride = 2 if stage > 0 and k == 0 else 1
            inner = add((previous,), [ConvBN(width, out, 3, stride, 1)], pool=False)
            shortcut = nn.Identity() if stride == 1 and width == out else ConvBN(width, out, 1, stride, 0)
            previous = add((inner, previous), [ConvBN(out, out, 3, 1, 1), shortcut], pool=False)
            width = out
        stage_ends.append(previous)
    return units, stage_ends


def head_input(spikes: torch.Tensor) -> torch.Tensor:
    """An exit head's input from a unit's spikes [..., C, H, W]: their mean over positions [..., C]
    (global average pooling). The head is linear, so this equals a linear readout of every spike
    with weights shared over positions: each spike reaches every class once (fan-out = classes)."""
    return spikes.mean((-2, -1))
