"""GPU checks and a training benchmark for the deep networks: the ResNet-19- and VGG-16-style System 1
and the ResNet-18 System 2, on 3×32×32 inputs.

Checks (each prints "ok" or raises, so the script exits non-zero on a failure):
- which kernels run the LIF (``System1.resolve_backend``) for training and for inference;
- the fused kernels ("triton" on CUDA, "numba" on CPU) against the torch backend: the same records at
  inference (bit for bit), the same gradients in training (up to float rounding);
- mixed precision (CUDA only): a training step under ``torch.autocast`` (bfloat16 convolutions and
  batch norm, the LIF membrane in float32, so the fused kernels still run) gives finite losses and
  gradients;
- CUDA graphs at inference (CUDA only): ``GraphedSystem1`` replays the eager run's records exactly.

Benchmark: training images/s (forward, backward and an SGD step) and inference images/s, fastslow
against the same network built from SpikingJelly's layers (``SeqToANNContainer`` conv-BN, multi-step
``LIFNode``, the same weights), in one process, alternating rounds, medians. SpikingJelly is taken
from this Python (``.whl/`` on the GPU machine); without it that column is skipped.

    python3 bench/deep_gpu.py --device cuda --json bench/results/deep_gpu.json   (bench/cuda.sh runs it)
    python3 bench/deep_gpu.py --device cpu --tiny                                (a quick CPU check)

Sized to finish in a few minutes on one GPU (under 10 with Triton's first compilations).
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from fastslow.energy import count_macs  # noqa: E402
from fastslow.spiking import LIFParams  # noqa: E402
from fastslow.systems import GraphedSystem1, System1, System1Spec, System2Spec, build_system2  # noqa: E402
from fastslow.systems.deep import ConvBN  # noqa: E402

# LIF as the peers' benchmarks use it: beta 0.9 (tau 10 steps), threshold 1, reset to zero.
LIF = LIFParams(beta=0.9, threshold=1.0, reset="zero")


def networks(tiny: bool) -> dict[str, dict]:
    """The benchmarked System 1 networks: ResNet-19 and VGG-16 as published (TET, SEENN), or tiny."""
    if tiny:
        return {
            "resnet19": dict(arch="resnet", stage_channels=(8, 16, 32), stage_blocks=(1, 1, 1)),
            "vgg16": dict(arch="vgg", stage_channels=(8, 16, 32), stage_blocks=(1, 1, 2)),
        }
    return {"resnet19": dict(arch="resnet"), "vgg16": dict(arch="vgg")}


def build(kind: dict, timesteps: int, device: torch.device) -> System1:
    spec = System1Spec(
        input_shape=(3, 32, 32),
        n_classes=10,
        timesteps=timesteps,
        encoding="direct",
        lif=LIF,
        exit_heads=(0, 1),
        **kind,
    )
    torch.manual_seed(0)
    model = System1(spec)
    # Untrained BN adds nothing, so an identity shortcut's spike alone would bring a membrane to exactly
    # the threshold, where the libraries' rules differ (v > θ fires here, v ≥ θ in SpikingJelly): small
    # random BN shifts keep the currents off it.
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.bias.uniform_(-0.05, 0.05)
    return model.to(device)


class SpikingJellyDeep(nn.Module):
    """``model``'s network from SpikingJelly's layers, with its weights: each unit's branches as
    ``SeqToANNContainer(conv, BN)`` (batch norm through time) summed, then a multi-step ``LIFNode``;
    the same exit heads (global average pool → linear), the first unit's current computed once."""

    def __init__(self, model: System1) -> None:
        super().__init__()
        from spikingjelly.activation_based import layer, neuron

        self.timesteps = model.spec.timesteps
        self.sources = [unit.sources for unit in model.layers]
        self.pools = [unit.pool for unit in model.layers]
        self.exit_layers = model.exit_layers
        lif = model.spec.lif
        self.branches = nn.ModuleList(
            nn.ModuleList(
                layer.SeqToANNContainer(copy.deepcopy(b.conv), copy.deepcopy(b.bn)) if isinstance(b, ConvBN) else nn.Identity()
                for b in unit.branches
            )
            for unit in model.layers
        )
        self.neurons = nn.ModuleList(
            neuron.LIFNode(tau=1.0 / (1.0 - lif.beta), decay_input=False, v_threshold=lif.threshold, v_reset=0.0, step_mode="m")
            for _ in model.layers
        )
        self.heads = copy.deepcopy(model.heads)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        from spikingjelly.activation_based import functional

        functional.reset_net(self)
        outs: list[torch.Tensor] = []
        counts: list[torch.Tensor] = []  # each layer's spikes, before its pool (as System 1 counts them)
        for index, (sources, branches, cell) in enumerate(zip(self.sources, self.branches, self.neurons)):
            if index == 0:
                first = branches[0](x.unsqueeze(0))[0]  # [1, B, ...]: the image's current, once
                current = first.unsqueeze(0).expand(self.timesteps, *first.shape)
            else:
                current = sum(branch(outs[s] if s >= 0 else x) for s, branch in zip(sources, branches))
            spikes = cell(current)
            counts.append(spikes.detach().sum())
            if self.pools[index]:
                spikes = F.max_pool2d(spikes.flatten(0, 1), 2).unflatten(0, spikes.shape[:2])
            outs.append(spikes)
        logits = [head(outs[h].mean((-2, -1))).mean(0) for head, h in zip(self.heads, self.exit_layers)]
        return logits[-1], counts


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device, runs: int) -> float:
    """Mean seconds of ``runs`` calls."""
    _sync(device)
    start = time.perf_counter()
    for _ in range(runs):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / runs


