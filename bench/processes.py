"""Benchmark: a fit on 1 process against the same fit on N processes (`fastslow fit --processes N`).

Each round runs, in alternating order from round to round, `fastslow fit --processes 1` and
`--processes N` (default 2) on the same config and seed, each a child process as a user types it,
for each size:

- `digits`: the default fit (`fastslow fit --data digits`, every policy family);
- `wide`: digits with a wider System 1 (`fc 64→512→256`, T = 8) and System 2 (hidden 512), 10 epochs
  each, policies `confidence` only: the training, which runs data-parallel, is most of the fit.

Per fit: the wall time of the whole command (the workers' start included), its CPU time (user +
system of it and its workers), and the wall time of training System 1 and System 2 as rank 0
measured it (results.json's `distributed.train_seconds`), and rank 0's CPU time while training
(`train_cpu_seconds`: its share of the work, plus what waiting costs it). Per size and round the ratios
1-process / N-process (the speed-up; paired, same round), then over rounds their median and
spread (min–max) and mean ± 95% t interval. The load average before each fit is recorded: on a
machine shared with other work, more processes also take a larger share of it. Bounded: a fit is
stopped after `--fit-timeout-s`, and no round starts after `--budget-s`.

    .venv/bin/python bench/processes.py [--rounds 5] [--processes 2] [--sizes digits wide] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _stats import mean_interval  # noqa: E402

from fastslow.runtime import usable_cpus  # noqa: E402

SIZES = {
    "digits": "",
    "wide": """
policies = ["confidence"]
[system1]
hidden = [512, 256]
epochs = 10
[system2]
arch = "mlp"
hidden = 512
epochs = 10
""",
    # For the test of this script: seconds, not minutes.
    "tiny": """
policies = ["confidence"]
[system1]
hidden = [32, 16]
timesteps = 3
epochs = 1
[system2]
epochs = 1
[confidence]
thresholds = [0.5, 0.9]
""",
}


# What each fit reports, and its label: the command's wall time, rank 0's wall time training, the
# command's CPU time (all processes), rank 0's CPU time training (its share of the work, and waiting).
MEASURES = {"wall_s": "fit", "train_s": "training", "cpu_s": "CPU", "train_cpu_s": "train CPU"}


def run_fit(config: Path | None, processes: int, out: Path, timeout_s: float) -> dict:
    """One `fastslow fit --processes P` in a child: wall and CPU seconds, the training seconds it recorded."""
    command = [sys.executable, "-m", "fastslow", "fit", "--data", "digits", "--out", str(out), "--device", "cpu"]
    command += ["--quiet", "--processes", str(processes)] + ([] if config is None else ["--config", str(config)])
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"processes": processes, "finished": False, "wall_s": timeout_s, "load": load}
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"fit --processes {processes} failed: {done.stderr.strip().splitlines()[-1:]}")
    record = json.loads((out / "results.json").read_text())
    train = record["distributed"]["train_seconds"]
    return {
        "processes": processes,
        "finished": True,
        "wall_s": wall,
        "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "train_s": train["system1"] + train["system2"],
        "train_seconds": train,
        "train_cpu_s": sum(record["distributed"]["train_cpu_seconds"].values()),
        "world_size": record["distributed"]["world_size"],
        "load": load,
        "accuracy": {s["name"]: s["accuracy"] for s in record["strategies"] if s["name"] in ("system1", "system2")},
    }


def summarise(rounds: list[dict[int, dict]], processes: int) -> dict:
    """Per measure: the N-process value, the 1-process value and the paired speed-up over rounds."""
    done = [r for r in rounds if r[1]["finished"] and r[processes]["finished"]]
    summary = {"rounds": len(done)}
    for measure in MEASURES:
        one = [r[1][measure] for r in done]
        many = [r[processes][measure] for r in done]
        ratio = [a / b for a, b in zip(one, many, strict=True)]
        interval = mean_interval(ratio) if ratio else None
        summary[measure] = {
            "one": one,
            "many": many,
            "ratio": ratio,
            "ratio_median": statistics.median(ratio) if ratio else None,
            "ratio_min": min(ratio, default=None),
            "ratio_max": max(ratio, default=None),
            "ratio_mean": None if interval is None else interval.mean,
            "ratio_half": None if interval is None else interval.half,
        }
    summary["load"] = [r[p]["load"] for r in done for p in (1, processes)]
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--processes", type=int, default=2, help="N, against 1 (default 2)")
    parser.add_argument("--sizes", nargs="+", default=["digits", "wide"], choices=list(SIZES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fit-timeout-s", type=float, default=600.0)
    parser.add_argument("--budget-s", type=float, default=3600.0, help="start no round after this many seconds")
    parser.add_argument("--json", help="write every fit's figures and the summary here")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    results: dict[str, list[dict[int, dict]]] = {size: [] for size in args.sizes}
    with tempfile.TemporaryDirectory(prefix="fastslow-processes-") as tmp:
        root = Path(tmp)
        configs: dict[str, Path | None] = {}
        for size in args.sizes:
            text = f"seed = {args.seed}\n" + SIZES[size]
            configs[size] = root / f"{size}.toml"
            configs[size].write_text(text)
        for index in range(args.rounds):
            if time.perf_counter() - started > args.budget_s:
                print(f"budget of {args.budget_s:.0f} s spent: {index} rounds")
                break
            order = (1, args.processes) if index % 2 == 0 else (args.processes, 1)
            for size in args.sizes:
                fits = {p: run_fit(configs[size], p, root / f"{size}-{p}", args.fit_timeout_s) for p in order}
                results[size].append(fits)
                one, many = fits[1], fits[args.processes]
                print(
                    f"round {index + 1} {size:>6}: wall {one['wall_s']:.1f} s vs {many['wall_s']:.1f} s "
                    f"(×{one['wall_s'] / many['wall_s']:.2f}), training {one.get('train_s', float('nan')):.1f} s vs "
                    f"{many.get('train_s', float('nan')):.1f} s (×{one.get('train_s', 1) / many.get('train_s', 1):.2f}); "
                    f"load {one['load']:.1f}/{many['load']:.1f}",
                    flush=True,
                )
    summary = {size: summarise(rounds, args.processes) for size, rounds in results.items()}
    n = args.processes
    print(f"\n1 vs {n} processes, {usable_cpus()} CPUs usable; speed-up = 1-process / {n}-process time, paired per round")
    header = f"{'size':>6} {'measure':>9} {'1 proc (median s)':>18} {f'{n} procs (median s)':>20} {'speed-up median [min–max]':>27} {'mean ± 95%':>14}"
    print(header, flush=True)
    for size, s in summary.items():
        if not s["rounds"]:
            print(f"{size:>6}: no round finished", flush=True)
            continue
        for measure, label in MEASURES.items():
            m = s[measure]
            spread = f"{m['ratio_median']:.2f} [{m['ratio_min']:.2f}–{m['ratio_max']:.2f}]"
            interval = f"{m['ratio_mean']:.2f} ± {m['ratio_half']:.2f}" if s["rounds"] > 1 else f"{m['ratio_mean']:.2f}"
            print(
                f"{size:>6} {label:>9} {statistics.median(m['one']):>18.1f} {statistics.median(m['many']):>20.1f} "
                f"{spread:>27} {interval:>14}",
                flush=True,
            )
        loads = s["load"]
        print(f"{size:>6} load average (1 min) before the fits: {min(loads):.1f}–{max(loads):.1f}", flush=True)
    if args.json:
        Path(args.json).write_text(
            json.dumps({"processes": n, "cpus": usable_cpus(), "seed": args.seed, "fits": results, "summary": summary}, indent=1)
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
