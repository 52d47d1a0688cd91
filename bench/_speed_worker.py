"""One library's side of bench/simulation_speed.py, run in that library's virtual environment.

Reads one JSON line (library, network, weights file) on stdin, builds the network with the given
weights, then answers each further line ("time" or "spikes") with one JSON line on stdout.
LIF everywhere: beta 0.9 (tau 10 steps), threshold 1, reset to zero, direct encoding with the
first layer's current computed once; the readout sums the last layer's current over time.
"""

from __future__ import annotations

import json
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

BETA, THRESHOLD, STEPS = 0.9, 1.0, 8


def layers_for(network: str) -> list[nn.Module]:
    if network == "mlp":
        return [nn.Linear(784, 512), nn.Linear(512, 512), nn.Linear(512, 10)]
    return [nn.Conv2d(1, 32, 3, padding=1), nn.Conv2d(32, 64, 3, padding=1), nn.Linear(64 * 7 * 7, 10)]


def pool_after(network: str, index: int) -> bool:
    return network == "conv"


class Plain(nn.Module):
    """The layers with a library's LIF neurons in a loop over time (snnTorch, Norse) or multi-step (SpikingJelly)."""

    def __init__(self, library: str, network: str, ops: list[nn.Module]) -> None:
        super().__init__()
        self.library, self.network, self.ops = library, network, nn.ModuleList(ops)
        if library == "snntorch":
            import snntorch as snn

            self.neurons = nn.ModuleList(snn.Leaky(beta=BETA, threshold=THRESHOLD, reset_mechanism="zero") for _ in ops[:-1])
        elif library == "spikingjelly":
            from spikingjelly.activation_based import neuron

            self.neurons = nn.ModuleList(
                neuron.LIFNode(tau=1.0 / (1.0 - BETA), decay_input=False, v_threshold=THRESHOLD, v_reset=0.0, step_mode="m")
                for _ in ops[:-1]
            )
        elif library == "norse":
            import norse.torch as norse

            params = norse.LIFBoxParameters(
                tau_mem_inv=torch.tensor(1.0 - BETA), v_th=torch.tensor(THRESHOLD), v_reset=torch.tensor(0.0)
            )
            self.neurons = nn.ModuleList(norse.LIFBoxCell(params, dt=1.0) for _ in ops[:-1])
        else:
            raise ValueError(library)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        first = self.ops[0](x)
        counts = [first.new_zeros(()) for _ in self.neurons]
        if self.library == "spikingjelly":
            from spikingjelly.activation_based import functional

            functional.reset_net(self)
            current = first.unsqueeze(0).expand(STEPS, *first.shape)
            for index, (op, cell) in enumerate(zip(self.ops[1:], self.neurons)):
                spikes = cell(current)
                counts[index] = spikes.detach().sum()
                flat = spikes.flatten(0, 1)
                if pool_after(self.network, index):
                    flat = F.max_pool2d(flat, 2)
                if isinstance(op, nn.Linear):
                    flat = flat.flatten(1)
                current = op(flat).unflatten(0, (STEPS, x.shape[0]))
            return current.sum(0), counts
        states = [None] * len(self.neurons)
        if self.library == "snntorch":
            states = [cell.init_leaky() for cell in self.neurons]
        total = 0.0
        for _ in range(STEPS):
            current = first
            for index, (op, cell) in enumerate(zip(self.ops[1:], self.neurons)):
                if self.library == "snntorch":
                    spikes, states[index] = cell(current, states[index])
                else:  # Norse integrates (1 − β)·input: scale so that v = β·v + I as in the others
                    spikes, states[index] = cell(current / (1.0 - BETA), states[index])
                counts[index] = counts[index] + spikes.detach().sum()
                if pool_after(self.network, index):
                    spikes = F.max_pool2d(spikes, 2)
                if isinstance(op, nn.Linear):
                    spikes = spikes.flatten(1)
                current = op(spikes)
            total = total + current
        return total, counts


