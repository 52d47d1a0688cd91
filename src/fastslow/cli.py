"""Command line: ``fastslow demo | fit | evaluate``.

User errors print one line (``error: ...``) and exit with code 2, no traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from fastslow.errors import FastslowError

DEMO_OUT = "report"
# The demo's System 1 has a second hidden layer with an exit head on the first, so the cascade
# family (exits@…) is shown too; `fit` defaults to a single hidden layer (half the energy).
DEMO_SYSTEM1 = {"hidden": [128, 64], "exit_heads": [0]}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastslow", description="Thinking fast and slow: a spiking System 1, an ANN System 2, routing policies, energy accounting.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="the main job on scikit-learn's digits (no download)")
    demo.add_argument("--out", default=DEMO_OUT, help=f"report folder (default: {DEMO_OUT})")
    demo.add_argument("--seed", type=int, default=0)

    fit = sub.add_parser("fit", help="train System 1, System 2 and the routers on DATA, evaluate, write the report")
    fit.add_argument("--data", required=True, help="digits | mnist:ROOT (ROOT/MNIST/raw/*-ubyte[.gz]) | path to an .npz with X, y [, X_test, y_test]")
    fit.add_argument("--out", required=True, help="report folder to write")
    fit.add_argument("--config", help="TOML or JSON config file (see the README); command-line options override it")
    fit.add_argument("--seed", type=int)
    fit.add_argument("--epochs", type=int, help="training epochs for both systems")
    fit.add_argument("--profile", help="energy profile name or TOML file (default cmos45nm)")
    fit.add_argument("--device", choices=["auto", "cpu", "cuda"])

    evaluate = sub.add_parser("evaluate", help="reload DIR's checkpoints, re-evaluate, rewrite the report")
    evaluate.add_argument("dir", help="a report folder written by fit or demo")
    evaluate.add_argument("--data", help="evaluate on other data of the same shape (default: the fit's)")
    evaluate.add_argument("--profile", help="energy profile name or TOML file (changes energies, not accuracies)")

    calibrate = sub.add_parser("calibrate", help="choose each policy's knob with an accuracy guarantee (Learn-then-Test)")
    calibrate.add_argument("dir", help="a report folder written by fit or demo")
    calibrate.add_argument("--max-accuracy-drop", type=float, default=0.005, help="allowed accuracy drop below System 2 (fraction, default 0.005)")
    calibrate.add_argument("--delta", type=float, default=0.1, help="failure probability of the guarantee (default 0.1)")
    calibrate.add_argument("--calibration-fraction", type=float, default=0.5, help="share of the test split used to calibrate (default 0.5)")

    for p in (demo, fit, evaluate, calibrate):
        p.add_argument("--quiet", action="store_true", help="no progress bars or table")
    return parser


def _run(args: argparse.Namespace) -> None:
    from rich.console import Console

    from fastslow.config import load_config
    from fastslow.pipeline import calibrate_folder, evaluate_folder, fit

    # Piped output gets a fixed width so the table is not truncated to 80 columns.
    console = Console() if sys.stdout.isatty() else Console(width=110)
    started = time.perf_counter()
    show = not args.quiet
    if args.command == "demo":
        config = load_config(None, data="digits", seed=args.seed, system1=DEMO_SYSTEM1)
        fit(config, args.out, console=console, progress=show, show_table=show)
        out = Path(args.out)
    elif args.command == "fit":
        config = load_config(args.config, data=args.data, seed=args.seed, epochs=args.epochs, profile=args.profile, device=args.device)
        fit(config, args.out, console=console, progress=show, show_table=show)
        out = Path(args.out)
    elif args.command == "calibrate":
        calibrate_folder(args.dir, max_accuracy_drop=args.max_accuracy_drop, delta=args.delta,
                         calibration_fraction=args.calibration_fraction, console=console, show_table=show)
        if show:
            console.print(f"calibration: {Path(args.dir) / 'calibration.json'}")
        return
    else:
        evaluate_folder(args.dir, data=args.data, profile=args.profile, console=console, show_table=show)
        out = Path(args.dir)
    if show:
        console.print(f"report: {out / 'report.md'}, {out / 'results.json'}, {out / 'pareto.png'} ({time.perf_counter() - started:.1f} s)")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        _run(args)
    except FastslowError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; files already written are complete, the rest were not written", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
