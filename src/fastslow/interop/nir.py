"""System 1 as a NIR graph (the Neuromorphic Intermediate Representation), and NIR graphs back into torch.

NIR describes neurons in continuous time and stores no time step. fastslow's LIF is discrete::

    v[t] = β·v[t−1] + I[t];   spike if v[t] > threshold, and then v[t] = 0  (reset to zero)

which is forward Euler of NIR's ``τ·dv/dt = (v_leak − v) + R·I`` with the step :data:`DT` when

    τ = DT / (1 − β),   R = τ / DT,   v_leak = 0,   v_reset = 0

(snnTorch's exporter and importer use this convention, with DT = 1e-4 s). The graph's metadata
states it. Nodes, in order (see :func:`system1_to_nir`):

- ``nir.Input`` (the input shape, batch excluded); ``nir.Flatten`` (dims exclude the batch) where an
  image feeds a linear layer;
- per layer: ``nir.Conv2d`` (3×3, padding 1; its bias) or ``nir.Affine``, then ``nir.LIF``; a pooled
  conv layer adds ``nir.AvgPool2d`` (2×2, stride 2) and a memoryless ``nir.LIF`` (τ = DT, so
  v = I each step) with threshold 1/8: the 2×2 max-pool of binary spikes exactly (a window's mean
  is k/4 for k spikes, above 1/8 iff k ≥ 1);
- the final exit's readout ``nir.Affine``, then ``nir.I`` (R = 1/DT: v[t] = v[t−1] + I[t], the
  non-leaking integrator of the membrane readout; fastslow's logits are v[t]/t) or, for a
  spike-count readout, ``nir.LIF``; then ``nir.Output``.

Exit heads on hidden layers are not exported: nirtorch reads graphs with one output. NIR's LIF
has no subtract reset: a System 1 that resets by subtraction is refused unless exported with reset
to zero (``reset_to_zero``; ``fastslow export --reset-to-zero`` measures what that costs).

:func:`nir_node_map` and :func:`nir_to_torch` read such graphs back (with ``nirtorch``), stepping
each neuron by forward Euler with the step DT, on batched inputs.
"""

from __future__ import annotations

import importlib.util
import io
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from fastslow import atomic
from fastslow.errors import ConfigError
from fastslow.systems.system1 import System1

if TYPE_CHECKING:
    import nir as nir_types

# Seconds per step: what snnTorch's NIR exporter and importer assume, so they read our τ as we mean it.
DT = 1e-4
# The max-pool gate's threshold: a 2×2 window's mean of binary spikes is 0, 1/4, … 1; above 1/8 iff one fired.
POOL_THRESHOLD = 0.125
NIR_EXTRA = "fastslow export --format nir needs the nir extra: pip install 'fastslow[nir]'"


def _require_nir() -> None:
    if importlib.util.find_spec("nir") is None or importlib.util.find_spec("nirtorch") is None:
        raise ConfigError(NIR_EXTRA)


