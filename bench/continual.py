"""Benchmark: Diehl & Cook against SpikeDyn under the continual protocol, with SpikeDyn's ablation.

MNIST from ../shared/data (MNIST/raw/), one class per task in order, N unlabelled samples per
task, 400 excitatory neurons. Prints newest-task and old-task accuracy, training and inference
energy (cmos45nm, arithmetic only) side by side, our measured deltas beside SpikeDyn's published
claims (+21 points newest task, +8 old tasks, −51% training and −37% inference energy against its
baseline), and each SpikeDyn mechanism switched off in turn.

    .venv/bin/python bench/continual.py [--neurons 400] [--samples-per-task 100] [--no-ablation] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import console, default_data  # noqa: E402

from fastslow.data.datasets import load_dataset  # noqa: E402
from fastslow.stdp import SpikeDynRules, STDPSpec  # noqa: E402
from fastslow.stdp.continual import parse_tasks, run_continual  # noqa: E402

CLAIMS = {"newest": 21.0, "old": 8.0, "training": -51.0, "inference": -37.0}
MECHANISMS = ("direct_inhibition", "adaptive_rates", "adaptive_threshold", "weight_decay", "spurious_reduction")


def summarise(result) -> dict:
    newest = 100 * float(np.mean(result.newest_task_accuracy()))
    old = [a for a in result.old_task_accuracy() if a is not None]
    train = float(
        np.mean(
            [sum(v for k, v in p.items() if k not in ("presentations_per_sample", "samples")) for p in result.training_energy_uj]
        )
    )
    infer = float(np.mean([sum(p.values()) for p in result.inference_energy_uj]))
    return {
        "newest_pct": newest,
        "old_pct": 100 * float(np.mean(old)) if old else float("nan"),
        "train_uj_per_sample": train,
        "infer_uj_per_input": infer,
        "seconds": result.seconds,
        "accuracy": result.accuracy,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="default: mnist:../shared/data")
    parser.add_argument("--neurons", type=int, default=400)
    parser.add_argument("--samples-per-task", type=int, default=100)
    parser.add_argument("--test-per-task", type=int, default=100)
    parser.add_argument("--tasks", default=None, help="e.g. '0;1;2' (default: one class per task)")
    parser.add_argument("--presentation-ms", type=float, default=350.0)
    parser.add_argument("--no-ablation", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    out = console()
    data_spec = args.data or default_data(out)
    if data_spec is None:
        return 0
    data = load_dataset(data_spec, seed=args.seed)
    tasks = parse_tasks(args.tasks, data.n_classes)
    n_inputs = int(np.prod(data.input_shape))
    runs = {
        "diehl-cook": STDPSpec(
            model="diehl-cook", n_inputs=n_inputs, n_neurons=args.neurons, presentation_ms=args.presentation_ms
        ),
        "spikedyn": STDPSpec(model="spikedyn", n_inputs=n_inputs, n_neurons=args.neurons, presentation_ms=args.presentation_ms),
    }
    if not args.no_ablation:
        for mechanism in MECHANISMS:
            runs[f"spikedyn − {mechanism}"] = replace(runs["spikedyn"], rules=replace(SpikeDynRules(), **{mechanism: False}))
    report = {}
    for name, spec in runs.items():
        out.print(f"[dim]{name}: {len(tasks)} tasks × {args.samples_per_task} samples …[/dim]")
        report[name] = summarise(
            run_continual(
                data, spec, tasks, samples_per_task=args.samples_per_task, test_per_task=args.test_per_task, seed=args.seed
            )
        )
    table = Table(
        title=f"Continual protocol on {data.name}: {len(tasks)} tasks, {args.samples_per_task} samples each, "
        f"{args.neurons} neurons (mean over the tasks; energy cmos45nm, arithmetic only)"
    )
    for column in ("model", "newest task %", "old tasks %", "train µJ/sample", "infer µJ/input", "time s"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name, r in report.items():
        table.add_row(
            name,
            f"{r['newest_pct']:.1f}",
            f"{r['old_pct']:.1f}",
            f"{r['train_uj_per_sample']:.2f}",
            f"{r['infer_uj_per_input']:.3f}",
            f"{r['seconds']:.0f}",
        )
    out.print(table)
    base, ours = report["diehl-cook"], report["spikedyn"]
    measured = {
        "newest": ours["newest_pct"] - base["newest_pct"],
        "old": ours["old_pct"] - base["old_pct"],
        "training": 100 * (ours["train_uj_per_sample"] / base["train_uj_per_sample"] - 1),
        "inference": 100 * (ours["infer_uj_per_input"] / base["infer_uj_per_input"] - 1),
    }
    deltas = Table(title="SpikeDyn against Diehl & Cook: measured here beside the paper's claims")
    for column in ("", "newest task (points)", "old tasks (points)", "training energy", "inference energy"):
        deltas.add_column(column, justify="right")
    deltas.add_row(
        "measured",
        f"{measured['newest']:+.1f}",
        f"{measured['old']:+.1f}",
        f"{measured['training']:+.0f}%",
        f"{measured['inference']:+.0f}%",
    )
    deltas.add_row(
        "claimed",
        f"{CLAIMS['newest']:+.0f}",
        f"{CLAIMS['old']:+.0f}",
        f"{CLAIMS['training']:+.0f}%",
        f"{CLAIMS['inference']:+.0f}%",
    )
    out.print(deltas)
    if args.json:
        Path(args.json).write_text(
            json.dumps({"runs": report, "measured_deltas": measured, "claimed_deltas": CLAIMS, "config": vars(args)}, indent=2)
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
