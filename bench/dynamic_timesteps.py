"""Benchmark: stopping System 1 early — full-T System 1, SEENN-I, SEENN-II, pondering, cascade exits,
and the whole-exit-space routers (one-shot and sequential), side by side in one run.

Default data: the MNIST test set in ../shared/data/MNIST/raw, split 8,000 train / 2,000 test
(stratified, seed 0); skips with a message where it is absent. Not a test: run on demand,

    .venv/bin/python bench/dynamic_timesteps.py [--epochs N] [--timesteps T] [--seed S] [--seeds N]
    .venv/bin/python bench/dynamic_timesteps.py --report DIR [DIR ...]   # join seeds fitted in parts

Seeds can run in parts, each its own process (``--seed 0 --seeds 3 --out D``, ``--seed 3 --seeds 2
--out D``); ``--report D`` then tables the fits under D (its ``seed-*`` folders, or D itself) as
one run, in seed order, without fitting anything (give the parts' ``--timesteps``).

Each of N seeds (default 5) is a new split and training; the table gives each row's mean ± 95% t
interval over the seeds, and the paired difference learned router − the best threshold cascade
(the cheapest within 0.3 points of System 2 on the same seed; bench/_stats.py).

Targets (issue 3): an S1-only policy within 0.2 points of full-T accuracy at ≤ 30% of T on
average; the whole-space router within 0.3 points of System 2 at ≤ 10% of its energy and with
≥ 1.3× less energy than the cheapest confidence@ point of equal or better accuracy.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

from rich.table import Table

from fastslow import load_config
from fastslow.evaluation.evaluate import StrategyResult
from fastslow.pipeline import fit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import console as wide_console  # noqa: E402
from _common import default_data  # noqa: E402
from _stats import THRESHOLD_FAMILIES, learned_vs_threshold, mean_interval  # noqa: E402

WITHIN = 0.003  # the routers' target: within 0.3 points of System 2
ROUTER_FAMILIES = ("router_exits", "router_exits_budget", "router_steps", "router_steps_budget")


def _cheapest(results, family, floor):
    points = [r for r in results if r.family == family and r.accuracy >= floor]
    return min(points, key=lambda r: r.energy_uj) if points else None


def _best(results, family):
    points = [r for r in results if r.family == family]
    return max(points, key=lambda r: (r.accuracy, -r.energy_uj)) if points else None


def _threads(value: str) -> str | int:
    return value if value == "auto" else int(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="default: mnist:../shared/data")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--timesteps", type=int, default=8)
    parser.add_argument("--arch", choices=["mlp", "conv"], default="mlp", help="System 1 architecture")
    parser.add_argument(
        "--hidden", type=int, nargs="*", default=None, help="hidden widths (default: 256 128 for mlp, none for conv)"
    )
    parser.add_argument("--conv-channels", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--seed", type=int, default=0, help="the first fit seed")
    parser.add_argument("--seeds", type=int, default=5, help="fits of seeds S..S+N−1 (each a new split and training)")
    parser.add_argument(
        "--budgets",
        type=float,
        nargs="*",
        default=[0.1, 0.15, 0.2, 0.4],
        help="µJ per input for budget-driven whole-space routers",
    )
    parser.add_argument("--profile", default="cmos45nm")
    parser.add_argument(
        "--threads", default="auto", help="CPU threads (auto: one); a given count repeats its results bit for bit"
    )
    parser.add_argument("--out", default=None, help="keep each seed's fit in OUT/seed-S (default: a scratch folder)")
    parser.add_argument("--report", nargs="+", default=None, help="no fits: table the fits under these --out folders")
    args = parser.parse_args(argv)
    console = wide_console()
    if args.report:
        fits = _fits_under([Path(folder) for folder in args.report])
        if not fits:
            parser.error(f"no results.json under {' '.join(args.report)}: give the --out folders of earlier runs")
        seeds, runs, settings = [], [], {}
        for folder, payload in fits:
            setting = json.dumps({k: v for k, v in payload["config"].items() if k != "seed"}, sort_keys=True)
            settings.setdefault(setting, folder)
            if len(settings) > 1:
                parser.error(
                    f"{folder} was fitted with other settings than {settings[next(iter(settings))]}: join one setting's seeds"
                )
            results = [StrategyResult(**entry) for entry in payload["strategies"]]
            seeds.append(payload["seed"])
            runs.append((_rows(results), SimpleNamespace(payload=payload)))
            _seed_lines(console, payload["seed"], results, args.timesteps)
        _summary(console, args, seeds, runs)
        return 0
    data = args.data or default_data(console)
    if data is None:
        return 0
    hidden = args.hidden if args.hidden is not None else ([256, 128] if args.arch == "mlp" else [])
    config = load_config(
        None,
        data=data,
        seed=args.seed,
        profile=args.profile,
        threads=_threads(args.threads),
        system1={
            "arch": args.arch,
            "hidden": hidden,
            "conv_channels": args.conv_channels,
            "exit_heads": [0],
            "timesteps": args.timesteps,
            "epochs": args.epochs,
        },
        system2={"epochs": args.epochs, "lr": 3e-3},
        confidence={
            "thresholds": [
                0.5,
                0.6,
                0.7,
                0.8,
                0.85,
                0.9,
                0.95,
                0.97,
                0.98,
                0.99,
                0.995,
                0.998,
                0.999,
                0.9995,
                0.9999,
                0.99999,
                0.999999,
                0.9999999,
            ]
        },
        router={
            "exit_shares": [0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4],
            "exit_energy_budgets_uj": args.budgets,
            "step_shares": [0.005, 0.01, 0.02, 0.03, 0.05, 0.1],
            "step_energy_budgets_uj": args.budgets,
        },
    )
    seeds = list(range(args.seed, args.seed + args.seeds))
    runs = []
    with tempfile.TemporaryDirectory() as scratch:
        for seed in seeds:
            root = Path(args.out) if args.out else Path(scratch)
            out = root / f"seed-{seed}"  # also for one seed: parts fitted into one --out never overwrite
            result = fit(
                config.model_copy(update={"seed": seed}),
                out,
                console=console,
                progress=sys.stdout.isatty(),
                show_table=False,
            )
            runs.append((_rows(result.results), result))
            _seed_lines(console, seed, result.results, args.timesteps)
    _summary(console, args, seeds, runs)
    return 0


def _fits_under(folders: list[Path]) -> list[tuple[Path, dict]]:
    """(fit folder, its results.json) among ``folders`` and their ``seed-*`` subfolders, by seed."""
    found = {f for folder in folders for f in [folder, *folder.glob("seed-*")] if (f / "results.json").is_file()}
    fits = [(f, json.loads((f / "results.json").read_text())) for f in found]
    return sorted(fits, key=lambda fit: fit[1]["seed"])


def _rows(results) -> list[tuple[str, str, object]]:
    """(policy, pick, point) per row of the table: references, S1-only picks, picks within 0.3 pt of S2."""
    by_name = {r.name: r for r in results}
    s1, s2 = by_name["system1"], by_name["system2"]
    rows = [
        ("System 1, full T", "reference", s1),
        ("System 2", "reference", s2),
        ("AET oracle", "reference", by_name["aet_oracle"]),
    ]
    for label, family in [("SEENN-I", "seenn1"), ("cascade exits", "exits"), ("pondering", "ponder")]:
        pick = _cheapest(results, family, s1.accuracy - 0.002)
        rows.append((label, "cheapest ≥ S1−0.2pt" if pick else "most accurate", pick or _best(results, family)))
    rows.append(("SEENN-II", "most accurate", _best(results, "seenn2")))
    for label, family in [
        ("SEENN-I + S2", "seenn1+s2"),
        ("router, one-shot", "router_exits"),
        ("router, sequential", "router_steps"),
        ("router, seq. budget", "router_steps_budget"),
        ("confidence", "confidence"),
    ]:
        pick = _cheapest(results, family, s2.accuracy - WITHIN)
        rows.append((label, "cheapest ≥ S2−0.3pt" if pick else "most accurate", pick or _best(results, family)))
    return [row for row in rows if row[2] is not None]


def _seed_lines(console, seed: int, results, timesteps: int) -> None:
    """One seed's budget routers against their budgets, and its targets."""
    by_name = {r.name: r for r in results}
    s1, s2 = by_name["system1"], by_name["system2"]
    for r in (r for r in results if r.family in ("router_exits_budget", "router_steps_budget")):
        budget = r.knob["energy_budget_uj"]
        console.print(
            f"seed {seed}: {r.name}: held-out {r.energy_uj:.4f} µJ/input ({100 * (r.energy_uj / budget - 1):+.1f}% of the budget), "
            f"{100 * r.accuracy:.2f}%, {100 * r.escalation_rate:.1f}% to System 2, mean T {r.mean_timesteps:.2f}",
            markup=False,
            highlight=False,
        )
    s1_only = [
        r
        for r in (_cheapest(results, f, s1.accuracy - 0.002) for f in ("seenn1", "exits", "ponder"))
        if r and r.mean_timesteps <= 0.3 * timesteps
    ]
    console.print(
        f"seed {seed}: target S1-only (≥ S1 − 0.2 pt at ≤ 30% of T): "
        + (", ".join(r.name for r in s1_only) if s1_only else "not met"),
        markup=False,
        highlight=False,
    )
    routers = [p for p in (_cheapest(results, f, s2.accuracy - WITHIN) for f in ROUTER_FAMILIES) if p is not None]
    router = min(routers, key=lambda r: r.energy_uj) if routers else None
    if router is None:
        console.print(f"seed {seed}: target whole-space router (≥ S2 − 0.3 pt at ≤ 10% of S2 energy): not met (none within)")
        return
    cascades = [r for r in results if r.family in THRESHOLD_FAMILIES and r.accuracy >= router.accuracy]
    cascade = min(cascades, key=lambda r: r.energy_uj) if cascades else None
    beside = (
        f"the cheapest threshold cascade of equal or better accuracy, {cascade.name} ({100 * cascade.accuracy:.2f}% at "
        f"{cascade.energy_ratio_vs_s2:.3f}×): the router spends {router.energy_uj / cascade.energy_uj:.2f}× its energy"
        if cascade
        else "no threshold cascade of equal accuracy"
    )
    console.print(
        f"seed {seed}: target whole-space router: {router.name} at {router.energy_ratio_vs_s2:.3f}× S2 energy "
        f"({'met' if router.energy_ratio_vs_s2 <= 0.10 else 'not met'} ≤ 0.10); beside {beside}",
        markup=False,
        highlight=False,
    )


