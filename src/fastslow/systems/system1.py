"""System 1: a spiking network run step by step for up to T timesteps.

Every run records, per timestep, the cumulative output of each exit and the
operations each component actually performed (from the real spike tensors), so
a policy can stop at any (exit, t) and the energy model can charge exactly what ran.

Components are the backbone layers (synaptic op → LIF [→ max-pool]) followed by
the exit heads (a linear readout of a hidden layer's spikes into a
non-leaking integrator). The last exit is the network's final readout.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from fastslow.spiking import LIFParams, LIFState, encode_step, is_spiking
from fastslow.spiking.backends import (
    BACKEND_CHOICES,
    Backend,
    BackendChoice,
    MLPWeights,
    check_backend_choice,
    fused_lif_multistep,
    fused_lif_multistep_pooled,
    mlp_inference,
    mlp_weights,
    select_backend,
)
from fastslow.spiking.lif import check_params
from fastslow.spiking.synapses import EVENT_DENSITY, conv_channels_last, spike_linear
from fastslow.systems.deep import DEEP_ARCHS, DEFAULT_STAGES, conv_fanout, deep_units, head_input
from fastslow.systems.deep import synaptic_ops as branch_synaptic_ops
from fastslow.systems.records import S1Record

ReadoutName = Literal["membrane", "spike_count"]
# Spike-count readout: logits are (spike count / t) × this scale, so a softmax over
# rates in [0, 1] is not flat; fixed, not learned, so the rate stays the answer.
SPIKE_COUNT_SCALE = 10.0
# Multi-step simulation runs as many timesteps at once as keep its largest layer tensor below this.
MULTISTEP_CHUNK_BYTES = 32 * 2**20


def doubling_chunks(timesteps: int) -> list[int]:
    """Step counts 1, 1, 2, 4, … (each as many steps as ran before it, the last cut to end at
    ``timesteps``): how inference with early stopping advances System 1 on a CPU. Inputs leave the
    batch between chunks; an input that stops inside a chunk has run at most as many extra steps as
    it needed, while the number of calls grows with log T instead of T."""
    chunks, done = [], 0
    while done < timesteps:
        chunks.append(min(max(done, 1), timesteps - done))
        done += chunks[-1]
    return chunks


@dataclass(frozen=True)
class System1Spec:
    """Everything needed to rebuild a System 1 (stored beside its weights).

    ``arch``: "mlp" (``hidden``), "conv" (``conv_channels`` then ``hidden``), or a deep network for
    colour images (see :mod:`fastslow.systems.deep`): "vgg" or "resnet", sized by ``stage_channels``
    and ``stage_blocks`` (empty: VGG-16 / ResNet-19), which ignore ``hidden`` and ``conv_channels``
    and take ``exit_heads`` as *stage* indices (an exit after that stage)."""

    input_shape: tuple[int, ...]
    n_classes: int
    arch: Literal["mlp", "conv", "vgg", "resnet"] = "mlp"
    hidden: tuple[int, ...] = (128,)
    conv_channels: tuple[int, ...] = (8, 16)
    # Deep archs: channels and units (VGG) or basic blocks (ResNet) per stage; () = the arch's default.
    stage_channels: tuple[int, ...] = ()
    stage_blocks: tuple[int, ...] = ()
    timesteps: int = 8
    # "events": inputs are [T, *frame] spike frames (event-camera data), frame t fed at step t.
    encoding: Literal["direct", "rate", "latency", "events"] = "rate"
    readout: ReadoutName = "membrane"
    lif: LIFParams = field(default_factory=LIFParams)
    exit_heads: tuple[int, ...] = ()
    # Linear layers fed by inputs with at most this share of non-zeros sum only the active
    # synapses (event-driven, CPU); 0 makes every layer a dense matmul. Same results either way.
    event_density: float = EVENT_DENSITY
    # Training memory: 0 keeps every step's activations for BPTT; k > 0 keeps only the state every
    # k steps and recomputes each k-step segment in the backward pass (gradient checkpointing over
    # time): the same gradients, activation memory ∝ k instead of T, one more forward pass.
    checkpoint_steps: int = 0
    # Which kernels run the LIF layers (see fastslow.spiking.backends): "auto" picks per call by device,
    # dtype and gradient; a named one runs or raises.
    backend: BackendChoice = "auto"

    def __post_init__(self) -> None:
        def integer(value, minimum: int) -> bool:
            return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= minimum

        for name, values in (
            ("input_shape", tuple(self.input_shape)),
            ("hidden", tuple(self.hidden)),
            ("conv_channels", tuple(self.conv_channels)),
            ("stage_channels", tuple(self.stage_channels)),
            ("stage_blocks", tuple(self.stage_blocks)),
        ):
            if not all(integer(v, 1) for v in values) or (name == "input_shape" and not values):
                raise ValueError(
                    f"System1Spec.{name} must be {'a non-empty tuple of ' if name == 'input_shape' else ''}positive integers, got {values!r}"
                )
        if not all(integer(h, 0) for h in self.exit_heads):
            raise ValueError(f"System1Spec.exit_heads must be hidden-layer indices (integers ≥ 0), got {self.exit_heads!r}")
        checks = [
            (integer(self.n_classes, 2), f"n_classes must be an integer ≥ 2, got {self.n_classes!r}"),
            (self.arch in ("mlp", "conv", *DEEP_ARCHS), f"unknown arch {self.arch!r}: use 'mlp', 'conv', 'vgg' or 'resnet'"),
            (
                self.arch in DEEP_ARCHS or not self.stage_channels and not self.stage_blocks,
                f"stage_channels and stage_blocks size the 'vgg' and 'resnet' archs, not {self.arch!r}",
            ),
            (
                self.arch not in DEEP_ARCHS or len(self.stages[0]) == len(self.stages[1]),
                f"stage_channels and stage_blocks need one entry per stage, got {tuple(self.stage_channels)} and {tuple(self.stage_blocks)}",
            ),
            (
                self.arch not in DEEP_ARCHS or self.checkpoint_steps == 0,
                "checkpoint_steps must be 0 for the 'vgg' and 'resnet' archs: their batch norm takes its statistics over all T steps at once",
            ),
            (integer(self.timesteps, 1), f"timesteps must be an integer ≥ 1, got {self.timesteps!r}"),
            (
                self.encoding in ("direct", "rate", "latency", "events"),
                f"unknown encoding {self.encoding!r}: use 'direct', 'rate', 'latency' or 'events'",
            ),
            (
                self.encoding != "events" or len(self.input_shape) >= 2 and self.input_shape[0] == self.timesteps,
                f"encoding 'events' takes inputs [T, *frame] with T = timesteps ({self.timesteps}), got input_shape {tuple(self.input_shape)}",
            ),
            (self.readout in ("membrane", "spike_count"), f"unknown readout {self.readout!r}: use 'membrane' or 'spike_count'"),
            (
                0.0 <= self.event_density <= 1.0,
                f"event_density must lie in [0, 1] (a share of active inputs), got {self.event_density!r}",
            ),
            (
                integer(self.checkpoint_steps, 0),
                f"checkpoint_steps must be an integer ≥ 0 (0: plain BPTT), got {self.checkpoint_steps!r}",
            ),
            (
                self.backend in BACKEND_CHOICES,
                f"unknown backend {self.backend!r}: use one of {', '.join(map(repr, BACKEND_CHOICES))}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        check_params(self.lif)

    @property
    def stages(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """A deep arch's (channels, blocks) per stage, the arch's defaults where not given."""
        channels, blocks = DEFAULT_STAGES.get(self.arch, ((), ()))
        return tuple(self.stage_channels) or channels, tuple(self.stage_blocks) or blocks

    @property
    def frame_shape(self) -> tuple[int, ...]:
        """What layer 0 takes at one step: ``input_shape`` without its time axis for ``events``, else all of it."""
        return tuple(self.input_shape[1:]) if self.encoding == "events" else tuple(self.input_shape)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["lif"] = self.lif._asdict()
        return data

    @staticmethod
    def from_dict(data: dict) -> "System1Spec":
        data = dict(data)
        data["lif"] = LIFParams(**data["lif"])
        for key in ("input_shape", "hidden", "conv_channels", "exit_heads"):
            data[key] = tuple(data[key])
        for key in ("stage_channels", "stage_blocks"):  # absent from checkpoints written before the deep archs
            data[key] = tuple(data.get(key, ()))
        return System1Spec(**data)


class _Layer(nn.Module):
    """A backbone layer: synaptic op → LIF, then optional 2×2 max-pool of the spikes."""

    def __init__(self, op: nn.Module, in_shape: tuple[int, ...], pool: bool) -> None:
        super().__init__()
        self.op = op
        self.in_shape = in_shape
        with torch.no_grad():
            out = op(torch.zeros(1, *in_shape))
        self.out_shape = tuple(out.shape[1:])
        self.pool = pool
        self.is_conv = isinstance(op, nn.Conv2d)
        pooled = F.max_pool2d(out, 2) if pool else out
        self.pooled_shape = tuple(pooled.shape[1:])
        self.neurons = math.prod(self.out_shape)
        self.register_buffer("fanout", _fanout_map(op, in_shape, self.out_shape), persistent=False)
        self.dense_macs = _dense_macs(op, self.out_shape)


def _fanout_map(op: nn.Module, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> torch.Tensor:
    """Synapses leaving each input neuron: a scalar for a linear layer; for a convolution, one per
    input position [H·W] (the same for every input channel)."""
    if isinstance(op, nn.Linear):
        return torch.tensor(float(op.out_features))
    if isinstance(op, nn.Conv2d):
        return conv_fanout(op, in_shape)
    raise TypeError(f"unsupported synaptic op {type(op).__name__}")


def _dense_macs(op: nn.Module, out_shape: tuple[int, ...]) -> int:
    if isinstance(op, nn.Linear):
        return op.in_features * op.out_features
    kh, kw = op.kernel_size
    return math.prod(out_shape) * op.in_channels * kh * kw


def _channels_last(maps: torch.Tensor) -> torch.Tensor:
    """``maps`` [..., C, H, W] as [..., H, W, C]: a view where they are channels-last in memory, else a copy."""
    lead = maps.shape[:-3]
    flat = maps.reshape(-1, *maps.shape[-3:]).contiguous(memory_format=torch.channels_last)
    return flat.permute(0, 2, 3, 1).reshape(*lead, *maps.shape[-2:], maps.shape[-3])


def _over_time(constant: torch.Tensor, steps: int) -> torch.Tensor:
    """``constant`` [B, ...] seen as [steps, B, ...] without a copy: stride 0 in time, also for one
    step (what marks a current as constant for the LIF kernels)."""
    if steps > 1:  # expand's backward sums over time; as_strided's would build a storage-sized buffer
        return constant.unsqueeze(0).expand(steps, *constant.shape)
    return constant.as_strided((steps, *constant.shape), (0, *constant.stride()))


def _channels_first(maps: torch.Tensor) -> torch.Tensor:
    """[..., H, W, C] seen as [..., C, H, W] (a view, channels-last in memory)."""
    return maps.movedim(-1, -3)


def _channels_last_columns(weight: torch.Tensor, maps_shape: tuple[int, ...]) -> torch.Tensor:
    """A linear layer's ``weight`` [out, C·H·W] for inputs flattened channels-last ([out, H·W·C])."""
    return weight.unflatten(1, maps_shape).permute(0, 2, 3, 1).flatten(1)


