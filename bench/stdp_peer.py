"""Benchmark: fastslow's Diehl & Cook against BindsNET's ``DiehlAndCook2015``, side by side.

The same MNIST samples from ../shared/data (MNIST/raw/), the same neuron counts (100 and 400) and
the same presentation time; each learns from the training samples without labels, labels its
neurons from them, and is tested. Prints accuracy and training throughput (samples/s) for each,
and fastslow's throughput over BindsNET's (target: ≥ 5×, accuracy within 2 points).

BindsNET is AGPL-3.0 and never a dependency: it is installed into .bench-venvs/bindsnet
(``--no-deps``, this project's torch made visible), and where that fails the script says why. Its
model differs from the reference: current-based neurons, reset −60 mV, at most one spike per
step, input intensity 128 Hz for a white pixel in its example (the reference and fastslow:
63.75 Hz), dt 1 ms. fastslow runs at the reference's dt 0.5 ms and at BindsNET's 1 ms.

    .venv/bin/python bench/stdp_peer.py [--train 1000] [--test 1000] [--neurons 100 400] [--presentation-ms 350]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, console, default_data, peer_python  # noqa: E402

from fastslow.data.datasets import load_dataset  # noqa: E402
from fastslow.stdp import STDPNetwork, STDPSpec  # noqa: E402

WORKER = Path(__file__).resolve().parent / "_bindsnet_worker.py"
BINDSNET = ["bindsnet==0.3.4"]


def run_fastslow(x_train, y_train, x_test, y_test, neurons: int, presentation_ms: float, dt: float, seed: int) -> dict:
    network = STDPNetwork(
        STDPSpec(model="diehl-cook", n_inputs=784, n_neurons=neurons, presentation_ms=presentation_ms, dt_ms=dt), seed=seed
    )
    started = time.perf_counter()
    network.learn(x_train)
    seconds = time.perf_counter() - started
    labelled, _ = network.respond(x_train)
    network.assign_labels(labelled, y_train, 10)
    tested, _ = network.respond(x_test)
    predicted = network.class_votes(tested, 10).argmax(1)
    return {
        "train_samples_per_s": len(x_train) / seconds,
        "accuracy": float((predicted == y_test).mean()),
        "spikes_per_input": float(tested.sum(1).mean()),
    }


def run_bindsnet(python: str, data_file: Path, neurons: int, presentation_ms: float, seed: int, threads: int) -> dict:
    setup = {
        "neurons": neurons,
        "presentation_ms": presentation_ms,
        "dt": 1.0,
        "train": str(data_file),
        "seed": seed,
        "intensity": 128.0,
    }
    result = subprocess.run(
        [python, str(WORKER), str(threads)], input=json.dumps(setup) + "\n", capture_output=True, text=True, cwd=ROOT
    )
    if result.returncode != 0 or not result.stdout.strip():
        raise RuntimeError((result.stderr.strip().splitlines() or ["no output"])[-1])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="default: mnist:../shared/data")
    parser.add_argument("--train", type=int, default=1000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--neurons", type=int, nargs="+", default=[100, 400])
    parser.add_argument("--presentation-ms", type=float, default=350.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-peer", action="store_true", help="fastslow only")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    out = console()
    data_spec = args.data or default_data(out)
    if data_spec is None:
        return 0
    import torch

    torch.set_num_threads(args.threads)
    data = load_dataset(data_spec, seed=args.seed)
    if int(np.prod(data.input_shape)) != 784:
        out.print("skipped: BindsNET's DiehlAndCook2015 example is built for 28×28 inputs; give MNIST")
        return 0
    x_train = data.x_train.reshape(len(data.x_train), -1)[: args.train]
    y_train = data.y_train[: args.train]
    x_test = data.x_test.reshape(len(data.x_test), -1)[: args.test]
    y_test = data.y_test[: args.test]
    python = None if args.no_peer else peer_python("bindsnet", BINDSNET, out)
    report: dict = {}
    with tempfile.TemporaryDirectory() as scratch:
        data_file = Path(scratch, "samples.npz")
        np.savez(data_file, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
        for neurons in args.neurons:
            rows = {}
            for dt in (0.5, 1.0):
                out.print(f"[dim]fastslow, {neurons} neurons, dt {dt} ms …[/dim]")
                rows[f"fastslow (dt {dt} ms)"] = run_fastslow(
                    x_train, y_train, x_test, y_test, neurons, args.presentation_ms, dt, args.seed
                )
            if python is not None:
                out.print(f"[dim]BindsNET, {neurons} neurons, dt 1 ms …[/dim]")
                try:
                    rows["BindsNET (dt 1 ms)"] = run_bindsnet(
                        python, data_file, neurons, args.presentation_ms, args.seed, args.threads
                    )
                except RuntimeError as err:
                    out.print(f"[yellow]BindsNET failed to run ({err}); going on without it[/yellow]")
            report[neurons] = rows
    table = Table(
        title=f"Diehl & Cook on {args.train} MNIST training / {args.test} test samples, {args.presentation_ms:g} ms presentations, "
        f"{args.threads} threads (one learning pass, labels for the readout only)"
    )
    for column in ("neurons", "library", "train samples/s", "accuracy %", "spikes/input", "throughput × BindsNET"):
        table.add_column(column, justify="left" if column in ("library",) else "right")
    for neurons, rows in report.items():
        peer = rows.get("BindsNET (dt 1 ms)")
        for name, r in rows.items():
            ratio = f"{r['train_samples_per_s'] / peer['train_samples_per_s']:.1f}" if peer else "—"
            table.add_row(
                str(neurons),
                name,
                f"{r['train_samples_per_s']:.2f}",
                f"{100 * r['accuracy']:.1f}",
                f"{r['spikes_per_input']:.1f}",
                ratio,
            )
    out.print(table)
    out.print("Targets: accuracy within 2 points of BindsNET's, training throughput ≥ 5× BindsNET's.")
    if args.json:
        Path(args.json).write_text(json.dumps({str(k): v for k, v in report.items()} | {"config": vars(args)}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
