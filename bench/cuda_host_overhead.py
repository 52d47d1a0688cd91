"""Benchmark (GPU only): where an eager System 1 run's time goes on CUDA, side by side with its CUDA-graph replay.

At the benchmark's sizes the GPU work of a run is a few hundred microseconds and the run is bound by the
host: Python, torch's dispatch and kernel launches. This prints, per network (the speed benchmark's MLP
and conv, T = 8), the eager run's wall time next to the replay's (the device's share), the kernels a
run launches, the host time of one Triton launch next to one torch launch, and the Python functions
that take the host's time (cProfile). Then, in this one process and alternating round by round,
fastslow's eager inference and training step against SpikingJelly's (where importable) and the
matmuls alone.

    python bench/cuda_host_overhead.py [--runs 200] [--profile-top 25] [--rounds 15]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from simulation_speed import NETWORKS, benchmark_spec  # noqa: E402


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _median_ms(work, runs: int, repeats: int = 5) -> float:
    """Median over ``repeats`` of the wall time per call of ``runs`` calls, synchronised at both ends (ms)."""
    times = []
    for _ in range(repeats):
        _synchronize()
        started = time.perf_counter()
        for _ in range(runs):
            work()
        _synchronize()
        times.append((time.perf_counter() - started) / runs * 1000)
    return statistics.median(times)


def _kernels_per_call(work) -> tuple[int, list[tuple[str, float, int]]]:
    """(device kernels one call launches, the top host ops by self CPU time: name, µs per call, calls)."""
    from torch.profiler import ProfilerActivity, profile

    work()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        work()
        torch.cuda.synchronize()
    events = prof.key_averages()
    launches = sum(
        e.count for e in events if e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernelEx")
    )
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:15]
    return launches, [(e.key, e.self_cpu_time_total, e.count) for e in top]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--profile-top", type=int, default=25)
    parser.add_argument("--rounds", type=int, default=15, help="alternating rounds of the side-by-side table")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("cuda_host_overhead: no CUDA device here; nothing to measure")
        return
    from fastslow.spiking import _cuda_kernels
    from fastslow.systems import GraphedSystem1, System1

    device = torch.device("cuda")
    torch.manual_seed(0)
    print(
        f"# {torch.cuda.get_device_name()}, torch {torch.__version__}, kernels {'on' if _cuda_kernels.cuda_kernels_available() else 'off'}"
    )

    # One launch's host cost: a Triton LIF kernel against a torch element-wise kernel on the same small tensor.
    currents = torch.rand(8, 128, 512, device=device)
    v0 = torch.zeros(128, 512, device=device)
    out = torch.empty_like(currents)
    triton_launch = lambda: _cuda_kernels.lif_forward(currents, v0, 0.9, 1.0, True, record=False)  # noqa: E731
    torch_launch = lambda: torch.add(currents, 1.0, out=out)  # noqa: E731
    for work in (triton_launch, torch_launch):
        work()
    torch.cuda.synchronize()
    for name, work in (("triton lif_forward", triton_launch), ("torch add", torch_launch)):
        started = time.perf_counter()
        for _ in range(args.runs * 5):
            work()
        host = (time.perf_counter() - started) / (args.runs * 5) * 1e6
        torch.cuda.synchronize()
        print(
            f"launch host cost, {name}: {host:.1f} µs per call (no synchronisation; device time {_median_ms(work, args.runs) * 1000:.1f} µs)"
        )

    for network, (shape, batch) in NETWORKS.items():
        model = System1(benchmark_spec(network)).to(device)
        x = torch.rand(batch, *shape, device=device)
        target = torch.randint(0, 10, (batch,), device=device)
        graphed = GraphedSystem1(model)

        def infer(run=model.run) -> None:
            with torch.no_grad():
                run(x)

        def train() -> None:
            model.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model.run(x).final_logits, target).backward()

        for work in (infer, lambda: infer(graphed.run), train):
            for _ in range(3):
                work()
        eager, replay, training = (
            _median_ms(infer, args.runs),
            _median_ms(lambda: infer(graphed.run), args.runs),
            _median_ms(train, args.runs),
        )
        torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(args.runs):
            infer()
        host_only = (time.perf_counter() - started) / args.runs * 1000  # the host's pace while the GPU queues up
        torch.cuda.synchronize()
        print(
            f"\n## {network}, batch {batch}: eager inference {eager:.3f} ms, host time per run {host_only:.3f} ms, "
            f"CUDA-graph replay {replay:.3f} ms (device-bound: {eager / replay:.2f}× the replay); training step {training:.3f} ms"
        )
        for name, work in (("inference", infer), ("training", train)):
            launches, top = _kernels_per_call(work)
            print(f"{name}: {launches} kernel launches per run; top host ops (self CPU µs, calls):")
            for key, micros, count in top:
                print(f"    {key:<48} {micros:9.1f} µs  {count:4d}")
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(args.runs):
            infer()
        torch.cuda.synchronize()
        profiler.disable()
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(args.profile_top)
        print(f"cProfile of {args.runs} eager inference runs (tottime: the function's own time):")
        print("\n".join(line for line in text.getvalue().splitlines() if line.strip())[:6000])
    for network in NETWORKS:
        side_by_side(network, args.rounds)


def side_by_side(network: str, rounds: int, runs: int = 10, device: str = "cuda") -> None:
    """Median over alternating rounds of the mean of ``runs`` eager inferences and training steps (ms)."""
    import importlib.util

    import _speed_worker

    device = torch.device(device)
    torch.manual_seed(0)
    ops = _speed_worker.layers_for(network)
    weights = {f"{i}.{k}": v for i, op in enumerate(ops) for k, v in op.state_dict().items()}
    shape, batch = NETWORKS[network]
    x, y = torch.rand(batch, *shape, device=device), torch.randint(0, 10, (batch,), device=device)
    libraries = ["fastslow", "matmul_floor"]
    libraries += ["spikingjelly"] if importlib.util.find_spec("spikingjelly") else []
    models = {lib: _speed_worker.build(lib, network, weights).to(device) for lib in libraries}

    def timed(lib: str) -> tuple[float, float]:
        model = models[lib]
        with torch.no_grad():
            forward = _median_ms(lambda: model(x), runs, repeats=1)
        train = float("nan")
        if lib != "matmul_floor":

            def step() -> None:
                model.zero_grad(set_to_none=True)
                torch.nn.functional.cross_entropy(model(x)[0], y).backward()

            train = _median_ms(step, runs, repeats=1)
        return forward, train

    for lib in libraries:
        timed(lib)  # warm-up (compilation, cuDNN plans)
    times: dict[str, list[tuple[float, float]]] = {lib: [] for lib in libraries}
    for _ in range(rounds):
        for lib in libraries:
            times[lib].append(timed(lib))
    medians = {lib: (statistics.median(t[0] for t in ts), statistics.median(t[1] for t in ts)) for lib, ts in times.items()}
    reference = medians.get("spikingjelly")
    print(
        f"\n## {network}: side by side in one process, median of {rounds} alternating rounds (each the mean of {runs} runs), ms"
    )
    for lib, (forward, train) in medians.items():
        ratio = (
            ""
            if reference is None
            else f"   / SpikingJelly: forward {forward / reference[0]:.2f}×, train {train / reference[1]:.2f}×"
        )
        print(f"    {lib:<24} forward {forward:7.3f}   train {train:7.3f}{ratio}")


if __name__ == "__main__":
    main()