def _synaptic_ops(spikes: torch.Tensor, fanout: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample accumulate ops caused by ``spikes`` [B, ...] through a layer with ``fanout``
    (written into ``out`` [B] if given)."""
    dtype = fanout.dtype if out is None else out.dtype
    if fanout.dim() == 0:
        return torch.mul(spikes.flatten(1).sum(1, dtype=dtype), fanout, out=out)
    # Conv maps [B, C, H, W]: spikes per position (summed over the channels, contiguous in memory) · fan-out.
    return torch.mv(_channels_last(spikes).sum(-1, dtype=dtype).flatten(1), fanout.to(dtype), out=out)


class S1State(NamedTuple):
    """System 1's state between steps: each layer's and each exit head's membrane, [B, ...] each."""

    layers: tuple[torch.Tensor, ...]
    heads: tuple[torch.Tensor, ...]


@dataclass
class S1Step:
    """The raw records of one step, or of a chunk of steps, as :meth:`System1.advance` makes them:
    outputs [(t,) E, B, C], ops [K, (t,) B], firing rates [H, (t,) B]. A run gathers them into its
    one record, an :class:`~fastslow.systems.records.S1Record`."""

    outputs: torch.Tensor
    synaptic_ops: torch.Tensor
    dense_macs: torch.Tensor
    spike_rates: torch.Tensor


def _merged(records: list[S1Step], along_batch: bool = False) -> S1Step:
    """Records of consecutive chunks as one, along time (outputs [t, E, B, C], the others [K or H, t, B]),
    or of consecutive groups of inputs, along the batch."""
    if len(records) == 1:
        return records[0]
    outputs_dim, others_dim = (2, 2) if along_batch else (0, 1)
    return S1Step(
        outputs=torch.cat([r.outputs for r in records], dim=outputs_dim),
        **{
            name: torch.cat([getattr(r, name) for r in records], dim=others_dim)
            for name in ("synaptic_ops", "dense_macs", "spike_rates")
        },
    )


class _RecordsPlan(NamedTuple):
    """How a run fills its synaptic-op rows without summing spikes again (fixed by the architecture)."""

    count_runs: list[tuple[slice, slice, slice]]  # (component rows, layers whose counts feed them, factors)
    count_factors: torch.Tensor  # [rows, 1, 1] fan-out of each count-fed row
    pool_fanned: dict[int, int]  # pooled layer → the component row its kernel fills
    pool_fanouts: dict[int, torch.Tensor]  # pooled layer → fan-out per pooled position
    rows_filled: frozenset[int]


def _records_plan(layers: list[_Layer], exit_points: list[int], n_classes: int) -> _RecordsPlan:
    """Components fed by a layer's unpooled spikes through a scalar fan-out (a linear layer or a head)
    get that layer's spike counts × the fan-out: one multiplication per run of consecutive rows after
    the last layer (each a kernel launch on a GPU). A pooled conv layer's LIF kernel sums the synaptic
    ops its pooled spikes cause in what follows it (the next layer, or the final exit's head after the
    last layer), from a fan-out per pooled position. Other rows sum their input spikes."""
    from_counts = [
        (index, index - 1, layer.op.out_features)
        for index, layer in enumerate(layers)
        if index > 0 and not layer.is_conv and not layers[index - 1].pool
    ]
    from_counts += [(len(layers) + e, h, n_classes) for e, h in enumerate(exit_points) if not layers[h].pool]
    runs: list[tuple[slice, slice, slice]] = []
    for position, (row, layer_index, _) in enumerate(from_counts):
        if runs and runs[-1][0].stop == row and runs[-1][1].stop == layer_index:
            rows, feeding, factors = runs[-1]
            runs[-1] = (slice(rows.start, row + 1), slice(feeding.start, layer_index + 1), slice(factors.start, position + 1))
        else:
            runs.append((slice(row, row + 1), slice(layer_index, layer_index + 1), slice(position, position + 1)))
    pool_fanned, pool_fanouts = {}, {}
    for index, layer in enumerate(layers):
        if layer.pool:
            following = layers[index + 1] if index + 1 < len(layers) else None
            pool_fanned[index] = index + 1 if following is not None else len(layers) + len(exit_points) - 1
            if following is not None and following.is_conv:
                pool_fanouts[index] = following.fanout.clone()
            else:
                width = n_classes if following is None else following.op.out_features
                pool_fanouts[index] = torch.full((math.prod(layer.pooled_shape[1:]),), float(width))
    factors = torch.tensor([float(f) for _, _, f in from_counts], dtype=torch.float32).view(-1, 1, 1)
    return _RecordsPlan(
        runs, factors, pool_fanned, pool_fanouts, frozenset({row for row, _, _ in from_counts} | set(pool_fanned.values()))
    )


class System1(nn.Module):
    """Spiking MLP or small conv net; see :class:`System1Spec` and :meth:`run`.

    ``backend`` (default ``spec.backend``) chooses the kernels that run the LIF layers; it stays
    settable as :attr:`requested_backend`, and :attr:`backend` says which one runs."""

    def __init__(self, spec: System1Spec, backend: BackendChoice | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.requested_backend = spec.backend if backend is None else backend
        layers: list[nn.Module] = []
        shape = spec.frame_shape
        self._deep = spec.arch in DEEP_ARCHS
        if self._deep:
            self._init_deep(spec)
            return
        if spec.arch == "conv":
            if len(shape) != 3:
                what = "frames" if spec.encoding == "events" else "inputs"
                raise ValueError(f"conv System 1 needs image {what} [C, H, W], got shape {shape}")
            for channels in spec.conv_channels:
                op = nn.Conv2d(shape[0], channels, 3, padding=1)
                pool = min(shape[1], shape[2]) >= 4
                layer = _Layer(op, shape, pool)
                layers.append(layer)
                shape = layer.pooled_shape
        features = math.prod(shape)
        for width in spec.hidden:
            layer = _Layer(nn.Linear(features, width), (features,), pool=False)
            layers.append(layer)
            features = width
        if not layers:
            raise ValueError("System 1 needs at least one hidden layer")
        self.layers = nn.ModuleList(layers)
        exit_points = list(spec.exit_heads) + [len(layers) - 1]
        if sorted(set(exit_points)) != exit_points:
            allowed = (
                "none: its only layer has the final exit"
                if len(layers) == 1
                else (
                    f"increasing hidden-layer indices from 0 to {len(layers) - 2} (layer {len(layers) - 1}, the last, always has the final exit)"
                )
            )
            raise ValueError(f"exit_heads must be {allowed}, got {list(spec.exit_heads)}")
        self.exit_layers = tuple(exit_points)
        self.heads = nn.ModuleList(nn.Linear(math.prod(self.layers[h].pooled_shape), spec.n_classes) for h in exit_points)
        self.lif_params = spec.lif
        # Kept as a buffer (moved with the model, not saved): a run then copies nothing from the host,
        # which a CUDA graph capture of it would refuse. Runs hand out copies, never the buffer.
        self.register_buffer("_neuron_counts", torch.tensor(self.neurons_per_component(), dtype=torch.float32), persistent=False)
        # Facts of the architecture that every advance reads (a ModuleList index or a property costs
        # microseconds on a path called per chunk): each layer's spikes flattened for a linear layer
        # next, and whether each head reads conv maps.
        self._flatten_for_next = tuple(
            index + 1 < len(layers) and isinstance(layers[index + 1].op, nn.Linear) for index in range(len(layers))
        )
        self._head_reads_conv = tuple(layers[h].is_conv for h in exit_points)
        # Inference of such a network runs each chunk of steps as one compiled call (the numba backend).
        self._mlp_membrane = spec.arch == "mlp" and spec.readout == "membrane" and spec.event_density > 0
        plan = _records_plan(layers, exit_points, spec.n_classes)
        self._count_runs, self._pool_fanned, self._rows_filled = plan.count_runs, plan.pool_fanned, plan.rows_filled
        self.register_buffer("_count_factors", plan.count_factors, persistent=False)
        for index, fanout in plan.pool_fanouts.items():
            self.register_buffer(f"_pool_fanout_{index}", fanout, persistent=False)

    def _init_deep(self, spec: System1Spec) -> None:
        """The units and heads of a "vgg" or "resnet" System 1 (see :mod:`fastslow.systems.deep`):
        an exit head (global average pool → linear) after each stage named in ``exit_heads`` and
        after the last."""
        channels, blocks = spec.stages
        units, stage_ends = deep_units(spec.arch, spec.frame_shape, channels, blocks)
        self.layers = nn.ModuleList(units)
        if sorted(set(spec.exit_heads)) != list(spec.exit_heads) or any(s >= len(stage_ends) - 1 for s in spec.exit_heads):
            raise ValueError(
                f"exit_heads of a {spec.arch} System 1 are stage indices, increasing, from 0 to {len(stage_ends) - 2} "
                f"(stage {len(stage_ends) - 1}, the last, always has the final exit), got {list(spec.exit_heads)}"
            )
        self.exit_layers = tuple(stage_ends[s] for s in spec.exit_heads) + (len(units) - 1,)
        self.heads = nn.ModuleList(nn.Linear(units[h].pooled_shape[0], spec.n_classes) for h in self.exit_layers)
        self.lif_params = spec.lif
        self.register_buffer("_neuron_counts", torch.tensor(self.neurons_per_component(), dtype=torch.float32), persistent=False)
        self._mlp_membrane = False

    # -- backend ------------------------------------------------------------
    @property
    def requested_backend(self) -> BackendChoice:
        """The backend asked for: "auto" or one of "torch", "numba", "triton" (see
        :mod:`fastslow.spiking.backends`). Setting it overrides ``spec.backend`` for this model."""
        return self._requested_backend

    @requested_backend.setter
    def requested_backend(self, choice: BackendChoice) -> None:
        check_backend_choice(choice)
        self._requested_backend = choice

    @property
    def backend(self) -> Backend:
        """The backend a run would use now: :attr:`requested_backend` resolved for the weights' device
        and dtype, with gradients if grad mode is on and a parameter requires them (under autocast the
        currents' dtype decides, so "auto" may run torch instead). Raises ValueError if the requested
        backend cannot run here."""
        return self.resolve_backend(torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters()))

    def resolve_backend(self, requires_grad: bool) -> Backend:
        """The backend a run on the weights' device and dtype uses, with (training) or without
        (inference) gradients; ValueError if the requested one cannot run such a run."""
        weight = self.heads[0].weight
        return select_backend(weight.device, weight.dtype, requires_grad, self._requested_backend)

    # -- static facts -------------------------------------------------------
    @property
    def n_exits(self) -> int:
        return len(self.heads)

    @property
    def n_components(self) -> int:
        return len(self.layers) + len(self.heads)

    def component_names(self) -> list[str]:
        return [f"layer{i}" for i in range(len(self.layers))] + [f"exit{e}@layer{h}" for e, h in enumerate(self.exit_layers)]

    def neurons_per_component(self) -> list[int]:
        return [layer.neurons for layer in self.layers] + [self.spec.n_classes] * len(self.heads)

    def neuron_counts(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """[K] neurons per component (the neuron state updates each timestep costs), as a new ``dtype``
        tensor on the model's device: copied from a buffer, not from the host, so a CUDA graph capture may call it."""
        return self._neuron_counts.to(dtype, copy=True)

    def exit_component_mask_for_last(self) -> torch.Tensor:
        """[K] mask of the components an answer from the last exit needs (backbone + its head)."""
        from fastslow.energy.accounting import exit_component_mask

        return exit_component_mask(self.exit_layers, len(self.layers))[-1].to(self.heads[0].weight)

    def stateful_neurons(self) -> int:
        return sum(self.neurons_per_component())

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- simulation ---------------------------------------------------------
    def run(
        self,
        x: torch.Tensor,
        timesteps: int | None = None,
        generator: torch.Generator | None = None,
        mode: Literal["multistep", "stepwise"] = "multistep",
    ) -> S1Record:
        """Simulate ``timesteps`` (default T) steps on a batch ``x`` [B, *input_shape] in [0, 1].

        ``multistep`` (default) runs each layer over all steps at once: one matmul for every
        step's input current, then the fused LIF recurrence. ``stepwise`` advances the whole network
        one step at a time. Both give the same spikes, records and gradients.
        """
        if mode not in ("multistep", "stepwise"):
            raise ValueError(f"unknown mode {mode!r}: use 'multistep' or 'stepwise'")
        spec = self.spec
        steps = spec.timesteps if timesteps is None else timesteps
        if steps < 1:
            raise ValueError(f"timesteps must be at least 1, got {steps}")
        if spec.encoding == "events" and steps > spec.input_shape[0]:
            raise ValueError(
                f"the inputs hold {spec.input_shape[0]} event frames, so at most {spec.input_shape[0]} steps run, not {steps}"
            )
        self.check_input(x)
        x = self.prepare(x)
        if mode == "multistep":
            return self._run_multistep(x, steps, generator)
        # Direct encoding feeds the same current every step: compute it once.
        constant_current = None if is_spiking(spec.encoding) else self.input_current(x)
        state = None  # at rest
        records: list[S1Step] = []
        for t in range(steps):
            inp = None if constant_current is not None else encode_step(x, t, steps, spec.encoding, generator)
            record, state = self.step(inp, state, constant_current)
            records.append(record)
        return S1Record.from_step_outputs(
            torch.stack([r.outputs for r in records]),
            synaptic_ops=torch.stack([r.synaptic_ops for r in records], dim=1),
            dense_macs=torch.stack([r.dense_macs for r in records], dim=1),
            neuron_updates=self.neuron_counts(x.dtype),
            spike_rates=torch.stack([r.spike_rates for r in records], dim=1),
            exit_layers=self.exit_layers,
        )

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Inputs as layer 0 takes them (flattened for an MLP; event frames [B, T, ...] each on its own)."""
        if self.layers[0].is_conv:
            return x
        return x.flatten(2) if self.spec.encoding == "events" else x.flatten(1)

    def init_state(self, batch: int, like: torch.Tensor) -> S1State:
        """Resting state for ``batch`` inputs, on ``like``'s device and dtype."""
        zeros = lambda shape: like.new_zeros(batch, *shape)  # noqa: E731
        return S1State(
            layers=tuple(
                _channels_first(zeros((*layer.out_shape[1:], layer.out_shape[0])))
                if layer.is_conv and not self._deep
                else zeros(layer.out_shape)
                for layer in self.layers
            ),
            heads=tuple(zeros((self.spec.n_classes,)) for _ in self.heads),
        )

    def step(
        self, inp: torch.Tensor | None, state: S1State | None, constant_current: torch.Tensor | None = None
    ) -> tuple[S1Step, S1State]:
        """One timestep for a batch from ``state`` (None: at rest, as :meth:`init_state` but without
        writing and reading zero maps): ``inp`` the encoded layer-0 spikes at this step, or, with
        direct encoding, ``constant_current`` layer 0's precomputed current (charged as dense MACs)."""
        record, state = self.advance(None if inp is None else inp.unsqueeze(0), state, constant_current, 1)
        return S1Step(
            outputs=record.outputs[0],
            synaptic_ops=record.synaptic_ops[:, 0],
            dense_macs=record.dense_macs[:, 0],
            spike_rates=record.spike_rates[:, 0],
        ), state

    def input_current(self, x: torch.Tensor) -> torch.Tensor:
        """Layer 0's current for prepared inputs ``x`` (direct encoding computes it once for all steps;
        the input is analog, so the layer is a dense matmul, never event-driven). Conv maps come
        channels-last in memory, as the simulation reads them; indexing rows keeps that layout."""
        layer = self.layers[0]
        if self._deep:
            return layer.branches[0](x)
        return conv_channels_last(x, layer.op) if layer.is_conv else layer.op(x)

    def _synapses(self, op: nn.Module, inp: torch.Tensor) -> torch.Tensor:
        """A layer's input current from its input spikes (linear layers event-driven where sparse;
        conv maps channels-last in memory)."""
        if isinstance(op, nn.Linear):
            return spike_linear(inp, op, self.spec.event_density, self._requested_backend)
        return conv_channels_last(inp, op)

    def _check_rows(self, rows: torch.Tensor, state: S1State | None) -> None:
        """``rows`` must name distinct inputs of ``state``, whose tensors the kernels can write in place
        (each layer's LIF checks that they are integer positions within its state)."""
        if state is None:
            raise ValueError("rows advance a given state: start from rest with rows=None")
        # Serving's rows come in ascending order, which proves them distinct in one comparison; others are sorted to tell.
        if len(rows) > 1 and not bool((rows[1:] > rows[:-1]).all()) and len(torch.unique(rows)) != len(rows):
            raise ValueError(f"rows must be distinct positions among the state's {state.layers[0].shape[0]} inputs")
        for layer, v in zip(self.layers, state.layers):
            if self._deep and not v.is_contiguous():
                raise ValueError("a deep System 1's state must be contiguous (as advance returns it) to advance rows in place")
            if layer.is_conv and not self._deep and not v.is_contiguous(memory_format=torch.channels_last):
                raise ValueError(
                    "a conv layer's state must be channels-last in memory (as advance returns it) to advance rows in place"
                )

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a TypeError or ValueError unless ``x`` is a tensor batch [B, *input_shape] of the weights'
        dtype. Checks type, dtype and shape only (nothing that reads the values: a run may be captured in a CUDA graph)."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(
                f"System 1 takes a torch.Tensor batch, got a {type(x).__name__}: convert it with torch.as_tensor(x, dtype=torch.float32)"
            )
        dtype = self.heads[0].weight.dtype
        if x.dtype != dtype:
            raise TypeError(
                f"System 1 expects {dtype} inputs in [0, 1] (its weights' dtype), got {x.dtype}: "
                f"convert with x.to({dtype}) (uint8 images: x.to({dtype}) / 255)"
            )
        if tuple(x.shape[1:]) != tuple(self.spec.input_shape):
            raise ValueError(
                f"System 1 expects inputs of shape [B, {', '.join(map(str, self.spec.input_shape))}], got {list(x.shape)}"
            )

    def _run_multistep(self, x: torch.Tensor, steps: int, generator: torch.Generator | None) -> S1Record:
        """:meth:`run`'s multistep mode over prepared, checked inputs ``x``."""
        spec = self.spec
        # Direct encoding feeds the same current every step: compute it once.
        constant_current = None if is_spiking(spec.encoding) else self.input_current(x)
        # Steps run in chunks whose largest layer tensor stays under MULTISTEP_CHUNK_BYTES: a
        # larger buffer is fresh memory from the OS on every call, and its page faults cost more
        # than the chunking's extra kernel launches (measured on the conv network).
        # On a GPU the caching allocator reuses its memory, and every chunk is more launches: one chunk.
        input_step_bytes = max(1, self._largest_step_tensor(constant_current is not None) * x.element_size())
        chunk = (
            max(1, min(steps, MULTISTEP_CHUNK_BYTES // max(1, x.shape[0] * input_step_bytes)))
            if x.device.type == "cpu"
            else steps
        )
        # With checkpointing, segments of checkpoint_steps steps each run (in chunks) inside one
        # checkpoint; without, the whole run is one segment.
        segment = spec.checkpoint_steps if spec.checkpoint_steps > 0 and torch.is_grad_enabled() else steps
        # CPU inference instead runs such a batch in groups of inputs, each over all T steps from rest:
        # time chunks would carry every layer's state through memory between calls (1.4× / 1.7×
        # slower at 256 / 512 inputs on the conv benchmark). Training keeps the time chunks: its
        # backward runs over the whole batch.
        if self._deep and self.training:  # batch norm through time: its statistics over all steps at once
            chunk = steps
        groups = [slice(0, x.shape[0])]
        if chunk < steps and not torch.is_grad_enabled():
            size = max(1, MULTISTEP_CHUNK_BYTES // (steps * input_step_bytes))
            groups = [slice(first, first + size) for first in range(0, x.shape[0], size)]
            chunk = max(1, min(steps, MULTISTEP_CHUNK_BYTES // (size * input_step_bytes)))
        # A checkpoint takes state tensors; otherwise the run starts from rest (None: no zero maps to
        # write and read) and nobody reads its final state.
        state = self.init_state(x.shape[0], x) if segment < steps else None
        records = []
        for first in range(0, steps, segment):
            count = min(segment, steps - first)
            inp = None
            if constant_current is None:
                # Drawn step by step so the random stream is exactly the stepwise one (and before a
                # checkpoint, so its recomputation sees the same spikes).
                inp = torch.stack([encode_step(x, t, steps, spec.encoding, generator) for t in range(first, first + count)])
            if segment < steps:
                segment_records, state = self._checkpointed_chunks(inp, state, constant_current, count, chunk)
            else:
                parts = [
                    _merged(
                        self._chunks(
                            None if inp is None else inp[:, rows],
                            state,
                            None if constant_current is None else constant_current[rows],
                            count,
                            chunk,
                            keep_final_state=False,
                        )[0]
                    )
                    for rows in groups
                ]
                segment_records = [_merged(parts, along_batch=True)]
            records += segment_records
        merged = _merged(records)
        return S1Record.from_step_outputs(
            merged.outputs,  # [T, E, B, C]
            synaptic_ops=merged.synaptic_ops,
            dense_macs=merged.dense_macs,
            neuron_updates=self.neuron_counts(x.dtype),
            spike_rates=merged.spike_rates,
            exit_layers=self.exit_layers,
        )

    def _largest_step_tensor(self, constant_first: bool) -> int:
        """Elements of the largest tensor one step of one input makes in a layer: its current (none
        for a constant first-layer current) and its spikes or potentials (at inference a pooled conv
        layer keeps neither, only its pooled spikes: see :func:`fused_lif_multistep_pooled`)."""
        inference = not torch.is_grad_enabled()
        sizes = []
        for index, layer in enumerate(self.layers):
            current = 0 if index == 0 and constant_first else layer.neurons
            spikes = layer.neurons // 4 if inference and layer.is_conv and layer.pool else layer.neurons
            sizes.append(max(current, spikes))
        return max(sizes)

    def _chunks(
        self,
        inp: torch.Tensor | None,
        state: S1State | None,
        constant_current: torch.Tensor | None,
        steps: int,
        chunk: int,
        keep_final_state: bool = True,
    ) -> tuple[list[S1Step], S1State | None]:
        """:meth:`advance` over ``steps`` steps, ``chunk`` at a time, carrying the state."""
        records = []
        for first in range(0, steps, chunk):
            count = min(chunk, steps - first)
            keep = keep_final_state or first + count < steps
            record, state = self.advance(
                None if inp is None else inp[first : first + count], state, constant_current, count, keep
            )
            records.append(record)
        return records, state

    def _checkpointed_chunks(
        self, inp: torch.Tensor | None, state: S1State, constant_current: torch.Tensor | None, steps: int, chunk: int
    ) -> tuple[list[S1Step], S1State]:
        """:meth:`_chunks` whose activations autograd does not keep: the backward pass runs the
        segment again from its input state (``torch.utils.checkpoint``, non-reentrant)."""
        n_layers = len(state.layers)

        def segment(*state_tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
            records, new_state = self._chunks(
                inp, S1State(tuple(state_tensors[:n_layers]), tuple(state_tensors[n_layers:])), constant_current, steps, chunk
            )
            merged = _merged(records)
            return (
                merged.outputs,
                merged.synaptic_ops,
                merged.dense_macs,
                merged.spike_rates,
                *new_state.layers,
                *new_state.heads,
            )

        out = checkpoint(segment, *state.layers, *state.heads, use_reentrant=False)
        record = S1Step(outputs=out[0], synaptic_ops=out[1], dense_macs=out[2], spike_rates=out[3])
        return [record], S1State(tuple(out[4 : 4 + n_layers]), tuple(out[4 + n_layers :]))

    def advance(
        self,
        inp: torch.Tensor | None,
        state: S1State | None,
        constant_current: torch.Tensor | None,
        steps: int,
        keep_state: bool = True,
        rows: torch.Tensor | None = None,
    ) -> tuple[S1Step, S1State | None]:
        """``steps`` timesteps at once from ``state`` (None: at rest), each layer over all of them in one
        call: as :meth:`step`, with every tensor led by a time axis (``inp`` [t, B, ...]; the record's
        outputs [t, E, B, C], the others [K or H, t, B]). Without ``keep_state`` the new state is None
        (its layers may skip writing it).

        ``rows`` [n] (inference; distinct positions): advance only those inputs of ``state`` and
        ``constant_current``, updating ``state`` in place (and returning it, ``keep_state`` or not), so
        that inputs that stopped can leave without copying anyone's state; ``inp`` and the record
        hold the n inputs in order. The state must be one :meth:`advance` returned (conv maps
        channels-last in memory)."""
        like = constant_current if inp is None else inp[0]
        batch = like.shape[0] if rows is None else len(rows)
        if rows is not None:
            self._check_rows(rows, state)
        if self._deep:
            return self._advance_deep(inp, state, constant_current, steps, keep_state, rows, batch)
        if self.compiled_mlp_applies(like, state):
            return self._advance_compiled_mlp(inp, state, constant_current, steps, keep_state, rows, batch)
        backend = self._requested_backend  # each LIF call resolves "auto" for its own tensors
        merge = lambda a: a.reshape(steps * batch, *a.shape[2:])  # noqa: E731  [t, B, ...] → [t·B, ...]
        split = lambda a: a.reshape(steps, batch, *a.shape[1:])  # noqa: E731
        # Records are written in place, a row per component or layer, into one zeroed buffer: on a GPU
        # each small kernel costs a launch, and stacking per-layer records would cost one more per record.
        # Each layer's spike counts land in its rows of `counts` (from the LIF kernels) and become its
        # firing rates, and the synaptic ops of the components they feed, after the last layer.
        components, n_layers = self.n_components, len(self.layers)
        # float32 at least (float64 for a float64 model): counts and operation totals stay exact under autocast too
        buffer = like.new_zeros(2 * components + n_layers, steps, batch, dtype=torch.promote_types(like.dtype, torch.float32))
        syn, dense, counts = buffer[:components], buffer[components : 2 * components], buffer[2 * components :]
        layer_outputs, layer_states = [], []
        for index, layer in enumerate(self.layers):
            if index == 0 and constant_current is not None:
                current = _over_time(constant_current, steps)
                dense[0].fill_(float(layer.dense_macs))
            else:
                current = (
                    self._synapses(layer.op, inp)
                    if isinstance(layer.op, nn.Linear)
                    else split(self._synapses(layer.op, merge(inp)))
                )
                if index not in self._rows_filled:
                    with torch.no_grad():
                        _synaptic_ops(merge(inp), layer.fanout, out=syn[index].view(-1))
            if layer.is_conv:
                # Conv maps live channels-last in memory (the convolutions' fastest CPU layout): the LIF
                # runs on them seen as [.., H, W, C], a view, and the pooling reads them in place.
                if index == 0 and constant_current is not None:
                    current = _over_time(_channels_last(constant_current), steps)
                else:
                    current = _channels_last(current)
                v0 = None if state is None else LIFState(_channels_last(state.layers[index]))
                if layer.pool:  # the LIF counts and pools each step's spikes (and their synaptic ops) while they are in cache
                    pooled, _, new_state = fused_lif_multistep_pooled(
                        current,
                        v0,
                        self.lif_params,
                        backend=backend,
                        final_state=keep_state,
                        counts=counts[index],
                        next_synaptic_ops=(getattr(self, f"_pool_fanout_{index}"), syn[self._pool_fanned[index]]),
                        rows=rows,
                    )
                    layer_states.append(None if new_state is None else _channels_first(new_state.v))
                    out = _channels_first(pooled)
                else:
                    spikes, new_state = fused_lif_multistep(
                        current, v0, self.lif_params, backend=backend, final_state=keep_state, counts=counts[index], rows=rows
                    )
                    layer_states.append(None if new_state is None else _channels_first(new_state.v))
                    out = _channels_first(spikes)
            else:
                out, new_state = fused_lif_multistep(
                    current,
                    None if state is None else LIFState(state.layers[index]),
                    self.lif_params,
                    backend=backend,
                    final_state=keep_state,
                    counts=counts[index],
                    rows=rows,
                )
                layer_states.append(None if new_state is None else new_state.v)
            layer_outputs.append(out)
            inp = out.flatten(2) if self._flatten_for_next[index] else out
        outputs, head_states = [], []
        head_vs = [None] * len(self.heads) if state is None else state.heads
        for exit_index, (head, h, head_v) in enumerate(zip(self.heads, self.exit_layers, head_vs)):
            if self._head_reads_conv[exit_index]:
                # Conv spikes stay channels-last in memory: the head reads them flattened in that
                # order with its weight's columns reordered to match (a small copy of the weight,
                # instead of a copy of every step's spike maps into [C, H, W] order).
                source = _channels_last(layer_outputs[h]).flatten(2)
                current = F.linear(source, _channels_last_columns(head.weight, self.layers[h].pooled_shape), head.bias)
            else:
                source = layer_outputs[h].flatten(2)
                current = self._synapses(head, source)
            if n_layers + exit_index not in self._rows_filled:
                with torch.no_grad():
                    torch.mul(source.sum(2, dtype=syn.dtype), head.out_features, out=syn[n_layers + exit_index])
            if self.spec.readout == "spike_count":
                head_spikes, new_head = fused_lif_multistep(
                    current,
                    None if head_v is None else LIFState(head_v),
                    self.lif_params,
                    backend=backend,
                    final_state=keep_state,
                    rows=rows,
                )
                head_states.append(None if new_head is None else new_head.v)
                outputs.append(head_spikes * SPIKE_COUNT_SCALE)
            else:  # a non-leaking integrator read out step by step: its state never changes
                head_states.append(head_v)
                outputs.append(current)
        stacked = outputs[0].unsqueeze(1) if len(outputs) == 1 else torch.stack(outputs, dim=1)
        for rows_fed, layers_feeding, factors in self._count_runs:
            torch.mul(counts[layers_feeding], self._count_factors[factors], out=syn[rows_fed])
        rates = counts.div_(self._neuron_counts[:n_layers, None, None])  # spike counts → the share of neurons that fired
        record = S1Step(outputs=stacked, synaptic_ops=syn, dense_macs=dense, spike_rates=rates)
        if not keep_state and rows is None:
            return record, None
        heads = tuple(like.new_zeros(batch, self.spec.n_classes) if v is None else v for v in head_states)
        return record, S1State(layers=tuple(layer_states), heads=heads)

    def _advance_deep(
        self,
        inp: torch.Tensor | None,
        state: S1State | None,
        constant_current: torch.Tensor | None,
        steps: int,
        keep_state: bool,
        rows: torch.Tensor | None,
        batch: int,
    ) -> tuple[S1Step, S1State | None]:
        """:meth:`advance` for a "vgg" or "resnet" System 1: each unit's branches (conv → BN) over all
        ``steps`` steps of all inputs as one [t·B, C, H, W] batch (batch norm through time), summed,
        then the unit's LIF over the steps (:func:`~fastslow.spiking.backends.fused_lif_multistep`: the
        requested backend's kernels, in the weights' dtype: under autocast the convolutions run in half
        precision, the membrane in float32). Each branch's synaptic ops are its source's spikes × their
        fan-out (an identity shortcut: 1 per spike), added into the unit's row."""
        like = constant_current if inp is None else inp[0]
        components, n_layers = self.n_components, len(self.layers)
        buffer = like.new_zeros(2 * components + n_layers, steps, batch, dtype=torch.promote_types(like.dtype, torch.float32))
        syn, dense, counts = buffer[:components], buffer[components : 2 * components], buffer[2 * components :]
        dtype = self.heads[0].weight.dtype
        outputs_by_unit: list[torch.Tensor] = []  # [t, B, C, H, W] spikes after each unit's pool
        layer_states = []
        for index, unit in enumerate(self.layers):
            if index == 0 and constant_current is not None:
                current = _over_time(constant_current.to(dtype), steps)
                dense[0].fill_(float(unit.dense_macs))
            else:
                current = None
                for source, branch, fanout in zip(unit.sources, unit.branches, unit.fanouts()):
                    spikes = (inp if source < 0 else outputs_by_unit[source]).flatten(0, 1)  # [t·B, C, H, W]
                    part = branch(spikes)
                    current = part if current is None else current + part
                    with torch.no_grad():
                        syn[index] += branch_synaptic_ops(spikes, fanout, syn.dtype).view(steps, batch)
                current = current.to(dtype).unflatten(0, (steps, batch))
            out, new_state = fused_lif_multistep(
                current,
                None if state is None else LIFState(state.layers[index]),
                self.lif_params,
                backend=self._requested_backend,
                final_state=keep_state,
                counts=counts[index],
                rows=rows,
            )
            layer_states.append(None if new_state is None else new_state.v)
            if unit.pool:
                out = F.max_pool2d(out.flatten(0, 1), 2).unflatten(0, (steps, batch))
            outputs_by_unit.append(out)
        outputs, head_states = [], []
        head_vs = [None] * len(self.heads) if state is None else state.heads
        for exit_index, (head, h, head_v) in enumerate(zip(self.heads, self.exit_layers, head_vs)):
            source = outputs_by_unit[h]
            current = head(head_input(source))  # [t, B, classes]
            with torch.no_grad():
                torch.mul(source.flatten(2).sum(2, dtype=syn.dtype), head.out_features, out=syn[n_layers + exit_index])
            if self.spec.readout == "spike_count":
                head_spikes, new_head = fused_lif_multistep(
                    current,
                    None if head_v is None else LIFState(head_v),
                    self.lif_params,
                    backend=self._requested_backend,
                    final_state=keep_state,
                    rows=rows,
                )
                head_states.append(None if new_head is None else new_head.v)
                outputs.append(head_spikes * SPIKE_COUNT_SCALE)
            else:
                head_states.append(head_v)
                outputs.append(current)
        stacked = outputs[0].unsqueeze(1) if len(outputs) == 1 else torch.stack(outputs, dim=1)
        rates = counts.div_(self._neuron_counts[:n_layers, None, None])
        record = S1Step(outputs=stacked, synaptic_ops=syn, dense_macs=dense, spike_rates=rates)
        if not keep_state and rows is None:
            return record, None
        heads = tuple(like.new_zeros(batch, self.spec.n_classes) if v is None else v for v in head_states)
        return record, S1State(layers=tuple(layer_states), heads=heads)

    def compiled_mlp_applies(self, like: torch.Tensor, state: S1State | None) -> bool:
        """Whether :meth:`advance` runs as one compiled call (:func:`~fastslow.spiking.backends.mlp_inference`)
        for inputs like ``like`` from ``state``: an MLP with membrane readouts and events on
        (``event_density`` > 0) on the "numba" backend (CPU float32 inference), its state float32 and
        contiguous. ValueError if the requested backend cannot run such inputs."""
        if not self._mlp_membrane:
            return False
        # Gradients reach the run through the parameters (or the inputs, if they require them).
        needs_grad = torch.is_grad_enabled() and (like.requires_grad or any(p.requires_grad for p in self.parameters()))
        return select_backend(like.device, like.dtype, needs_grad, self._requested_backend) == "numba" and (
            state is None or all(v.dtype == torch.float32 and v.is_contiguous() for v in state.layers)
        )

    def _advance_compiled_mlp(
        self,
        inp: torch.Tensor | None,
        state: S1State | None,
        constant_current: torch.Tensor | None,
        steps: int,
        keep_state: bool,
        rows: torch.Tensor | None,
        batch: int,
    ) -> tuple[S1Step, S1State | None]:
        """:meth:`advance` for an MLP in one compiled call per chunk instead of a few calls and ~70 small
        torch operators: every linear layer after a spiking input, and every readout, sums its input's
        events (whatever their density: no dense matmul, so a dense row may round differently from the
        autograd path's, by ~1e-7), the LIF as :func:`~fastslow.spiking.lif.lif_multistep` (the same bits); the kernel
        writes the records too."""
        components, n_layers = self.n_components, len(self.layers)
        like = constant_current if inp is None else inp
        records = like.new_zeros(2 * components + n_layers, steps, batch)
        params = self.lif_params
        outputs, layer_states = mlp_inference(
            constant_current,
            None if constant_current is not None else inp,
            self.compiled_weights(),
            None if state is None else state.layers,
            params.beta,
            params.threshold,
            params.reset == "zero",
            records,
            keep_state=keep_state,
            rows=rows,
        )
        record = S1Step(
            outputs=outputs,
            synaptic_ops=records[:components],
            dense_macs=records[components : 2 * components],
            spike_rates=records[2 * components :],
        )
        if not keep_state and rows is None:
            return record, None
        heads = tuple(like.new_zeros(batch, self.spec.n_classes) for _ in self.heads) if state is None else state.heads
        return record, S1State(layers=layer_states, heads=heads)

    def compiled_weights(self) -> MLPWeights:
        """The weights as the compiled MLP kernel reads them, rebuilt when any changed (an optimiser's
        in-place step bumps a version; a load or a move gives new storage)."""
        ops = [layer.op for layer in self.layers] + list(self.heads)
        key = tuple((p._version, p.data_ptr()) for op in ops for p in (op.weight, op.bias) if p is not None)
        cached = self.__dict__.get("_compiled_mlp_weights")
        if cached is None or cached.key != key:
            cached = mlp_weights(ops[: len(self.layers)], ops[len(self.layers) :], self.exit_layers, key)
            self.__dict__["_compiled_mlp_weights"] = cached
        return cached

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Final-exit logits after T steps, [B, C] (for use as a plain classifier)."""
        return self.run(x).final_logits