class Fastslow(nn.Module):
    def __init__(
        self, network: str, ops: list[nn.Module], mode: str, dense: bool = False, graphs: bool = False, backend: str = "auto"
    ) -> None:
        super().__init__()
        import dataclasses

        from simulation_speed import benchmark_spec  # this script's folder is on sys.path

        from fastslow.systems import System1

        spec = benchmark_spec(network, STEPS)
        if dense:  # "fastslow_dense": every synapse a dense matmul
            spec = dataclasses.replace(spec, event_density=0.0)
        self.model, self.mode = System1(spec, backend=backend), mode
        for layer, op in zip(list(self.model.layers) + [self.model.heads[0]], ops):
            target = layer.op if hasattr(layer, "op") else layer
            target.load_state_dict(op.state_dict())
        self.graphs = None
        if graphs:  # "fastslow_graphs" (CUDA): captured on first use, after the worker moved the model
            from fastslow.systems import GraphedSystem1

            self.graphs = GraphedSystem1(self.model)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if self.graphs is not None:  # replayed from CUDA graphs (training: forward and backward)
            run = self.graphs.run(x)
        else:
            run = self.model.run(x, mode=self.mode)
        counts = [(run.spike_rates[h] * layer.neurons).sum() for h, layer in enumerate(self.model.layers)]
        return run.step_outputs[:, -1].sum(0), counts


class Floor(nn.Module):
    """The same convolutions (channels-last, their fastest CPU layout, computed as fastslow computes
    them) and matmuls, on fixed binary inputs of the shapes the network feeds them, without any
    neuron: the floor."""

    def __init__(self, network: str, ops: list[nn.Module]) -> None:
        super().__init__()
        self.network, self.ops = network, nn.ModuleList(ops)
        self.inputs: dict[int, list[torch.Tensor]] = {}

    def _inputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.shape[0] not in self.inputs:
            with torch.no_grad():
                first = self.ops[0](x)
                current = first.unsqueeze(0).expand(STEPS, *first.shape).flatten(0, 1)
                made = []
                for index, op in enumerate(self.ops[1:]):
                    spikes = (current > 0.5).float()
                    if pool_after(self.network, index):
                        spikes = F.max_pool2d(spikes, 2)
                    spikes = (
                        spikes.flatten(1) if isinstance(op, nn.Linear) else spikes.contiguous(memory_format=torch.channels_last)
                    )
                    made.append(spikes)
                    current = op(spikes)
            self.inputs[x.shape[0]] = made
        return self.inputs[x.shape[0]]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if self.network == "conv":  # as fastslow computes it (a one-channel input's NCHW convolution is far slower)
            from fastslow.spiking.synapses import conv_channels_last

            current = conv_channels_last(x, self.ops[0])
        else:
            current = self.ops[0](x)
        for op, spikes in zip(self.ops[1:], self._inputs(x)):
            current = op(spikes)
        return current.unflatten(0, (STEPS, x.shape[0])).sum(0), []


def build(library: str, network: str, weights: dict) -> nn.Module:
    ops = layers_for(network)
    for index, op in enumerate(ops):
        op.load_state_dict({k.split(".", 1)[1]: v for k, v in weights.items() if k.startswith(f"{index}.")})
    if library.startswith("fastslow"):
        # "fastslow_torch": the torch backend (no compiled kernels), side by side with "auto"
        return Fastslow(
            network,
            ops,
            "stepwise" if library.endswith("stepwise") else "multistep",
            dense=library.endswith("dense"),
            graphs=library.endswith("graphs"),
            backend="torch" if library == "fastslow_torch" else "auto",
        )
    if library == "matmul_floor":
        return Floor(network, ops)
    return Plain(library, network, ops)


def main() -> None:
    torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
    setup = json.loads(sys.stdin.readline())
    device = torch.device(setup.get("device", "cpu"))
    weights = torch.load(setup["weights"])
    model = build(setup["library"], setup["network"], weights).to(device)
    data = torch.load(setup["inputs"])
    x, y = data["x"].to(device), data["y"].to(device)
    iterations = setup.get("iterations", 3)
    # GPU work is asynchronous: wait for it before reading the clock
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for line in sys.stdin:
        command = line.strip()
        if command == "spikes":
            with torch.no_grad():
                _, counts = model(x)
            print(json.dumps({"spikes": [float(c) for c in counts]}), flush=True)
        elif command == "time":
            with torch.no_grad():
                sync()
                started = time.perf_counter()
                for _ in range(iterations):
                    model(x)
                sync()
                forward = (time.perf_counter() - started) / iterations
            started = time.perf_counter()
            for _ in range(iterations):
                model.zero_grad(set_to_none=True)
                logits, _ = model(x)
                F.cross_entropy(logits, y).backward()
            sync()
            train = (time.perf_counter() - started) / iterations
            print(json.dumps({"forward_ms": 1000 * forward, "train_ms": 1000 * train}), flush=True)
        elif command == "quit":
            break


if __name__ == "__main__":
    main()
