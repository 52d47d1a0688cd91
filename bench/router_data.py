"""Benchmark: what the learned routers learn from — a held-out router split, or cross-fit records.

``[router] data = "split"`` (the default) trains both systems on 80% of the training split and the
routers on the other 20%; ``"crossfit"`` records every training input's outputs from systems
trained on the other folds, trains the routers on all of them and the final systems on the whole
training split. For each seed (a new split and training) and each mode this takes the cheapest
learned point (router families and SEENN-II) within ``--within`` of System 2's accuracy on the same
fit, and the cheapest threshold cascade there (:mod:`_stats`), and reports means with 95%
intervals and the paired differences. Not a test: run on demand,

    .venv/bin/python bench/router_data.py [--data digits] [--seeds 5] [--folds 5] [--epochs N] [--json FILE]

Default data: scikit-learn's digits with the default fit (nothing to download).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from rich.table import Table

from fastslow import load_config
from fastslow.pipeline import fit, versions

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import console as wide_console  # noqa: E402
from _stats import (  # noqa: E402
    LEARNED_FAMILIES,
    THRESHOLD_FAMILIES,
    cheapest_within,
    mean_interval,
    paired_difference,
    reference,
    verdict,
)

MODES = ("split", "crossfit")


def measure(strategies: list[dict], within: float) -> dict:
    """One fit's figures: both systems, and the cheapest learned and threshold points within
    ``within`` of System 2 (accuracy as a fraction, energy as a ratio to System 2's; None where none)."""
    s1, s2 = reference(strategies, "system1"), reference(strategies, "system2")

    def point(families):
        pick = cheapest_within(strategies, families, s2["accuracy"] - within)
        return None if pick is None else {"name": pick["name"], "accuracy": pick["accuracy"], "ratio": pick["energy_ratio_vs_s2"]}

    return {
        "system1_accuracy": s1["accuracy"],
        "system2_accuracy": s2["accuracy"],
        "system1_ratio": s1["energy_ratio_vs_s2"],
        "learned": point(LEARNED_FAMILIES),
        "threshold": point(THRESHOLD_FAMILIES),
    }


def run_seed(args: argparse.Namespace, seed: int, mode: str) -> dict:
    """One fit of ``mode`` at ``seed``: its figures (:func:`measure`), split sizes and wall time."""
    config = load_config(args.config, data=args.data, seed=seed, epochs=args.epochs, threads=args.threads)
    router = config.router.model_copy(update={"data": mode, "folds": args.folds})
    config = config.model_copy(update={"router": router})
    within = args.within
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        payload = fit(config, Path(scratch), progress=False, show_table=False).payload
    return {
        "seed": seed,
        "mode": mode,
        "router_records": payload["router_data"]["records"],
        "split": payload["split"],
        "wall_s": round(time.perf_counter() - started, 1),
        **measure(payload["strategies"], within),
    }


def _values(rows: list[dict], mode: str, key: str) -> dict[int, float]:
    """seed -> a figure of ``mode``'s rows (``learned.ratio`` reads a nested one; absent points skipped)."""
    out = {}
    for row in rows:
        if row["mode"] != mode:
            continue
        value = row
        for part in key.split("."):
            value = None if value is None else value[part]
        if value is not None:
            out[row["seed"]] = float(value)
    return out


def _paired(a: dict[int, float], b: dict[int, float]) -> tuple[list[float], list[float]]:
    seeds = sorted(set(a) & set(b))
    return [a[s] for s in seeds], [b[s] for s in seeds]


def summarise(rows: list[dict], console) -> dict:
    """The table of means ± 95% intervals per mode, and the paired differences with verdicts."""
    n_seeds = len({row["seed"] for row in rows})
    table = Table(title=f"router data: split vs crossfit, {n_seeds} seeds (mean ± 95% t interval)")
    for column in ("figure", *MODES):
        table.add_column(column, justify="left" if column == "figure" else "right", no_wrap=True)
    figures = [
        ("System 1 accuracy %", "system1_accuracy", 100, 2),
        ("System 2 accuracy %", "system2_accuracy", 100, 2),
        ("learned point accuracy %", "learned.accuracy", 100, 2),
        ("learned point × S2 energy", "learned.ratio", 1, 3),
        ("threshold cascade accuracy %", "threshold.accuracy", 100, 2),
        ("threshold cascade × S2 energy", "threshold.ratio", 1, 3),
    ]
    summary: dict = {"means": {}, "reached": {}, "differences": []}
    for label, key, scale, digits in figures:
        cells = []
        for mode in MODES:
            values = _values(rows, mode, key)
            if not values:
                cells.append("none")
                continue
            interval = mean_interval(values.values())
            summary["means"][f"{mode}:{key}"] = {"mean": interval.mean, "half": interval.half, "n": interval.n}
            cells.append(interval.format(digits, scale) + ("" if interval.n == n_seeds else f" (n={interval.n})"))
        table.add_row(label, *cells)
    for mode in MODES:
        summary["reached"][mode] = {
            kind: sum(1 for row in rows if row["mode"] == mode and row[kind] is not None) for kind in ("learned", "threshold")
        }
        table.add_row(
            f"{mode}: seeds with a point within",
            *(
                f"learned {summary['reached'][m]['learned']}, threshold {summary['reached'][m]['threshold']}" if m == mode else ""
                for m in MODES
            ),
        )
    console.print(table)
    comparisons = [
        ("crossfit − split, learned point × S2 energy", ("crossfit", "learned.ratio"), ("split", "learned.ratio"), 1, 3),
        (
            "crossfit − split, learned point accuracy (pt)",
            ("crossfit", "learned.accuracy"),
            ("split", "learned.accuracy"),
            100,
            2,
        ),
        ("crossfit − split, System 1 accuracy (pt)", ("crossfit", "system1_accuracy"), ("split", "system1_accuracy"), 100, 2),
        ("crossfit − split, threshold × S2 energy", ("crossfit", "threshold.ratio"), ("split", "threshold.ratio"), 1, 3),
        *(
            (f"{mode}: learned − threshold, × S2 energy", (mode, "learned.ratio"), (mode, "threshold.ratio"), 1, 3)
            for mode in MODES
        ),
    ]
    diff_table = Table(title="paired differences on the same seeds (mean ± 95% t interval)")
    for column in ("difference", "seeds", "mean ± interval", "verdict"):
        diff_table.add_column(column, justify="left" if column in ("difference", "verdict") else "right", no_wrap=True)
    for label, (mode_a, key_a), (mode_b, key_b), scale, digits in comparisons:
        a, b = _paired(_values(rows, mode_a, key_a), _values(rows, mode_b, key_b))
        if len(a) < 2:
            diff_table.add_row(label, str(len(a)), "n/a", "too few seeds with both points")
            summary["differences"].append({"label": label, "n": len(a)})
            continue
        diff = paired_difference(a, b)
        # Seeds where a point was missing are not missing at random (those fits missed the target):
        # an interval over the rest is shown, but no verdict.
        said = verdict(diff, "A lower", "A higher") if diff.n == n_seeds else f"none: {diff.n} of {n_seeds} seeds"
        diff_table.add_row(label, str(diff.n), diff.format(digits, scale, signed=True), said)
        summary["differences"].append({"label": label, "n": diff.n, "mean": diff.mean, "half": diff.half, "verdict": said})
    console.print(diff_table)
    console.print("A is the first term of each difference; 'no difference' where the interval contains 0.")
    return summary


def _meta(args: argparse.Namespace) -> dict:
    keys = ("data", "config", "folds", "epochs", "within", "threads")
    return {**{key: getattr(args, key) for key in keys}, "versions": versions()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="digits", help="any data fastslow loads (default: digits)")
    parser.add_argument("--config", default=None, help="a fit config (TOML/JSON) to start from (default: the defaults)")
    parser.add_argument("--seeds", type=int, default=5, help="fit seeds 0..N−1 (each a new split and training)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=None, help="both systems' epochs (default: the config's)")
    parser.add_argument("--within", type=float, default=0.003, help="accuracy below System 2 allowed (fraction)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (results repeat for a given count)")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--json", default=None, help="write every seed's figures and the summary here")
    args = parser.parse_args(argv)
    console = wide_console()
    rows = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for mode in args.modes:
            row = run_seed(args, seed, mode)
            rows.append(row)
            if args.json:  # every finished fit kept, should a later one be cut off
                Path(args.json).write_text(json.dumps({"meta": _meta(args), "rows": rows}, indent=1))
            point = lambda p: f"{p['name']} {p['ratio']:.3f}×" if p else "none within"  # noqa: E731
            console.print(
                f"seed {seed} {mode:8s} S1 {100 * row['system1_accuracy']:.2f}% S2 {100 * row['system2_accuracy']:.2f}% · "
                f"learned {point(row['learned'])} · threshold {point(row['threshold'])} "
                f"({row['router_records']} router records, {row['wall_s']:.0f} s)",
                markup=False,
                highlight=False,
            )
    summary = summarise(rows, console)
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": _meta(args), "rows": rows, "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
