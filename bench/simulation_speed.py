"""Benchmark: fastslow's System 1 simulation against snnTorch, SpikingJelly and Norse, side by side.

Each library runs in its own process (peers in their own virtual environments under
.bench-venvs/, created on first use: `pip install --no-deps` of a pinned release plus its real
needs, with this project's torch made visible through a .pth file, so no other torch build is
pulled in). Libraries are timed in alternation, round after round, and the table shows medians
and ratios measured in this one run: (a) an MLP SNN 784-512-512-10 and (b) a conv SNN
(3×3 convs 1→32→64 on 28×28 with 2×2 pooling), T = 8, direct encoding, batch 128 / 64, 2 threads.
Also: fastslow's LIF overhead (its inference time over the same convolutions and matmuls alone),
inference wall time against mean timesteps (early stopping with compaction; the target point is
mean T/4, also at 4× and 8× the batch) and against the share of inputs escalated to System 2, what
serving itself takes (`FastSlow.predict` with SEENN-I stops, on a System 1 trained for one epoch on
the benchmark data, ../shared/data, when present), peak training memory, and a check that every library emits the same spikes for the same
weights and inputs (reset to zero). `fastslow` uses its compiled kernels (numba on CPU, from the
`cpu` extra; Triton on CUDA: the "auto" backend); `fastslow_torch` is the same network on the "torch" backend.

    .venv/bin/python bench/simulation_speed.py [--rounds 10] [--json FILE] [--no-peers]
    python bench/simulation_speed.py --device cuda [--peers-here]   # on a GPU: its own table
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.table import Table

from fastslow.spiking.backends import available_backends

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, default_data, peer_python  # noqa: E402
from _common import console as wide_console  # noqa: E402

WORKER = Path(__file__).resolve().parent / "_speed_worker.py"
PEERS = {
    "snntorch": ["snntorch==1.0.0"],
    "spikingjelly": ["spikingjelly==2.0.0", "loguru"],
    "norse": ["norse==1.1.0", "nir", "nirtorch", "h5py"],
}
NETWORKS = {"mlp": ((784,), 128), "conv": ((1, 28, 28), 64)}


class Worker:
    def __init__(
        self, python: str, library: str, network: str, weights: Path, inputs: Path, threads: int, iterations: int, device: str
    ) -> None:
        self.library = library
        # "fastslow_torch" asks the worker for System 1's torch backend (no compiled kernels), side by side
        self.process = subprocess.Popen(
            [python, str(WORKER), str(threads)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        self.send(
            {
                "library": library,
                "network": network,
                "weights": str(weights),
                "inputs": str(inputs),
                "iterations": iterations,
                "device": device,
            }
        )

    def send(self, message) -> None:
        self.process.stdin.write((message if isinstance(message, str) else json.dumps(message)) + "\n")
        self.process.stdin.flush()

    def ask(self, command: str) -> dict:
        self.send(command)
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(self.process.stderr.read().strip().splitlines()[-1:] or ["worker died"])
        return json.loads(line)

    def close(self) -> None:
        try:
            self.send("quit")
        except (BrokenPipeError, OSError):
            pass
        self.process.wait(timeout=30)


def peer_here(library: str, out) -> str | None:
    """This Python, for a peer importable here; None (after saying why) if it is not."""
    found = subprocess.run([sys.executable, "-c", f"import {library}"], capture_output=True, text=True)
    if found.returncode != 0:
        out.print(
            f"[yellow]{library}: not importable here ({(found.stderr.strip().splitlines() or ['?'])[-1]}); going on without it[/yellow]"
        )
        return None
    return sys.executable


def benchmark_spec(network: str, timesteps: int = 8, checkpoint_steps: int = 0):
    """fastslow's System 1 for the ``mlp`` or ``conv`` benchmark network (zero reset, direct encoding)."""
    from fastslow.spiking import LIFParams
    from fastslow.systems import System1Spec

    lif = LIFParams(beta=0.9, threshold=1.0, reset="zero")
    if network == "mlp":
        return System1Spec(
            input_shape=(784,),
            n_classes=10,
            hidden=(512, 512),
            timesteps=timesteps,
            encoding="direct",
            lif=lif,
            checkpoint_steps=checkpoint_steps,
        )
    return System1Spec(
        input_shape=(1, 28, 28),
        n_classes=10,
        arch="conv",
        conv_channels=(32, 64),
        hidden=(),
        timesteps=timesteps,
        encoding="direct",
        lif=lif,
        checkpoint_steps=checkpoint_steps,
    )