def check(name: str, ok: bool, detail: str = "") -> None:
    print(f"  {'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}")
    if not ok:
        raise SystemExit(f"check failed: {name} {detail}")


def checks(model: System1, x: torch.Tensor, y: torch.Tensor) -> None:
    device = x.device
    fused = "triton" if device.type == "cuda" else "numba"
    print(f"  LIF kernels: training {model.resolve_backend(True)}, inference {model.resolve_backend(False)}")
    model.eval()
    with torch.no_grad():
        reference = copy.deepcopy(model)
        reference.requested_backend = "torch"
        model.requested_backend = fused
        a, b = model.run(x), reference.run(x)
        same = all(
            torch.equal(getattr(a, f), getattr(b, f)) for f in ("step_outputs", "synaptic_ops", "dense_macs", "spike_rates")
        )
        check(f"inference records, {fused} = torch", same)
    model.train()
    if device.type == "cuda":  # the compiled CPU kernels run inference only
        reference = copy.deepcopy(model)
        reference.requested_backend = "torch"
        grads = []
        for m in (model, reference):
            m.zero_grad(set_to_none=True)
            F.cross_entropy(m.run(x).final_logits, y).backward()
            grads.append(torch.cat([p.grad.flatten() for p in m.parameters()]))
        error = float((grads[0] - grads[1]).abs().max() / grads[1].abs().max().clamp_min(1e-12))
        check(f"training gradients, {fused} ≈ torch", error < 1e-3, f"max relative error {error:.1e}")
        model.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = F.cross_entropy(model.run(x).final_logits.float(), y)
        loss.backward()
        finite = bool(torch.isfinite(loss)) and all(bool(torch.isfinite(p.grad).all()) for p in model.parameters())
        check("mixed precision (bfloat16 autocast) training step", finite, f"loss {float(loss):.4f}")
        model.eval()
        with torch.no_grad():
            eager = model.run(x)
            graphed = GraphedSystem1(model).run(x)
            same = all(torch.equal(getattr(eager, f), getattr(graphed, f)) for f in ("logits", "synaptic_ops", "spike_rates"))
            check("CUDA graph replay = eager run (inference)", same)
        model.train()
    else:
        print("  skip mixed precision, CUDA graphs, fused training kernels: CUDA only")
    model.requested_backend = "auto"


