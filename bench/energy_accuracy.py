"""Benchmark: System 1, System 2, and the confidence and router policies at their best points.

Default data: the MNIST test set in ../shared/data/MNIST/raw (10,000 images; only the test
files exist there, so fastslow splits them 8,000 train / 2,000 test, stratified, seeded).
Skips with a message where that folder is absent. Not a test: run on demand,

    .venv/bin/python bench/energy_accuracy.py [--epochs N] [--seed S] [--profile NAME]

It prints one table: accuracy, escalation rate, µJ/input and energy relative to System 2,
measured side by side in one run. Target (issue 2): a strategy within 0.5 accuracy points
of System 2 at ≤ 30% of its energy.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from rich.table import Table

from fastslow import load_config
from fastslow.evaluation.evaluate import best_within
from fastslow.pipeline import fit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import console as wide_console  # noqa: E402
from _common import default_data  # noqa: E402


def _bench_config(data: str, epochs: int | None, seed: int, profile: str, timesteps: int):
    overrides = {
        "system1": {
            "hidden": [256],
            "timesteps": timesteps,
            "encoding": "rate",
            **({"epochs": epochs} if epochs else {"epochs": 15}),
        },
        "system2": {"epochs": epochs or 15, "lr": 3e-3},
        "router": {"shares": [0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5]},
        "confidence": {"thresholds": [0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.999]},
    }
    return load_config(None, data=data, seed=seed, profile=profile, **overrides)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="default: mnist:../shared/data")
    parser.add_argument("--epochs", type=int, default=None, help="epochs for both systems (default 15)")
    parser.add_argument("--timesteps", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", default="cmos45nm")
    parser.add_argument("--out", default=None, help="report folder (default: a temporary folder)")
    args = parser.parse_args(argv)
    console = wide_console()
    data = args.data or default_data(console)
    if data is None:
        return 0
    config = _bench_config(data, args.epochs, args.seed, args.profile, args.timesteps)
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(args.out) if args.out else Path(scratch)
        result = fit(config, out, console=console, progress=sys.stdout.isatty(), show_table=False)
    payload = result.payload
    by_name = {r.name: r for r in result.results}
    s2 = by_name["system2"]
    best = best_within(result.results, max_drop=0.005)
    rows = [("system1", by_name["system1"]), ("system2", s2)]
    for family in ("confidence", "router"):
        if family in best:
            rows.append((f"{family}: cheapest ≥ S2 − 0.5 pt", best[family]))
        else:
            top = max((r for r in result.results if r.family == family), key=lambda r: (r.accuracy, -r.energy_uj))
            rows.append((f"{family}: most accurate (none ≥ S2 − 0.5 pt)", top))
    rows.append(("oracle (reference)", by_name["oracle"]))
    table = Table(
        title=f"{payload['dataset']} — {payload['data_note']}; profile {payload['profile']['name']}, "
        f"S1 T={config.system1.timesteps}, seed {config.seed}"
    )
    for column in ("strategy", "point", "accuracy %", "escalated %", "µJ/input", "× S2 µJ"):
        table.add_column(column, justify="left" if column in ("strategy", "point") else "right", no_wrap=True)
    for label, r in rows:
        table.add_row(
            label,
            r.name,
            f"{100 * r.accuracy:.2f}",
            f"{100 * r.escalation_rate:.1f}",
            f"{r.energy_uj:.4f}",
            f"{r.energy_ratio_vs_s2:.3f}",
        )
    console.print(table)
    systems = payload["systems"]
    console.print(
        f"System 1: {systems['system1']['description']}; System 2: {systems['system2']['description']} "
        f"({systems['system2']['macs']:,} MACs). Energy counts arithmetic only (no memory traffic)."
    )
    met = [r.name for _, r in rows[2:4] if r.accuracy >= s2.accuracy - 0.005 and r.energy_ratio_vs_s2 <= 0.30]
    console.print(f"target (≥ S2 − 0.5 pt at ≤ 30% of S2 energy): {'met by ' + ', '.join(met) if met else 'not met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
