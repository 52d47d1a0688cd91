"""Benchmark: the demo (default config, scikit-learn digits) over several seeds — the README's headline.

Each seed s is ``fastslow demo --seed s``: a new stratified split and a new training. Rows: the
two references, every family's cheapest point within half a point of System 2 on the first seed
(``best_within_half_point_of_system2``), and any ``--strategy`` asked for; each as the mean ± 95%
t interval over the seeds, "vs S2" the paired accuracy difference. Then the honest comparison of
the learned routers with the threshold cascades (``bench/_stats.py``): per seed the cheapest point
of each within 0.3 and 0.5 points of System 2, and their paired energy difference.

    .venv/bin/python bench/demo_seeds.py [--seeds 5] [--out runs/demo-seeds] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from fastslow import load_config
from fastslow.pipeline import fit, versions

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import console as wide_console  # noqa: E402
from _stats import learned_vs_threshold, mean_interval, paired_difference, reference  # noqa: E402


def _row(name: str, runs: list[list[dict]]) -> str | None:
    picked = [next((s for s in strategies if s["name"] == name), None) for strategies in runs]
    if any(p is None for p in picked):
        return None  # a point the sweep made on some seeds only (e.g. random@rate=…)
    s2 = [reference(strategies) for strategies in runs]
    accuracy = mean_interval([100 * p["accuracy"] for p in picked])
    vs_s2 = (
        "—"
        if name == "system2"
        else paired_difference([100 * p["accuracy"] for p in picked], [100 * r["accuracy"] for r in s2]).format(2, signed=True)
    )
    escalated = mean_interval([100 * p["escalation_rate"] for p in picked]).mean
    steps = mean_interval([p.get("mean_timesteps", 0.0) for p in picked]).mean
    energy = mean_interval([p["energy_uj"] for p in picked])
    ratio = mean_interval([p["energy_ratio_vs_s2"] for p in picked])
    return (
        f"| `{name}` | {accuracy.format(2)} | {vs_s2} | {escalated:.1f} | {steps:.2f} | {energy.format(4)} | {ratio.format(3)} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N−1 (each a new split and training)")
    parser.add_argument("--epochs", type=int, default=None, help="both systems' epochs (default: the config's)")
    parser.add_argument("--strategy", action="append", default=[], help="another row (a strategy name), repeatable")
    parser.add_argument("--threads", default="auto", help="CPU threads per fit (a given count repeats bit for bit)")
    parser.add_argument("--out", default=None, help="keep the seeds' report folders here (default: a temporary folder)")
    parser.add_argument("--json", default=None, help="write every seed's strategies and the table here")
    args = parser.parse_args(argv)
    console = wide_console()
    runs: list[list[dict]] = []
    payloads = []
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(args.out or scratch)
        for seed in range(args.seeds):
            config = load_config(None, data="digits", seed=seed, epochs=args.epochs, threads=args.threads)
            result = fit(config, root / f"seed{seed}", progress=False, show_table=False)
            runs.append(result.payload["strategies"])
            payloads.append(result.payload)
            console.print(f"seed {seed}: System 1 {100 * reference(runs[-1], 'system1')['accuracy']:.2f}%", highlight=False)
    first = payloads[0]["best_within_half_point_of_system2"]
    names = ["system2", "system1"]
    names += [n for family, n in first.items() if family not in ("random", "oracle", "aet_oracle") and n not in names]
    names += [n for n in args.strategy if n not in names]
    lines = [
        f"{args.seeds} seeds, fastslow {versions()['fastslow']}: mean ± 95% t interval; vs S2 paired, in points; µJ per input",
        "",
        "| strategy | accuracy % | vs S2 (pt) | escalated % | mean steps | µJ/input | × S2 |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    lines += [row for row in (_row(n, runs) for n in names) if row is not None]
    lines.append("")
    comparisons = {}
    for within in (0.003, 0.005):
        comparison = learned_vs_threshold(runs, within)
        comparisons[within] = comparison
        lines.append(f"- {comparison.line(within)}")
        for label, picks in (("learned", comparison.learned), ("threshold", comparison.threshold)):
            reached = [p for p in picks if p]
            if reached:
                ratio = mean_interval([p["energy_ratio_vs_s2"] for p in reached]).format(3)
                accuracy = mean_interval([100 * p["accuracy"] for p in reached]).format(2)
                lines.append(f"  - {label}: {ratio} × S2 at {accuracy}% on the {len(reached)} seeds reaching")
        for label, picks in (("learned", comparison.learned), ("threshold", comparison.threshold)):
            named = ", ".join(p["name"] if p else "none" for p in picks)
            lines.append(f"  - {label} per seed: {named}")
    text = "\n".join(lines)
    console.print(text, highlight=False, markup=False)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "seeds": args.seeds,
                    "versions": versions(),
                    "config": payloads[0]["config"],
                    "strategies": runs,
                    "table": text,
                    "learned_minus_threshold": {
                        str(w): None if c.difference is None else vars(c.difference) for w, c in comparisons.items()
                    },
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