def _summary(console, args, seeds: list[int], runs) -> None:
    """The table over seeds (mean ± 95% t interval) and the paired router − best threshold cascade."""
    payload = runs[0][1].payload
    table = Table(
        title=f"{payload['data_note']}; profile {payload['profile']['name']}, T = {args.timesteps}, "
        f"seeds {seeds[0]}–{seeds[-1]} (mean ± 95% t interval over {len(seeds)} seeds)"
    )
    for column in ("policy", "pick (seeds)", "points (seeds)", "acc %", "esc %", "mean T", "µJ/in", "×S2"):
        # The picks and points wrap (they name a point per seed); the rest never shrinks.
        wraps = column in ("pick (seeds)", "points (seeds)")
        table.add_column(column, justify="left" if wraps or column == "policy" else "right", no_wrap=not wraps, overflow="fold")
    for label in dict.fromkeys(label for rows, _ in runs for label, _, _ in rows):
        picks = [(pick, r) for rows, _ in runs for lab, pick, r in rows if lab == label]
        kinds, names = Counter(pick for pick, _ in picks), Counter(r.name for _, r in picks)
        show = lambda c: ", ".join(f"{k} ({n})" if len(seeds) > 1 else k for k, n in c.most_common(2))  # noqa: E731
        table.add_row(
            label,
            show(kinds),
            show(names),
            mean_interval(r.accuracy for _, r in picks).format(2, 100),
            mean_interval(r.escalation_rate for _, r in picks).format(1, 100),
            mean_interval(r.mean_timesteps for _, r in picks).format(2),
            mean_interval(r.energy_uj for _, r in picks).format(4),
            mean_interval(r.energy_ratio_vs_s2 for _, r in picks).format(3),
        )
    console.print(table)
    console.print(
        f"System 1: {payload['systems']['system1']['description']}. Energy counts arithmetic only (no memory traffic).",
        markup=False,
        highlight=False,
    )
    rival = learned_vs_threshold([result.payload["strategies"] for _, result in runs], WITHIN)
    console.print(rival.line(WITHIN), markup=False, highlight=False)


if __name__ == "__main__":
    sys.exit(main())
