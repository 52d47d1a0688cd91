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

    for p in (demo, fit, evaluate):
        p.add_argument("--quiet", action="store_true", help="no progress bars or table")
    return parser


def _run(args: argparse.Namespace) -> None:
    from rich.console import Console

    from fastslow.config import load_config
    from fastslow.pipeline import evaluate_folder, fit

    # Piped output gets a fixed width so the table is not truncated to 80 columns.
    console = Console() if sys.stdout.isatty() else Console(width=110)
    started = time.perf_counter()
    show = not args.quiet
    if args.command == "demo":
        config = load_config(None, data="digits", seed=args.seed)
        fit(config, args.out, console=console, progress=show, show_table=show)
        out = Path(args.out)
    elif args.command == "fit":
        config = load_config(args.config, data=args.data, seed=args.seed, epochs=args.epochs, profile=args.profile, device=args.device)
        fit(config, args.out, console=console, progress=show, show_table=show)
        out = Path(args.out)
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