def bench(model: System1, x: torch.Tensor, y: torch.Tensor, rounds: int, runs: int) -> dict[str, dict[str, float]]:
    """Images/s per contender: training (fp32, bf16 autocast on CUDA) and inference (eager; CUDA graphs)."""
    device = x.device
    batch = x.shape[0]
    contenders: dict[str, tuple] = {}
    amp = device.type == "cuda"

    def trainer(net, forward, bf16: bool):
        optimizer = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = forward(x)
            F.cross_entropy(logits.float(), y).backward()
            optimizer.step()

        return step

    def inferrer(net, forward):
        def infer() -> None:
            with torch.no_grad():
                forward(x)

        return infer

    ours = model
    contenders["fastslow"] = (
        ours,
        trainer(ours, lambda v: ours.run(v).final_logits, False),
        inferrer(ours, lambda v: ours.run(v).final_logits),
    )
    if amp:
        contenders["fastslow bf16"] = (ours, trainer(ours, lambda v: ours.run(v).final_logits, True), None)
        graphs = GraphedSystem1(ours)
        contenders["fastslow CUDA graphs"] = (ours, None, inferrer(ours, lambda v: graphs.run(v).final_logits))
    peer = None
    if importlib.util.find_spec("spikingjelly") is not None:
        try:  # an offline run should still time fastslow if the peer cannot run here
            peer = SpikingJellyDeep(model).to(device).eval()  # (eval: BN's running statistics stay as copied)
            with torch.no_grad():
                peer(x)
        except Exception as err:  # noqa: BLE001
            print(
                f"  SpikingJelly cannot run here ({type(err).__name__}: {str(err).splitlines()[0][:200]}): its column is skipped"
            )
            peer = None
    else:
        print("  SpikingJelly not installed here: its column is skipped")
    if peer is not None:
        contenders["SpikingJelly"] = (peer, trainer(peer, lambda v: peer(v)[0], False), inferrer(peer, lambda v: peer(v)[0]))
        if amp:
            contenders["SpikingJelly bf16"] = (peer, trainer(peer, lambda v: peer(v)[0], True), None)
        # Same weights, same spikes (up to the LIF's float rounding: v·(1 − 1/τ) against β·v), at
        # inference and in training mode (batch norm over the T·B maps in both).
        for mode in ("inference", "training"):
            peer.train(mode == "training"), model.train(mode == "training")
            with torch.no_grad():
                theirs = torch.stack(peer(x)[1])
                mine = model.run(x).spike_rates.sum((1, 2)) * model.neuron_counts()[: len(model.layers)]
            error = float(((theirs - mine).abs() / theirs.clamp_min(1)).max())
            check(f"SpikingJelly's network: the same spike counts per layer, {mode} (within 1%)", error < 0.01, f"{error:.1e}")
        peer.train(), model.train()
    for name, (net, train, infer) in list(contenders.items()):  # warm-up: compilation, cuDNN plans, graph capture
        try:
            net.train()
            if train:
                train()
            net.eval()
            if infer:
                infer()
            net.train()
        except Exception as err:  # noqa: BLE001  (one contender failing leaves the others' numbers)
            if name == "fastslow":
                raise
            print(f"  {name} cannot run here ({type(err).__name__}: {str(err).splitlines()[0][:200]}): skipped")
            del contenders[name]
            net.train()
    results = {name: {"train": [], "infer": []} for name in contenders}
    for _ in range(rounds):
        for name, (net, train, infer) in contenders.items():
            net.train()
            if train:
                results[name]["train"].append(batch / _timed(train, device, runs))
            net.eval()
            if infer:
                results[name]["infer"].append(batch / _timed(infer, device, runs))
            net.train()
    return {
        name: {kind: statistics.median(v) if v else float("nan") for kind, v in r.items()}
        | {f"{kind}_all": v for kind, v in r.items()}
        for name, r in results.items()
    }


def bench_system2(x: torch.Tensor, y: torch.Tensor, rounds: int, runs: int, tiny: bool) -> dict[str, float]:
    """System 2 (ResNet-18, width 64; 8 when ``tiny``): its MACs and training images/s."""
    device = x.device
    model = build_system2(System2Spec((3, 32, 32), 10, width=8 if tiny else 64)).to(device)
    macs = sum(count_macs(model, (3, 32, 32)).values())
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    out = {"macs": macs}
    for label, bf16 in (("fp32", False), ("bf16", True)) if device.type == "cuda" else (("fp32", False),):

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(model(x).float(), y)
            loss.backward()
            optimizer.step()

        step()
        out[f"train_{label}"] = statistics.median(x.shape[0] / _timed(step, device, runs) for _ in range(rounds))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="narrow networks, a batch of 4: a quick check (CPU)")
    parser.add_argument("--timesteps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=None, help="default 64 (--tiny: 4)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=5, help="timed calls per round")
    parser.add_argument("--only", choices=["resnet19", "vgg16"], default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    batch = args.batch or (4 if args.tiny else 64)
    if args.tiny:
        args.rounds, args.runs = min(args.rounds, 2), min(args.runs, 1)
    print(f"torch {torch.__version__}, device {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}")
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, 32, 32, generator=generator).to(device)
    y = torch.randint(0, 10, (batch,), generator=generator).to(device)
    report: dict = {"device": str(device), "batch": batch, "timesteps": args.timesteps, "networks": {}}
    rows = []
    for name, kind in networks(args.tiny).items():
        if args.only and name != args.only:
            continue
        model = build(kind, args.timesteps, device)
        print(f"\n## {name}: {len(model.layers)} LIF layers, {model.parameter_count():,} parameters, T = {args.timesteps}")
        checks(model, x[: min(batch, 8)], y[: min(batch, 8)])
        results = bench(model, x, y, args.rounds, args.runs)
        report["networks"][name] = results
        for contender, r in results.items():
            rows.append(f"| {name} | {contender} | {r['train']:.1f} | {r['infer']:.1f} |")
    system2 = bench_system2(x, y, args.rounds, args.runs, args.tiny)
    report["system2_resnet18"] = system2
    print(f"\n## training and inference, images/s, batch {batch}, T = {args.timesteps}, median of {args.rounds} rounds")
    print("| network | contender | training images/s | inference images/s |\n| --- | --- | ---: | ---: |")
    print("\n".join(rows))
    print(
        f"\nSystem 2 ResNet-18 ({system2['macs'] / 1e6:.0f} M MACs): training "
        + ", ".join(f"{k[6:]} {v:.1f} images/s" for k, v in system2.items() if k.startswith("train_"))
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