ESCALATION_RATES = (0.0, 0.1, 0.25, 0.5, 1.0)
# Untimed batches a chunk planner serves before it is timed (three of its exploration periods).
LEARNING_BATCHES = 48


def mixed_stops(batch: int, device: str = "cpu") -> torch.Tensor:
    """The mixed schedule of mean T/4 (T = 8): half the inputs stop after step 1, a quarter after 2, a quarter after 4."""
    return torch.tensor([1] * (batch // 2) + [2] * (batch // 4) + [4] * (batch - batch // 2 - batch // 4), device=device)


def compacted_run(model, x: torch.Tensor, stop_after: torch.Tensor, planner=None) -> None:
    """System 1 as serving advances it on a CPU: chunks of steps, planned by ``planner`` (a
    :class:`~fastslow.serving.chunks.ChunkPlanner`, which also learns from this run's chunk times and
    stops) or doubling (1, 1, 2, 4); inputs that stopped (``stop_after`` [B], steps) leave between
    chunks, the others advance their own rows of the state in place."""
    from fastslow.systems.system1 import doubling_chunks

    timesteps, batch = model.spec.timesteps, x.shape[0]
    constant = model.input_current(model.prepare(x))
    state = None  # at rest
    active = torch.arange(batch, device=x.device)
    done = 0
    chunks = doubling_chunks(timesteps) if planner is None else planner.plan(batch)
    batch_started = time.perf_counter()
    for count in chunks:
        started, entering = time.perf_counter(), len(active)
        rows = None if len(active) == batch else active
        _, state = model.advance(None, state, constant, count, keep_state=done + count < timesteps, rows=rows)
        done += count
        active = active[stop_after[active] > done]
        if planner is not None:
            planner.record_chunk(done - count, count, entering, time.perf_counter() - started)
        if len(active) == 0:
            break
    if planner is not None:
        planner.record_batch(chunks, batch, time.perf_counter() - batch_started)
        planner.record_stops(stop_after)


def early_stop_bound(first_layer_ms: float, full_ms: float) -> float:
    """Mean T/4 with no per-call cost and every step costing the full run's average: every input
    needs the first layer's current (computed once), then a quarter of the rest."""
    return 0.25 + 0.75 * first_layer_ms / full_ms


def learn_chunks(runs: dict, names, batches: int) -> None:
    """Serve ``batches`` untimed batches through each of the runs ``names`` (those whose chunks a
    planner plans), so that the times measured next are its steady state, as on a server that has
    answered many batches, not its first trials of each plan."""
    for name in names:
        for _ in range(batches):
            runs[name]()


def alternating_medians(runs: dict, rounds: int, device: str = "cpu") -> dict[str, float]:
    """Each of ``runs`` (name → callable) once to warm up, then ``rounds`` rounds of all of them in
    turn: the median ms of each (the device synchronised around every run). In each round a run is
    timed right after an untimed run of itself, as a server meets it batch after batch: what ran
    just before (the other runs' thread pools, caches) otherwise changes a short run's time by
    10–20% of the full run's (whichever run followed the full run measured slowest)."""
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for run in runs.values():
        run()
    for _ in range(rounds):
        for name, run in runs.items():
            run()
            sync()
            started = time.perf_counter()
            run()
            sync()
            times[name].append(1000 * (time.perf_counter() - started))
    return {name: statistics.median(values) for name, values in times.items()}


def early_stop_by_batch(
    network: str, batch: int, rounds: int, device: str = "cpu", scales: tuple[int, ...] = (1, 4, 8)
) -> list[dict]:
    """The mixed schedule of mean T/4 against the full run at ``batch`` × each of ``scales`` (ms, medians
    of ``rounds`` alternating rounds): each chunk's fixed cost (~70 small torch operators and three
    compiled calls for the MLP) is shared by more inputs as the batch grows. Chunks planned as
    serving plans them, and doubling."""
    from fastslow.serving.chunks import ChunkPlanner
    from fastslow.systems import System1

    torch.manual_seed(0)
    spec = benchmark_spec(network)
    model = System1(spec).eval().to(device)
    rows = []
    with torch.no_grad():
        for scale in scales:
            size = batch * scale
            x = torch.rand(size, *spec.input_shape, device=device)
            stops = mixed_stops(size, device)
            planner = ChunkPlanner(spec.timesteps)
            runs = {
                "full": lambda: model.run(x),
                "early": lambda: compacted_run(model, x, stops, planner),
                "early, doubling": lambda: compacted_run(model, x, stops),
                "first-layer current": lambda: model.input_current(model.prepare(x)),
            }
            learn_chunks(runs, ["early"], LEARNING_BATCHES)
            ms = alternating_medians(runs, rounds, device)
            rows.append(
                {
                    "batch": size,
                    "full_T_ms": ms["full"],
                    "early_stop_T4_ms": ms["early"],
                    "ratio": ms["early"] / ms["full"],
                    "chunks": planner.plan(size),
                    "doubling_ms": ms["early, doubling"],
                    "doubling_ratio": ms["early, doubling"] / ms["full"],
                    "bound": early_stop_bound(ms["first-layer current"], ms["full"]),
                }
            )
    return rows


def wall_time_curves(network: str, batch: int, rounds: int, device: str = "cpu") -> dict:
    """Inference wall time against mean timesteps and against escalation rate (ms, medians of
    ``rounds`` alternating rounds).

    Mean timesteps: inputs stop after a given step and leave the batch (the others advance their own
    rows of the state, in place), System 1 advancing in chunks planned as serving plans them on a
    CPU (each schedule with its own planner, which learns the schedule's stops and its chunks'
    cost), for all stopping at 1, 2, 4 or 8, for the mixed schedule of mean T/4 (half after step 1, a
    quarter after 2, a quarter after 4) and for one of about the same mean (a third each after
    steps 1, 2 and 3); ratios are to the full multi-step run. Also the mixed schedule in doubling
    chunks (1, 1, 2, 4), and read from one full run's records, as serving does on a GPU.
    Escalation: the full System 1 run plus the default System 2 (LeNet-5) on the escalated share of
    the batch only (each timed on its own); ratios are to escalating every input."""
    from fastslow.energy.accounting import s1_op_counts
    from fastslow.serving.chunks import ChunkPlanner
    from fastslow.systems import System1, System2Spec, build_system2

    torch.manual_seed(0)
    spec = benchmark_spec(network)
    model = System1(spec).eval().to(device)
    system2 = build_system2(System2Spec(input_shape=(1, 28, 28), n_classes=10)).eval().to(device)
    x = torch.rand(batch, *spec.input_shape, device=device)
    images = x.view(batch, 1, 28, 28)
    mixed = mixed_stops(batch, device)
    schedules = {f"all stop at {t}": torch.full((batch,), t, device=device) for t in (1, 2, 4, spec.timesteps)}
    schedules["mixed, mean T/4"] = mixed
    schedules["thirds, mean T/4"] = torch.tensor(
        [1] * (batch // 3) + [2] * (batch // 3) + [3] * (batch - 2 * (batch // 3)), device=device
    )

    def from_records(run_all, stop_after: torch.Tensor) -> None:
        # Serving's GPU default: all T steps at once, then each input's charges up to its stop.
        run = run_all(x)
        s1_op_counts(
            run.synaptic_ops, run.dense_macs, run.neuron_updates, model.exit_layers, stop_after, torch.zeros_like(stop_after)
        )

    # Every input runs step 1, so the first layer's current (computed once) is paid whatever the stops.
    runs = {"full": lambda: model.run(x), "first-layer current": lambda: model.input_current(model.prepare(x))}
    planners = {name: ChunkPlanner(spec.timesteps) for name in schedules}  # each learns its own schedule, as a server would
    runs.update(
        {
            name: (lambda stop=stop, planner=planners[name]: compacted_run(model, x, stop, planner))
            for name, stop in schedules.items()
        }
    )
    runs["mixed, doubling chunks"] = lambda: compacted_run(model, x, mixed)
    runs["records"] = lambda: from_records(model.run, mixed)
    if torch.device(device).type == "cuda":  # and with the run replayed from a CUDA graph (serving's cuda_graphs=True)
        from fastslow.systems import GraphedSystem1

        graphed = GraphedSystem1(model)
        runs["full, graphs"] = lambda: graphed.run(x)
        runs["records, graphs"] = lambda: from_records(graphed.run, mixed)
    # System 2 on the escalated rows alone, timed apart from System 1 (whose time does not depend on
    # the rate) so that System 1's noise does not swamp the difference.
    runs.update(
        {
            f"escalate {rate:g}": (lambda rate=rate: system2(images[: round(rate * batch)]))
            for rate in ESCALATION_RATES
            if rate > 0
        }
    )
    with torch.no_grad():
        learn_chunks(runs, schedules, LEARNING_BATCHES)
        ms = alternating_medians(runs, rounds, device)
    full = ms["full"]
    cascade = {rate: full + ms.get(f"escalate {rate:g}", 0.0) for rate in ESCALATION_RATES}  # S1 at full T, then S2
    all_escalated = cascade[ESCALATION_RATES[-1]]
    return {
        "full_T_ms": full,
        "early_stop_T4_ms": ms["mixed, mean T/4"],
        "early_stop_ratio": ms["mixed, mean T/4"] / full,
        "early_stop_chunks": planners["mixed, mean T/4"].plan(batch),
        "early_stop_doubling_ms": ms["mixed, doubling chunks"],
        "early_stop_doubling_ratio": ms["mixed, doubling chunks"] / full,
        "first_layer_current_ms": ms["first-layer current"],
        "early_stop_bound": early_stop_bound(ms["first-layer current"], full),
        "from_records_ms": ms["records"],
        "from_records_ratio": ms["records"] / full,
        **(
            {"full_T_graphs_ms": ms["full, graphs"], "from_records_graphs_ms": ms["records, graphs"]}
            if "full, graphs" in ms
            else {}
        ),
        "wall_vs_mean_timesteps": [
            {
                "schedule": name,
                "mean_timesteps": float(stop.float().mean()),
                "ms": ms[name],
                "ratio_to_full": ms[name] / full,
                "chunks": planners[name].plan(batch),
            }
            for name, stop in schedules.items()
        ],
        "wall_vs_escalation": [
            {
                "escalation_rate": rate,
                "system2_ms": cascade[rate] - full,
                "ms": cascade[rate],
                "ratio_to_all_escalated": cascade[rate] / all_escalated,
            }
            for rate in ESCALATION_RATES
        ],
    }


SERVING_THRESHOLDS = (0.5, 0.9, 0.99)


def serving_curves(
    network: str,
    batch: int,
    rounds: int,
    data: str,
    device: str = "cpu",
    train_images: int = 6000,
    scales: tuple[int, ...] = (1, 8),
) -> dict:
    """What a user's server takes: ``FastSlow.predict`` (SEENN-I at each of :data:`SERVING_THRESHOLDS`,
    no escalation, so System 2 stays out of the time) on a System 1 of the benchmark's shape trained for
    one epoch on ``train_images`` images of ``data``, for ``batch`` × each of ``scales`` test images
    (while the test split holds them): the stops are the policy's own, not a schedule. Each threshold
    with compaction as ``predict`` does it on a CPU (the MLP: each input stepped until confident in one
    compiled call; the conv net: planned chunks), in planned chunks (the MLP; serving's chunked path),
    in doubling chunks (1, 1, 2, 4), and with the stops read from one full run's records (the GPU
    default); ms, medians of ``rounds`` alternating rounds, ratios to the full multi-step run."""
    from fastslow.data import load_dataset
    from fastslow.policies import Seenn1
    from fastslow.serving import FastSlow
    from fastslow.systems import System1, System2Spec, build_system2
    from fastslow.systems.training import system1_loss, train_classifier

    dataset = load_dataset(data, seed=0)
    spec = benchmark_spec(network)
    if math.prod(dataset.input_shape) != math.prod(spec.input_shape):
        raise ValueError(f"{data} holds inputs of shape {list(dataset.input_shape)}: the benchmark's System 1 takes 28×28 images")
    as_inputs = lambda images: torch.from_numpy(images).float().reshape(len(images), *spec.input_shape)  # noqa: E731
    torch.manual_seed(0)
    model = System1(spec)
    started = time.perf_counter()
    train_classifier(
        model,
        as_inputs(dataset.x_train[:train_images]),
        torch.from_numpy(dataset.y_train[:train_images]).long(),
        system1_loss,
        epochs=1,
        lr=1e-3,
        batch_size=64,
        seed=0,
    )
    trained_s = time.perf_counter() - started
    model = model.eval().to(device)
    system2 = build_system2(System2Spec(input_shape=(1, 28, 28), n_classes=10)).eval().to(device)  # never called: no escalation
    rows = []
    with torch.no_grad():
        for scale in scales:
            size = batch * scale
            if size > len(dataset.x_test):
                continue
            x = as_inputs(dataset.x_test[:size]).to(device)
            labels = torch.from_numpy(dataset.y_test[:size]).to(device)
            modes = {
                "compaction": {"compaction": True},
                "doubling": {"compaction": True, "chunking": "doubling"},
                "records": {"compaction": False},
            }
            if network == "mlp":  # predict serves it in one compiled call: time serving's chunks too
                modes["planned"] = {"compaction": True}
            servers = {
                (threshold, mode): FastSlow(model, system2, Seenn1(threshold, escalate=False), s2_macs=0, **options)
                for threshold in SERVING_THRESHOLDS
                for mode, options in modes.items()
            }
            # The chunked modes call the chunked path itself, which predict takes wherever the compiled one does not apply.
            chunked = ("planned", "doubling")
            runs = {"full": lambda: model.run(x)}
            runs.update(
                {
                    key: (
                        lambda server=server, mode=key[1]: (
                            server._predict_compacted(x, model.prepare(x), None) if mode in chunked else server.predict(x)
                        )
                    )
                    for key, server in servers.items()
                }
            )
            learn_chunks(runs, [key for key in servers if key[1] in ("compaction", "planned")], LEARNING_BATCHES)
            ms = alternating_medians(runs, rounds, device)
            points = []
            for threshold in SERVING_THRESHOLDS:
                server = servers[threshold, "compaction"]
                answer = server.predict(x)
                planner = servers[threshold, "planned" if "planned" in modes else "compaction"].planner
                points.append(
                    {
                        "threshold": threshold,
                        "mean_timesteps": float(answer.timesteps.float().mean()),
                        "accuracy": float((answer.predictions == labels).float().mean()),
                        "chunks": planner.plan(size),
                        **{
                            f"{mode}_{unit}": value
                            for mode in modes
                            for unit, value in (("ms", ms[threshold, mode]), ("ratio", ms[threshold, mode] / ms["full"]))
                        },
                    }
                )
            rows.append({"batch": size, "full_T_ms": ms["full"], "thresholds": points})
    return {"data": data, "train_images": min(train_images, len(dataset.x_train)), "train_s": trained_s, "rows": rows}


_PEAK_SCRIPT = """
import sys, torch
sys.path.insert(0, sys.argv[7])
from fastslow.systems import System1
from simulation_speed import benchmark_spec
network, mode, checkpoint_steps, batch, threads, steps, device = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:7]), sys.argv[8]
torch.set_num_threads(threads)
torch.manual_seed(0)
spec = benchmark_spec(network, steps, checkpoint_steps)
model = System1(spec).to(device)
x, y = torch.rand(batch, *spec.input_shape, device=device) * 0.6, torch.randint(0, 10, (batch,), device=device)
# A two-input step first: module imports and first-call set-up are not the step's memory.
warm = model.run(x[:2], mode=mode).step_outputs[:, -1]
torch.nn.functional.cross_entropy(warm.flatten(0, 1), y[:2].repeat(spec.timesteps)).backward()
model.zero_grad(set_to_none=True)

def status(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field))

if device == "cuda":  # the allocator's own count of GPU memory
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
else:  # getrusage's maximum is inherited from the parent across exec; VmHWM is this process's, reset here.
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = status("VmRSS:")
logits = model.run(x, mode=mode).step_outputs[:, -1]
torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.repeat(spec.timesteps)).backward()
if device == "cuda":
    torch.cuda.synchronize()
    print((torch.cuda.max_memory_allocated() - before) / 2**20)
else:
    print((status("VmHWM:") - before) / 1024)
"""


def peak_training_mib(
    network: str, batch: int, threads: int, timesteps: tuple[int, ...] = (8, 32), device: str = "cpu"
) -> dict[str, dict[str, float]]:
    """Peak memory (MiB above the model and inputs; on CUDA, GPU memory) of one training step at each
    T, each simulation mode in a fresh process: BPTT multi-step, step by step, and gradient
    checkpointing every 4 steps."""
    modes = {"multistep": ("multistep", 0), "stepwise": ("stepwise", 0), "checkpoint_4": ("multistep", 4)}
    result: dict[str, dict[str, float]] = {}
    for steps in timesteps:
        for name, (mode, segment) in modes.items():
            # A fixed mmap threshold makes glibc map and unmap every tensor over 64 KiB, so the peak
            # resident size follows the live tensors instead of the heap's history.
            done = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    _PEAK_SCRIPT,
                    network,
                    mode,
                    str(segment),
                    str(batch),
                    str(threads),
                    str(steps),
                    str(Path(__file__).resolve().parent),
                    device,
                ],
                capture_output=True,
                text=True,
                check=True,
                env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"},
            )
            result.setdefault(f"T{steps}", {})[name] = round(float(done.stdout.strip().splitlines()[-1]), 1)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="timed rounds per library (median reported)")
    parser.add_argument("--iterations", type=int, default=3, help="runs averaged inside one round")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-scale", type=float, default=1.0, help="scale the batch sizes (tests use a tiny one)")
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    parser.add_argument("--no-peers", action="store_true", help="time fastslow and the matmul floor only")
    parser.add_argument("--only", nargs="+", default=None, help="time only these libraries (fastslow and the floor always run)")
    parser.add_argument(
        "--memory-timesteps", type=int, nargs="*", default=[8, 32], help="T at which to measure training peak memory"
    )
    parser.add_argument("--json", default=None, help="also write the table as JSON")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (never both in one table: ratios compare one device)")
    parser.add_argument(
        "--data",
        default=None,
        help="images to train the served System 1 on and serve (default: mnist:../shared/data; without it the serving block is skipped)",
    )
    parser.add_argument("--serving-train-images", type=int, default=6000, help="images the served System 1 trains on, one epoch")
    parser.add_argument(
        "--peers-here",
        action="store_true",
        help="run the peers with this Python (installed beside fastslow, e.g. from carried wheels on a machine "
        "without internet) instead of virtual environments of their own",
    )
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    torch.set_num_threads(args.threads)
    out = wide_console()
    own_libraries = (
        ["fastslow", "fastslow_torch", "fastslow_stepwise", "fastslow_dense"]
        + (["fastslow_graphs"] if args.device == "cuda" else [])
        + ["matmul_floor"]
    )
    libraries = own_libraries + ([] if args.no_peers else list(PEERS))
    if args.only:
        libraries = [lib for lib in libraries if lib in (*args.only, "fastslow", "matmul_floor")]
    pythons = {lib: sys.executable for lib in own_libraries}
    for library in [lib for lib in libraries if lib in PEERS]:
        pythons[library] = peer_here(library, out) if args.peers_here else peer_python(library, PEERS[library], out)
    report: dict = {}
    serving_data = args.data or default_data(out)
    with tempfile.TemporaryDirectory() as scratch:
        for network in args.networks:
            shape, batch = NETWORKS[network]
            batch = max(2, int(batch * args.batch_scale))
            torch.manual_seed(0)
            sys.path.insert(0, str(WORKER.parent))
            from _speed_worker import layers_for

            ops = layers_for(network)
            weights = Path(scratch, f"{network}-weights.pt")
            torch.save({f"{i}.{k}": v for i, op in enumerate(ops) for k, v in op.state_dict().items()}, weights)
            inputs = Path(scratch, f"{network}-inputs.pt")
            torch.save({"x": torch.rand(batch, *shape) * 0.6, "y": torch.randint(0, 10, (batch,))}, inputs)
            workers = {}
            for library in libraries:
                if pythons[library] is None:
                    continue
                try:
                    workers[library] = Worker(
                        pythons[library], library, network, weights, inputs, args.threads, args.iterations, args.device
                    )
                    workers[library].ask("time")  # warm-up
                except (RuntimeError, OSError, json.JSONDecodeError) as err:
                    out.print(f"[yellow]{library}: failed to run the {network} network ({err}); going on without it[/yellow]")
                    workers.pop(library, None)
            samples = {lib: {"forward_ms": [], "train_ms": []} for lib in workers}
            for _ in range(args.rounds):
                for library, worker in workers.items():
                    measured = worker.ask("time")
                    for key in ("forward_ms", "train_ms"):
                        samples[library][key].append(measured[key])
            spikes = {lib: w.ask("spikes")["spikes"] for lib, w in workers.items() if lib != "matmul_floor"}
            for worker in workers.values():
                worker.close()
            medians = {lib: {k: statistics.median(v) for k, v in s.items()} for lib, s in samples.items()}
            curves = wall_time_curves(network, batch, 3 * args.rounds, args.device)  # short runs: more rounds against the noise
            full, early, ratio = curves["full_T_ms"], curves["early_stop_T4_ms"], curves["early_stop_ratio"]
            by_batch = early_stop_by_batch(network, batch, args.rounds, args.device)
            memory = peak_training_mib(network, batch, args.threads, tuple(args.memory_timesteps), args.device)
            serving = (
                None
                if serving_data is None
                else serving_curves(network, batch, args.rounds, serving_data, args.device, args.serving_train_images)
            )
            entry = {lib: medians.get(lib) for lib in own_libraries[:-1] + list(PEERS)}
            entry["device"] = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
            entry["cpu_kernels"] = "numba" in available_backends(args.device, requires_grad=False)
            entry["cuda_kernels"] = "triton" in available_backends(args.device, requires_grad=False)
            entry["matmul_floor_ms"] = medians.get("matmul_floor", {}).get("forward_ms")
            entry.update(curves)
            entry["early_stop_by_batch"] = by_batch
            entry["peak_train_mib"] = memory
            entry["serving"] = serving
            entry["spikes"] = spikes
            report[network] = entry
            own = medians["fastslow"]
            where = entry["device"] if args.device == "cuda" else f"{args.threads} threads"
            table = Table(
                title=f"{network}: T = 8, batch {batch}, {where}, median of {args.rounds} alternating rounds "
                f"(each the mean of {args.iterations} runs)"
            )
            for column in ("library", "forward ms", "train ms", "forward × fastslow", "train × fastslow", "spikes vs fastslow"):
                table.add_column(column, justify="left" if column == "library" else "right")
            for library, m in medians.items():
                match = (
                    ""
                    if library not in spikes
                    else (
                        "same"
                        if spikes[library] == spikes["fastslow"]
                        else "differ: " + ", ".join(f"{a:.0f}/{b:.0f}" for a, b in zip(spikes[library], spikes["fastslow"]))
                    )
                )
                train = "—" if library == "matmul_floor" else f"{m['train_ms']:.2f}"
                train_ratio = "—" if library == "matmul_floor" else f"{m['train_ms'] / own['train_ms']:.2f}"
                table.add_row(
                    library, f"{m['forward_ms']:.2f}", train, f"{m['forward_ms'] / own['forward_ms']:.2f}", train_ratio, match
                )
            out.print(table)
            peers = {lib: medians[lib] for lib in PEERS if lib in medians}
            if peers:
                fastest_fwd = min(m["forward_ms"] for m in peers.values())
                fastest_train = min(m["train_ms"] for m in peers.values())
                out.print(
                    f"fastslow / fastest peer: forward {own['forward_ms'] / fastest_fwd:.2f}×, train {own['train_ms'] / fastest_train:.2f}× (target ≤ 0.8×)"
                )
                if "fastslow_graphs" in medians:
                    graphs = medians["fastslow_graphs"]
                    out.print(
                        f"fastslow replayed from CUDA graphs (GraphedSystem1) / fastest peer: forward "
                        f"{graphs['forward_ms'] / fastest_fwd:.2f}×, train {graphs['train_ms'] / fastest_train:.2f}×"
                    )
            if "matmul_floor" in medians:
                out.print(
                    f"LIF overhead: fastslow inference / matmuls alone = {own['forward_ms'] / medians['matmul_floor']['forward_ms']:.2f}× (target ≤ 1.25×)"
                )
            out.print(
                f"early stopping with compaction at mean T/4: {early:.2f} ms vs full T {full:.2f} ms = {ratio:.2f}× (target ≤ 0.40×), "
                f"in planned chunks {curves['early_stop_chunks']}; in doubling chunks {curves['early_stop_doubling_ms']:.2f} ms = "
                f"{curves['early_stop_doubling_ratio']:.2f}×"
            )
            out.print(
                f"  the first layer's current, which every input needs whatever its stop: {curves['first_layer_current_ms']:.2f} ms; "
                f"with no per-call cost and every step costing the full run's average, mean T/4 would take "
                f"{curves['early_stop_bound']:.2f}× (0.25 + 0.75 × its share)"
            )
            out.print(
                "  the same at larger batches (the fixed cost of each chunk shared by more inputs): "
                + "; ".join(
                    f"batch {row['batch']}: {row['early_stop_T4_ms']:.2f} / {row['full_T_ms']:.2f} ms = {row['ratio']:.2f}× in chunks {row['chunks']} "
                    f"(doubling {row['doubling_ratio']:.2f}×; bound {row['bound']:.2f}×)"
                    for row in by_batch
                )
            )
            out.print(
                f"all T steps at once, stops read from the records (serving's GPU default): {curves['from_records_ms']:.2f} ms = "
                f"{curves['from_records_ratio']:.2f}× the full run"
            )
            if "full_T_graphs_ms" in curves:
                out.print(
                    f"the same with the run replayed from a CUDA graph: {curves['from_records_graphs_ms']:.2f} ms = "
                    f"{curves['from_records_graphs_ms'] / full:.2f}× the eager full run, "
                    f"{curves['from_records_graphs_ms'] / curves['full_T_graphs_ms']:.2f}× the graphed full run ({curves['full_T_graphs_ms']:.2f} ms)"
                )
            out.print(
                "wall time against mean timesteps (inputs leave the batch as they stop; × the full multi-step run): "
                + "; ".join(
                    f"{p['schedule']} (mean {p['mean_timesteps']:g}) {p['ms']:.2f} ms = {p['ratio_to_full']:.2f}× in {p['chunks']}"
                    for p in curves["wall_vs_mean_timesteps"]
                )
            )
            out.print(
                "wall time against escalation rate (full System 1, then LeNet-5 System 2 on the escalated inputs only; "
                "× escalating all): "
                + "; ".join(
                    f"{p['escalation_rate']:.0%} {p['ms']:.2f} ms (S2 {p['system2_ms']:.2f}) = {p['ratio_to_all_escalated']:.2f}×"
                    for p in curves["wall_vs_escalation"]
                )
            )
            if serving is not None:
                out.print(
                    f"serving (FastSlow.predict: SEENN-I stops, no escalation; × the full run) with a System 1 trained for one epoch "
                    f"on {serving['train_images']} images of {serving['data']} ({serving['train_s']:.0f} s): "
                    + "; ".join(
                        f"batch {row['batch']} (full run {row['full_T_ms']:.2f} ms): "
                        + ", ".join(
                            f"θ {p['threshold']:g} (mean {p['mean_timesteps']:.2f} steps, accuracy {p['accuracy']:.1%}) "
                            + (
                                f"compiled {p['compaction_ms']:.2f} ms = {p['compaction_ratio']:.2f}×, planned chunks "
                                f"{p['planned_ms']:.2f} ms = {p['planned_ratio']:.2f}× in {p['chunks']}, "
                                if "planned_ms" in p
                                else f"compaction {p['compaction_ms']:.2f} ms = {p['compaction_ratio']:.2f}× in {p['chunks']}, "
                            )
                            + f"doubling {p['doubling_ms']:.2f} ms = {p['doubling_ratio']:.2f}×, "
                            f"records {p['records_ms']:.2f} ms = {p['records_ratio']:.2f}×"
                            for p in row["thresholds"]
                        )
                        for row in serving["rows"]
                    )
                )
            out.print(
                f"peak {'GPU ' if args.device == 'cuda' else ''}memory of one training step (MiB above model and inputs): "
                + "; ".join(
                    f"{t}: " + ", ".join(f"{mode} {mib:.1f}" for mode, mib in by_mode.items()) for t, by_mode in memory.items()
                )
            )
    if args.json:
        report["meta"] = run_record(args)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


def run_record(args: argparse.Namespace) -> dict:
    """What made the table: the options, the fixed set-up, the seed, and versions (fastslow's commit too)."""
    from importlib import metadata

    from fastslow.pipeline import versions

    found = versions()
    for name in ("numba", "triton"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    git = lambda *command: subprocess.run(["git", *command], cwd=ROOT, capture_output=True, text=True).stdout.strip()  # noqa: E731
    commit = git("rev-parse", "--short", "HEAD")
    # A tree that differs from its commit (edits, or a copy whose .git is older than its files) says so.
    changed = git("status", "--porcelain", "--untracked-files=no", "--", "src", "bench")
    found["fastslow_commit"] = (commit + ("+modified" if changed else "")) if commit else "unknown"
    return {
        "config": {**vars(args), "timesteps": 8, "batches": {name: batch for name, (_, batch) in NETWORKS.items()}},
        "seed": 0,
        "peers_pinned": PEERS,
        "versions": found,
    }


if __name__ == "__main__":
    sys.exit(main())