def lif_constants(beta: float, threshold: float, shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    """NIR LIF parameters (arrays of ``shape``, float64) for ``v = β·v + I`` with reset to zero at
    ``threshold``, in the convention of this module (τ = DT/(1−β), R = τ/DT, v_leak = 0)."""
    tau = DT / (1.0 - beta)
    full = lambda value: np.full(shape, value, dtype=np.float64)  # noqa: E731
    return {
        "tau": full(tau),
        "r": full(tau / DT),
        "v_leak": full(0.0),
        "v_threshold": full(threshold),
        "v_reset": full(0.0),
    }


def _array(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().to("cpu", torch.float32).numpy().copy()


def system1_to_nir(system1: System1, *, integrator: bool = True, reset_to_zero: bool = False) -> "nir_types.NIRGraph":
    """``system1`` from its input to its final exit as a NIR graph (see the module docstring).

    ``integrator``: end a membrane readout with ``nir.I`` (exact; the output at step t is the sum of
    the readout's currents so far); without, at the readout's ``nir.Affine`` (its output summed over
    the steps is that sum), for readers without an integrator node, as snnTorch 1.0's ``import_from_nir``.
    ``reset_to_zero``: export a System 1 that resets by subtraction with reset to zero (it then
    answers differently); without, such a System 1 is a :class:`~fastslow.errors.ConfigError`.
    A beta of 1 (no leak: τ infinite) is a ConfigError too."""
    _require_nir()
    import nir

    spec = system1.spec
    lif = spec.lif
    if spec.arch not in ("mlp", "conv"):
        raise ConfigError(
            f"NIR export takes the mlp and conv System 1, not {spec.arch!r} (its batch norm and residual "
            'branches have no NIR graph here): fit with [system1] arch = "conv" to export'
        )
    if lif.reset != "zero" and not reset_to_zero:
        raise ConfigError(
            "this System 1 resets by subtraction, which NIR's LIF cannot express: refit it with "
            '[system1.lif] reset = "zero", or pass --reset-to-zero to export it with reset to zero '
            "(the command then measures the accuracy change on the test split)"
        )
    if lif.beta >= 1.0:
        raise ConfigError(
            "this System 1's LIF does not leak (beta = 1: τ infinite), which NIR's LIF cannot express: refit with beta < 1"
        )
    nodes: dict[str, Any] = {"input": nir.Input(input_type=np.array(spec.input_shape))}
    order = ["input"]

    def add(name: str, node: Any) -> None:
        nodes[name] = node
        order.append(name)

    def flatten(name: str, shape: tuple[int, ...]) -> None:
        if len(shape) > 1:  # NIR's dims exclude the batch: from the first to the last
            add(name, nir.Flatten(input_type=np.array(shape), start_dim=0, end_dim=-1))

    for index, layer in enumerate(system1.layers):
        op = layer.op
        if layer.is_conv:
            bias = _array(op.bias) if op.bias is not None else np.zeros(op.out_channels, dtype=np.float32)
            add(
                f"layer{index}_conv",
                nir.Conv2d(
                    input_shape=tuple(layer.in_shape[1:]),
                    weight=_array(op.weight),
                    stride=tuple(op.stride),
                    padding=tuple(op.padding),
                    dilation=tuple(op.dilation),
                    groups=op.groups,
                    bias=bias,
                ),
            )
        else:
            flatten(f"layer{index}_flatten", tuple(spec.input_shape) if index == 0 else system1.layers[index - 1].pooled_shape)
            add(f"layer{index}_affine", _affine(nir, op))
        add(f"layer{index}_lif", nir.LIF(**lif_constants(lif.beta, lif.threshold, layer.out_shape)))
        if layer.pool:
            add(
                f"layer{index}_pool",
                nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
            )
            gate = lif_constants(0.0, POOL_THRESHOLD, layer.pooled_shape)
            add(f"layer{index}_pool_gate", nir.LIF(**gate, metadata={"role": "max of binary spikes over each 2x2 window"}))
    last = system1.layers[-1]
    flatten("readout_flatten", last.pooled_shape)
    add("readout_affine", _affine(nir, system1.heads[-1]))
    n_classes = spec.n_classes
    if spec.readout == "spike_count":
        add("readout_lif", nir.LIF(**lif_constants(lif.beta, lif.threshold, (n_classes,))))
    elif integrator:
        add("readout_integrator", nir.I(r=np.full(n_classes, 1.0 / DT)))
    add("output", nir.Output(output_type=np.array([n_classes])))
    edges = list(zip(order[:-1], order[1:]))
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=_metadata(system1, integrator, reset_to_zero))


def _affine(nir, op: nn.Linear):
    if op.bias is None:
        return nir.Linear(weight=_array(op.weight))
    return nir.Affine(weight=_array(op.weight), bias=_array(op.bias))


def _metadata(system1: System1, integrator: bool, reset_to_zero: bool) -> dict[str, Any]:
    """The graph's metadata: what NIR does not store (flat: nir.read reads one level, strings as bytes)."""
    from fastslow.pipeline import versions

    spec, lif = system1.spec, system1.spec.lif
    if spec.readout == "spike_count":
        answer = "the class with the most output spikes over the steps"
    elif integrator:
        answer = "the class with the largest output (the integrator's v: the sum of the readout's currents)"
    else:
        answer = "the class with the largest sum of the output over the steps"
    reset = "zero"
    if lif.reset != "zero":
        reset = f"zero (System 1 was trained with reset = {lif.reset}; exported with reset to zero, it answers differently)"
    return {
        "producer": f"fastslow {versions()['fastslow']}",
        "dt": DT,
        "time_convention": (
            "discrete steps of dt seconds; each LIF is forward Euler of tau dv/dt = (v_leak - v) + r I: "
            "v[t] = beta v[t-1] + I[t] with beta = 1 - dt/tau, tau = dt/(1 - beta), r = tau/dt, v_leak = 0; "
            "a spike when v[t] > v_threshold, and then v[t] = v_reset = 0 in the same step; I: v[t] = v[t-1] + dt r I[t]"
        ),
        "beta": float(lif.beta),
        "threshold": float(lif.threshold),
        "reset": reset,
        "timesteps": int(spec.timesteps),
        "encoding": spec.encoding,
        "input": (
            "the input x in [0, 1] itself at every step"
            if spec.encoding == "direct"
            else f"the {spec.encoding}-encoded spikes of x at each step (the encoder is not in the graph)"
        ),
        "answer": f"after `timesteps` steps, {answer}",
        "max_pool": (
            "a 2x2 max-pool of spikes is AvgPool2d(2) then a memoryless LIF (tau = dt: v = I) with "
            f"v_threshold {POOL_THRESHOLD}: it fires iff its window holds a spike"
        ),
        "exits": "the final exit only (exit heads on hidden layers are not exported)",
    }


# --------------------------------------------------------------------------- back into torch


class EulerLIF(nn.Module):
    """A NIR ``LIF`` stepped by forward Euler with step ``dt``: v ← (1 − dt/τ)·v + (dt/τ)·v_leak + (dt·R/τ)·I,
    a spike where v > v_threshold, and there v ← v_reset. ``forward(current [B, ...], state)`` →
    (spikes, v), as nirtorch's stateful modules; parameters broadcast over the batch."""

    def __init__(self, node: "nir_types.LIF", dt: float = DT) -> None:
        super().__init__()
        step = dt / np.asarray(node.tau, dtype=np.float64)
        as_tensor = lambda a: torch.from_numpy(np.asarray(a, dtype=np.float64).copy())  # noqa: E731
        # Rounded to the model's dtype once (nirtorch moves the buffers): for fastslow's graphs the
        # gain is exactly 1 and the decay is β, so a step is β·v + I as fastslow computes it.
        self.register_buffer("decay", as_tensor(1.0 - step))
        self.register_buffer("gain", as_tensor(step * np.asarray(node.r, dtype=np.float64)))
        leak = step * np.asarray(node.v_leak, dtype=np.float64)
        self.register_buffer("leak", as_tensor(leak) if np.any(leak != 0) else None)
        self.register_buffer("threshold", as_tensor(node.v_threshold))
        self.register_buffer("v_reset", as_tensor(node.v_reset))

    def forward(self, current: torch.Tensor, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        v = self.gain * current if state is None else self.decay * state + self.gain * current
        if self.leak is not None:
            v = v + self.leak
        fired = v > self.threshold
        return fired.to(current.dtype), torch.where(fired, self.v_reset.to(v.dtype), v)


class EulerIntegrator(nn.Module):
    """A NIR ``I`` (dv/dt = R·I) stepped by forward Euler: v ← v + dt·R·I; outputs v."""

    def __init__(self, node: "nir_types.I", dt: float = DT) -> None:
        super().__init__()
        self.register_buffer("gain", torch.from_numpy(dt * np.asarray(node.r, dtype=np.float64)))

    def forward(self, current: torch.Tensor, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        v = self.gain * current if state is None else state + self.gain * current
        return v, v


def _flatten(node) -> nn.Flatten:
    # NIR's dims exclude the batch; torch's modules here take a batch first.
    shift = lambda dim: dim + 1 if dim >= 0 else dim  # noqa: E731
    return nn.Flatten(shift(int(node.start_dim)), shift(int(node.end_dim)))


def _linear(node) -> nn.Linear:
    weight = torch.from_numpy(np.array(node.weight))
    bias = getattr(node, "bias", None)
    module = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    module.weight.data = weight
    if bias is not None:
        module.bias.data = torch.from_numpy(np.array(bias))
    return module


def _conv2d(node) -> nn.Conv2d:
    weight = torch.from_numpy(np.array(node.weight))
    padding = node.padding if isinstance(node.padding, str) else tuple(int(p) for p in np.atleast_1d(node.padding))
    module = nn.Conv2d(
        weight.shape[1] * int(node.groups),
        weight.shape[0],
        tuple(weight.shape[2:]),
        stride=tuple(int(s) for s in np.atleast_1d(node.stride)),
        padding=padding,
        dilation=tuple(int(d) for d in np.atleast_1d(node.dilation)),
        groups=int(node.groups),
    )
    module.weight.data = weight
    module.bias.data = torch.from_numpy(np.array(node.bias))
    return module


def _avg_pool2d(node) -> nn.AvgPool2d:
    pair = lambda a: tuple(int(v) for v in np.broadcast_to(np.asarray(a), (2,)))  # noqa: E731
    return nn.AvgPool2d(pair(node.kernel_size), pair(node.stride), pair(node.padding))


def nir_node_map(dt: float = DT) -> dict:
    """nirtorch's node map for the nodes :func:`system1_to_nir` emits, on batched inputs [B, ...]:
    the neurons stepped by forward Euler with step ``dt`` (:class:`EulerLIF`, :class:`EulerIntegrator`),
    Flatten's dims shifted past the batch. (It maps ``Affine`` itself: nirtorch 2.6's default drops the bias.)"""
    _require_nir()
    import nir

    return {
        nir.Affine: _linear,
        nir.Linear: _linear,
        nir.Conv2d: _conv2d,
        nir.Flatten: _flatten,
        nir.AvgPool2d: _avg_pool2d,
        nir.LIF: lambda node: EulerLIF(node, dt),
        nir.I: lambda node: EulerIntegrator(node, dt),
    }


def nir_to_torch(graph: "nir_types.NIRGraph | str | Path", dt: float = DT) -> torch.fx.GraphModule:
    """A NIR graph (or a ``.nir`` file) as a torch module with nirtorch: ``output, state = module(x_t, state)``
    per step (``state`` None at the first), inputs batched [B, ...]."""
    _require_nir()
    import nir
    import nirtorch

    if not hasattr(graph, "nodes"):
        graph = nir.read(str(graph))
    return nirtorch.nir_to_torch(graph, nir_node_map(dt))


# --------------------------------------------------------------------------- fastslow export


@dataclass
class NIRExport:
    """What :func:`export_folder` wrote: the file, its nodes in order (type names), and for a
    System 1 exported with reset to zero instead of subtraction, its test accuracy (fractions)
    before and after the change, on ``test_inputs`` inputs (None where nothing changed)."""

    path: Path
    nodes: list[str]
    accuracy_before: float | None = None
    accuracy_after: float | None = None
    test_inputs: int = 0


def export_folder(folder: str | Path, out: str | Path, *, reset_to_zero: bool = False, integrator: bool = True) -> NIRExport:
    """Write the System 1 of a fit's ``folder`` to ``out`` as a NIR file (:func:`system1_to_nir`).
    With ``reset_to_zero``, a System 1 that resets by subtraction is exported with reset to zero,
    and its accuracy on the fit's test split is measured both ways."""
    _require_nir()
    import nir

    from fastslow.pipeline import load, load_fit

    out = Path(out)
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder: pass a file path, e.g. {out / 'system1.nir'}")
    changes_reset = False
    if reset_to_zero:
        loaded = load_fit(folder)
        system1 = loaded.system1
        changes_reset = system1.spec.lif.reset != "zero"
    else:
        system1 = load(folder).system1
    graph = system1_to_nir(system1, integrator=integrator, reset_to_zero=reset_to_zero)
    buffer = io.BytesIO()
    nir.write(buffer, graph)
    atomic.write_bytes(out, buffer.getvalue())
    export = NIRExport(out, [type(graph.nodes[name]).__name__ for name in _in_order(graph)])
    if changes_reset:
        zero = System1(replace(system1.spec, lif=system1.spec.lif._replace(reset="zero")))
        zero.load_state_dict(system1.state_dict())
        zero.to(next(system1.parameters()).device).eval()
        export.accuracy_before = _test_accuracy(system1, loaded)
        export.accuracy_after = _test_accuracy(zero, loaded)
        export.test_inputs = len(loaded.splits.y_test)
    return export


def _in_order(graph) -> list[str]:
    """The node names of a chain graph from its input to its output."""
    following = dict(graph.edges)
    name = next(n for n in graph.nodes if n not in following.values())
    names = [name]
    while name in following:
        name = following[name]
        names.append(name)
    return names


def _test_accuracy(system1: System1, loaded) -> float:
    """System 1's accuracy (last exit after T steps) on the fit's test split, as its evaluation
    measures it (same batches, same encoder seed)."""
    from fastslow.pipeline import TEST_SEED_OFFSET

    config, splits = loaded.config, loaded.splits
    device = next(system1.parameters()).device
    generator = torch.Generator(device=device).manual_seed(config.seed + TEST_SEED_OFFSET)
    correct = 0
    with torch.no_grad():
        for start in range(0, len(splits.x_test), config.eval_batch_size):
            x = splits.x_test[start : start + config.eval_batch_size].to(device)
            answers = system1.run(x, generator=generator).final_logits.argmax(1).cpu()
            correct += int((answers == splits.y_test[start : start + config.eval_batch_size]).sum())
    return correct / len(splits.y_test)
