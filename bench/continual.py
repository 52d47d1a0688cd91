"""Benchmark: Diehl & Cook against SpikeDyn under the continual protocol, over seeds, with SpikeDyn's ablation.

One class per task in order, N unlabelled samples per task. For each dataset and seed (seed s: the
data's split, the task samples and the network all drawn from s) it reports, per model, the mean
over the phases of the accuracy on the newest task and on the older ones (right after each task),
and the *final retention*: the accuracy on each old task after the last task. Every number is a
mean with a 95% t interval over the seeds; every A-vs-B claim a paired difference over the same
seeds. Two fixes described in docs/stdp.md each have a "before" variant: "spikedyn −
rest_relative_commitment" (commitment measured from θ_init) and "spikedyn − committed_dominance"
(the dominance-scaled θ rise for every neuron, fresh ones too).

Data: ``digits`` (scikit-learn 8×8), ``mnist`` (../shared/data), ``mnist16b`` (that MNIST padded to
32×32, averaged over 2×2 areas to 16×16 and thresholded at 0.5: sparse binary digits;
``mnist16b:ROOT`` for MNIST under ROOT), or any ``--data`` spec fastslow reads.

    .venv/bin/python bench/continual.py [--data digits mnist16b] [--seeds 5] [--neurons 400]
        [--samples-per-task 100] [--test-per-task 100] [--no-ablation] [--json FILE]
    .venv/bin/python bench/continual.py --report A.json B.json   # the tables of runs done in parts
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import console, default_data  # noqa: E402
from _stats import mean_interval, paired_difference, verdict  # noqa: E402

from fastslow.data.datasets import Dataset, load_dataset  # noqa: E402
from fastslow.stdp import SPIKEDYN_MECHANISMS, SpikeDynRules, STDPSpec  # noqa: E402
from fastslow.stdp.continual import parse_tasks, run_continual  # noqa: E402

CLAIMS = {"newest": 21.0, "old": 8.0, "training": -51.0, "inference": -37.0}
MECHANISMS = SPIKEDYN_MECHANISMS  # each on by default; the ablation switches each off
BEFORE_FIX = "spikedyn − rest_relative_commitment"  # commitment measured from θ_init
BEFORE_THRESHOLD_FIX = "spikedyn − committed_dominance"  # the dominance rise for every neuron
FIXES = ("rest_relative_commitment", "committed_dominance")
METRICS = (
    ("newest_pct", "newest task, mean over phases"),
    ("old_pct", "old tasks, mean over phases"),
    ("final_old_pct", "old tasks after the last task"),
)


def binarised_16(data: Dataset) -> Dataset:
    """28×28 images → padded to 32×32, mean over 2×2 areas (16×16), ≥ 0.5 → 1 else 0."""

    def shrink(x: np.ndarray) -> np.ndarray:
        x = x.reshape(len(x), 28, 28)
        x = np.pad(x, ((0, 0), (2, 2), (2, 2)))
        x = x.reshape(len(x), 16, 2, 16, 2).mean((2, 4))
        return (x >= 0.5).astype(np.float32).reshape(len(x), 1, 16, 16)

    if tuple(data.x_train.shape[1:]) not in ((1, 28, 28), (28, 28)):
        raise SystemExit(f"error: mnist16b needs 28×28 images, got {data.x_train.shape[1:]}: use MNIST")
    note = f"{data.note}; 16×16 by 2×2 area mean of the 32×32 padded image, thresholded at 0.5"
    return Dataset("mnist16b", shrink(data.x_train), data.y_train, shrink(data.x_test), data.y_test, data.n_classes, note)


def load(name: str, seed: int, out) -> Dataset | None:
    """``mnist`` / ``mnist16b`` from ../shared/data (None, said, where absent), ``mnist16b:ROOT`` from
    ROOT, anything else as fastslow reads it."""
    if name in ("mnist", "mnist16b"):
        spec = default_data(out)
        if spec is None:
            return None
        data = load_dataset(spec, seed=seed)
        return binarised_16(data) if name == "mnist16b" else data
    if name.startswith("mnist16b:"):
        return binarised_16(load_dataset("mnist:" + name[len("mnist16b:") :], seed=seed))
    return load_dataset(name, seed=seed)


def summarise(result) -> dict:
    """Accuracies in %; energy per training sample / test input in µJ."""
    newest = 100 * float(np.mean(result.newest_task_accuracy()))
    old = [a for a in result.old_task_accuracy() if a is not None]
    last = result.accuracy[-1]
    train = float(
        np.mean(
            [sum(v for k, v in p.items() if k not in ("presentations_per_sample", "samples")) for p in result.training_energy_uj]
        )
    )
    infer = float(np.mean([sum(p.values()) for p in result.inference_energy_uj]))
    # The pool: how many neurons each old task's classes hold after the last task, as a share of
    # what they held right after their own task; and how many neurons answer no class at the end.
    classes = [np.asarray(c) for c in result.neuron_classes]
    kept = [
        np.isin(classes[-1], task).sum() / max(np.isin(classes[j], task).sum(), 1) for j, task in enumerate(result.tasks[:-1])
    ]
    return {
        "neurons_kept_pct": 100 * float(np.mean(kept)) if kept else float("nan"),
        "neurons_free_pct": 100 * float((classes[-1] < 0).mean()),
        "newest_pct": newest,
        "old_pct": 100 * float(np.mean(old)) if old else float("nan"),
        "final_old_pct": 100 * float(np.mean(last[:-1])) if len(last) > 1 else float("nan"),
        "final_per_task_pct": [100 * a for a in last],
        "train_uj_per_sample": train,
        "infer_uj_per_input": infer,
        "presentations_per_sample": float(np.mean([p["presentations_per_sample"] for p in result.training_energy_uj])),
        "seconds": result.seconds,
        "accuracy": result.accuracy,
    }


def variants(n_inputs: int, args) -> dict[str, STDPSpec]:
    base = dict(n_inputs=n_inputs, n_neurons=args.neurons, presentation_ms=args.presentation_ms)
    runs = {"diehl-cook": STDPSpec(model="diehl-cook", **base), "spikedyn": STDPSpec(model="spikedyn", **base)}
    for mechanism in MECHANISMS if not args.no_ablation else FIXES:
        runs[f"spikedyn − {mechanism}"] = replace(runs["spikedyn"], rules=replace(SpikeDynRules(), **{mechanism: False}))
    if args.variants:
        unknown = set(args.variants) - set(runs)
        if unknown:
            raise SystemExit(f"error: unknown variants {sorted(unknown)}: choose from {list(runs)}")
        runs = {k: v for k, v in runs.items() if k in args.variants}
    return runs


def _cell(values: list[float | None], digits: int = 1) -> str:
    values = [v for v in values if v is not None]  # None: a run from before the metric was recorded
    return mean_interval(values).format(digits) if values else "—"


def report_dataset(out, name: str, runs: dict[str, list[dict]], args, tasks) -> dict:
    """Print the tables for one dataset; return its paired differences."""
    n = len(next(iter(runs.values())))
    table = Table(
        title=f"{name}: {len(tasks)} tasks × {args.samples_per_task} samples, {args.neurons} neurons, {n} seeds "
        "(mean ± 95% interval; energy cmos45nm, arithmetic only)"
    )
    for column in (
        "model",
        "newest, mean over phases %",
        "old, mean over phases %",
        "old after last task %",
        "train µJ/sample",
        "infer µJ/input",
        "presentations/sample",
    ):
        table.add_column(column, justify="left" if column == "model" else "right")
    for variant, rs in runs.items():
        table.add_row(
            variant,
            *(_cell([r[key] for r in rs]) for key, _ in METRICS),
            _cell([r["train_uj_per_sample"] for r in rs], 2),
            _cell([r["infer_uj_per_input"] for r in rs], 3),
            _cell([r["presentations_per_sample"] for r in rs], 2),
        )
    out.print(table)
    pool = Table(title=f"{name}: the neurons (mean ± 95% interval over {n} seeds)")
    for column in ("model", "old tasks' neurons at the end, % of after their task", "neurons that answer no class at the end %"):
        pool.add_column(column, justify="left" if column == "model" else "right")
    for variant, rs in runs.items():
        pool.add_row(variant, _cell([r.get("neurons_kept_pct") for r in rs]), _cell([r.get("neurons_free_pct") for r in rs]))
    out.print(pool)
    retention = Table(title=f"{name}: accuracy % on each old task after the last task (mean ± 95% interval over {n} seeds)")
    retention.add_column("model")
    for t in tasks[:-1]:
        retention.add_column(",".join(map(str, t)), justify="right")
    for variant in [v for v in ("diehl-cook", BEFORE_THRESHOLD_FIX, BEFORE_FIX, "spikedyn") if v in runs]:
        rs = runs[variant]
        retention.add_row(variant, *(_cell([r["final_per_task_pct"][j] for r in rs], 0) for j in range(len(tasks) - 1)))
    out.print(retention)
    pairs = {
        "spikedyn − diehl-cook": ("spikedyn", "diehl-cook"),
        "before the threshold fix − diehl-cook": (BEFORE_THRESHOLD_FIX, "diehl-cook"),
        "spikedyn − before the threshold fix": ("spikedyn", BEFORE_THRESHOLD_FIX),
        "before the commitment fix − diehl-cook": (BEFORE_FIX, "diehl-cook"),
        "spikedyn − before the commitment fix": ("spikedyn", BEFORE_FIX),
    }
    pairs |= {
        f"without {m} − spikedyn": (f"spikedyn − {m}", "spikedyn")
        for m in MECHANISMS
        if f"spikedyn − {m}" in runs and m not in FIXES
    }
    diffs = Table(title=f"{name}: paired differences in points (A − B on the same seeds, 95% interval)")
    diffs.add_column("A − B", no_wrap=True)
    compared = [*METRICS, ("neurons_kept_pct", "old tasks' neurons kept")]
    if any("neurons_kept_pct" not in r for rs in runs.values() for r in rs):  # runs from before it was recorded
        compared = list(METRICS)
    for _, label in compared:
        diffs.add_column(label, justify="right")
    found = {}
    for label, (a, b) in pairs.items():
        if a not in runs or b not in runs:
            continue
        cells = []
        for key, _ in compared:
            d = paired_difference([r[key] for r in runs[a]], [r[key] for r in runs[b]])
            found[(label, key)] = d
            cells.append(f"{d.format(1, signed=True)} ({verdict(d, 'lower', 'higher')})" if d.n > 1 else d.format(1, signed=True))
        diffs.add_row(label, *cells)
    out.print(diffs)
    return {f"{label} | {key}": {"mean": d.mean, "half": d.half, "n": d.n} for (label, key), d in found.items()}


SIZE_OPTIONS = ("neurons", "samples_per_task", "test_per_task", "presentation_ms")


def _join(files: list[str]) -> tuple[dict[str, tuple[dict[str, list[dict]], str]], dict]:
    """Per dataset, each variant's runs from several --json files (seeds in file order) and the note;
    and the size the runs share (their ``SIZE_OPTIONS``; files of different sizes are refused)."""
    joined: dict[str, tuple[dict[str, list[dict]], str]] = {}
    size: dict = {}
    for file in files:
        report = json.loads(Path(file).read_text())
        this = {key: report["config"][key] for key in SIZE_OPTIONS}
        if size and this != size:
            raise SystemExit(f"error: {file} ran at {this}, the files before it at {size}: join runs of one size")
        size = this
        for name, entry in report["datasets"].items():
            runs, _ = joined.setdefault(name, ({}, entry["note"]))
            for variant, rs in entry["runs"].items():
                runs.setdefault(variant, []).extend(rs)
    return joined, size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=["digits", "mnist16b"], help="digits, mnist, mnist16b or a data spec")
    parser.add_argument("--seeds", type=int, default=5, help="seeds S … S+N−1")
    parser.add_argument("--first-seed", type=int, default=0, help="S (default 0)")
    parser.add_argument(
        "--report",
        nargs="+",
        default=None,
        help="no runs: the tables of these --json files' runs, seeds joined in order (give their --tasks)",
    )
    parser.add_argument("--neurons", type=int, default=400)
    parser.add_argument("--samples-per-task", type=int, default=100)
    parser.add_argument("--test-per-task", type=int, default=100)
    parser.add_argument("--tasks", default=None, help="e.g. '0;1;2' (default: one class per task)")
    parser.add_argument("--presentation-ms", type=float, default=350.0)
    parser.add_argument("--no-ablation", action="store_true", help="only Diehl & Cook, SpikeDyn and SpikeDyn before each fix")
    parser.add_argument("--variants", nargs="+", default=None, help="run only these (e.g. spikedyn 'spikedyn − weight_decay')")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    out = console()
    report: dict = {"config": vars(args), "claimed_deltas": CLAIMS, "datasets": {}}
    joined = None
    if args.report:  # the tables name the runs' size, not this command's defaults
        joined, size = _join(args.report)
        for key, value in size.items():
            setattr(args, key, value)
    for name in joined or args.data:
        runs: dict[str, list[dict]] = {}
        tasks = None
        if joined:
            runs, note = joined[name]
            data = SimpleNamespace(note=note)
            tasks = parse_tasks(args.tasks, len(next(iter(runs.values()))[0]["final_per_task_pct"]))
        for seed in range(args.first_seed, args.first_seed + args.seeds) if not joined else ():
            data = load(name, seed, out)
            if data is None:
                break
            tasks = parse_tasks(args.tasks, data.n_classes)
            for variant, spec in variants(int(np.prod(data.input_shape)), args).items():
                started = time.perf_counter()
                result = run_continual(
                    data, spec, tasks, samples_per_task=args.samples_per_task, test_per_task=args.test_per_task, seed=seed
                )
                runs.setdefault(variant, []).append(summarise(result))
                out.print(f"[dim]{name} seed {seed} {variant}: {time.perf_counter() - started:.0f} s[/dim]")
            if args.json:  # after every seed, so that a run stopped early keeps the seeds it finished
                report["datasets"][name] = {"runs": runs, "note": data.note, "complete": False}
                Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        if not runs:
            continue
        differences = report_dataset(out, name, runs, args, tasks)
        if "diehl-cook" not in runs or "spikedyn" not in runs:
            report["datasets"][name] = {"runs": runs, "paired_differences": differences, "note": data.note, "complete": True}
            continue
        base, ours = runs["diehl-cook"], runs["spikedyn"]
        mean = lambda rs, key: float(np.mean([r[key] for r in rs]))  # noqa: E731
        measured = {
            "newest": mean(ours, "newest_pct") - mean(base, "newest_pct"),
            "old": mean(ours, "old_pct") - mean(base, "old_pct"),
            "training": 100 * (mean(ours, "train_uj_per_sample") / mean(base, "train_uj_per_sample") - 1),
            "inference": 100 * (mean(ours, "infer_uj_per_input") / mean(base, "infer_uj_per_input") - 1),
        }
        claims = Table(title=f"{name}: SpikeDyn against Diehl & Cook, means over seeds beside the paper's claims")
        for column in ("", "newest task (points)", "old tasks (points)", "training energy", "inference energy"):
            claims.add_column(column, justify="right")
        for label, row in (("measured", measured), ("claimed", CLAIMS)):
            claims.add_row(
                label, f"{row['newest']:+.1f}", f"{row['old']:+.1f}", f"{row['training']:+.0f}%", f"{row['inference']:+.0f}%"
            )
        out.print(claims)
        report["datasets"][name] = {
            "runs": runs,
            "paired_differences": differences,
            "measured_deltas": measured,
            "note": data.note,
        }
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
