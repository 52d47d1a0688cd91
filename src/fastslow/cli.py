"""Command line: ``fastslow demo | fit | evaluate | calibrate | predict | continual | search | serve | export``.

User errors print one line (``error: ...``) and exit with code 2, no traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

from fastslow import runtime
from fastslow.errors import FastslowError

DEMO_OUT = "report"


def _seed(text: str) -> int:
    from fastslow.config import check_seed

    try:
        return check_seed(int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    except FastslowError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _bounded(kind, low, high=None):
    """An argparse type: a ``kind`` (int or float) number in [low, high]."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if not (low <= value and (high is None or value <= high)):  # (False for NaN)
            raise argparse.ArgumentTypeError(f"{text} is outside {low}..{'' if high is None else high}")
        return value

    return parse


SEED_HELP = "seed of every random draw (data split, initialisation, spikes, routers): an integer 0..2**32-1"
MODEL_HELP = "the STDP network: Diehl & Cook (2015) or SpikeDyn (Putra & Shafique 2021); see docs/stdp.md"
DEVICE_HELP = "where to train and run: auto (CUDA when available, else the CPU), cpu or cuda"


def _threads(text: str) -> str | int:
    if text == "auto":
        return text
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise argparse.ArgumentTypeError(f'{text!r} is neither "auto" nor a whole number ≥ 1')


def _parser() -> argparse.ArgumentParser:
    import fastslow

    parser = argparse.ArgumentParser(
        prog="fastslow",
        description="Thinking fast and slow: a spiking System 1, an ANN System 2, routing policies, energy accounting.",
    )
    parser.add_argument("--version", action="version", version=f"fastslow {fastslow.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="the main job on scikit-learn's digits (no download)")
    demo.add_argument("--out", default=DEMO_OUT, help=f"report folder (default: {DEMO_OUT})")
    demo.add_argument("--seed", type=_seed, default=0, help=f"{SEED_HELP} (default 0)")

    fit = sub.add_parser("fit", help="train System 1, System 2 and the routers on DATA, evaluate, write the report")
    fit.add_argument(
        "--data",
        required=True,
        help="digits | mnist:ROOT (ROOT/MNIST/raw/*-ubyte[.gz]) | folder:ROOT (ROOT/<class>/*.png|jpg) | "
        "tonic:NMNIST:ROOT | tonic:DVSGesture:ROOT | path to an .npz with X, y [, X_test, y_test] (see docs/data.md)",
    )
    fit.add_argument("--out", required=True, help="report folder to write")
    fit.add_argument(
        "--image-size",
        type=_bounded(int, 1, 4096),
        help="S: resize folder images to S×S, downscale an event sensor to S×S (default: as stored)",
    )
    fit.add_argument(
        "--skip-bad-images", action="store_true", help="leave out unreadable images of a folder (counted) instead of refusing"
    )
    fit.add_argument("--config", help="TOML or JSON config file (see the README); command-line options override it")
    fit.add_argument("--seed", type=_seed, help=f"{SEED_HELP} (default: the config's, else 0)")
    fit.add_argument("--epochs", type=int, help="training epochs for both systems")
    fit.add_argument("--profile", help="energy profile name or TOML file (default cmos45nm)")
    fit.add_argument("--device", choices=["auto", "cpu", "cuda"], help=f"{DEVICE_HELP} (default: the config's, else auto)")
    fit.add_argument(
        "--processes",
        type=_bounded(int, 1),
        help="train both systems data-parallel over N processes: gloo on CPUs (at most one per core), "
        "NCCL on GPUs (one per GPU); see docs/distributed.md (default: the config's, else 1)",
    )

    evaluate = sub.add_parser("evaluate", help="reload DIR's checkpoints, re-evaluate, rewrite the report")
    evaluate.add_argument("dir", help="a report folder written by fit or demo")
    evaluate.add_argument("--data", help="evaluate on other data of the same shape (default: the fit's)")
    evaluate.add_argument("--profile", help="energy profile name or TOML file (changes energies, not accuracies)")

    calibrate = sub.add_parser("calibrate", help="choose each policy's knob with an accuracy guarantee (Learn-then-Test)")
    calibrate.add_argument("dir", help="a report folder written by fit or demo")
    calibrate.add_argument(
        "--max-accuracy-drop", type=float, default=0.005, help="allowed accuracy drop below System 2 (fraction, default 0.005)"
    )
    calibrate.add_argument("--delta", type=float, default=0.1, help="failure probability of the guarantee (default 0.1)")
    calibrate.add_argument(
        "--calibration-fraction", type=float, default=0.5, help="share of the test split used to calibrate (default 0.5)"
    )

    predict = sub.add_parser(
        "predict", help="answer inputs with any strategy of DIR's results.json; write predictions.jsonl and summary.json"
    )
    predict.add_argument("dir", help="a report folder written by fit or demo")
    predict.add_argument(
        "--strategy", required=True, help="a strategy named in DIR/results.json, e.g. seenn1@0.9+s2 or router@share=0.1"
    )
    predict.add_argument(
        "--data",
        help="digits | mnist:ROOT | folder:ROOT | tonic:NAME:ROOT (their test split) | an .npz with X (y optional) "
        "(default: the fit's own test split)",
    )
    predict.add_argument("--out", required=True, help="folder for predictions.jsonl and summary.json")
    predict.add_argument("--profile", help="energy profile name or TOML file (default: the fit's)")
    predict.add_argument(
        "--s2-url",
        help="System 2 from the `fastslow serve` at this URL (System 1 and the policy run here), e.g. http://host:8000",
    )
    predict.add_argument(
        "--s2-timeout", type=_bounded(float, 0.001, 600.0), default=5.0, help="seconds per request phase (default 5)"
    )
    predict.add_argument("--s2-retries", type=_bounded(int, 0, 10), default=2, help="retries of a failed request (default 2)")
    predict.add_argument("--s2-batch", type=_bounded(int, 1, 65536), default=64, help="escalated inputs per request (default 64)")
    predict.add_argument(
        "--s2-breaker-failures",
        type=_bounded(int, 1, 1000),
        default=3,
        help="failed attempts in a row that open the circuit breaker (default 3)",
    )
    predict.add_argument(
        "--s2-breaker-cooldown",
        type=_bounded(float, 0.0, 3600.0),
        default=5.0,
        help="seconds the open breaker waits before one trial request (default 5)",
    )

    continual = sub.add_parser(
        "continual", help="unsupervised STDP System 1 learning tasks one after another (Diehl & Cook or SpikeDyn)"
    )
    continual.add_argument("--data", required=True, help="digits | mnist:ROOT | path to an .npz")
    continual.add_argument("--model", required=True, choices=["diehl-cook", "spikedyn"], help=MODEL_HELP)
    continual.add_argument("--out", required=True, help="folder for continual.json and continual.png")
    continual.add_argument("--bits", type=int, default=32, help="weight precision: 4, 8, 16 or 32 (default 32, float)")
    continual.add_argument("--neurons", type=int, default=400, help="excitatory neurons (default 400)")
    continual.add_argument("--tasks", help="classes per task, e.g. '0,1;2,3' (default: one class per task, in order)")
    continual.add_argument("--samples-per-task", type=int, default=100, help="unlabelled training samples per task (default 100)")
    continual.add_argument("--test-per-task", type=int, default=100, help="test samples per task (default 100)")
    continual.add_argument(
        "--presentation-ms", type=float, default=350.0, help="presentation time per sample in ms (default 350)"
    )
    continual.add_argument("--profile", default="cmos45nm", help="energy profile name or TOML file")
    continual.add_argument(
        "--s2-epochs", type=int, default=10, help="epochs for the System 2 that low-confidence answers escalate to"
    )
    continual.add_argument(
        "--spikedyn-off",
        nargs="+",
        default=[],
        metavar="MECHANISM",
        help="switch these SpikeDyn mechanisms off, e.g. rest_relative_commitment (docs/stdp.md lists them)",
    )
    continual.add_argument("--seed", type=_seed, default=0, help=f"{SEED_HELP} (default 0)")

    search = sub.add_parser(
        "search", help="choose an STDP System 1 within a memory and energy budget (estimate, train survivors, Pareto)"
    )
    search.add_argument("--data", required=True, help="digits | mnist:ROOT | path to an .npz")
    search.add_argument("--max-memory-kb", type=float, required=True, help="memory budget in KB")
    search.add_argument("--max-energy-uj", type=float, required=True, help="inference energy budget in µJ per input")
    search.add_argument("--out", default="search", help="folder for search.json and search.png (default: search)")
    search.add_argument(
        "--model", default="spikedyn", choices=["diehl-cook", "spikedyn"], help=f"{MODEL_HELP} (default spikedyn)"
    )
    search.add_argument("--bits", type=int, nargs="+", default=[4, 8, 16, 32], help="precisions to consider")
    search.add_argument("--neurons", type=int, nargs="+", default=[25, 50, 100, 200, 400], help="neuron counts to consider")
    search.add_argument(
        "--presentation-ms", type=float, nargs="+", default=[100.0, 200.0, 350.0], help="presentation times to consider"
    )
    search.add_argument("--train-samples", type=int, default=200, help="training budget per trained candidate (samples)")
    search.add_argument("--test-samples", type=int, default=200, help="test samples each trained candidate is scored on")
    search.add_argument("--max-trained", type=int, default=8, help="at most this many candidates within budget are trained")
    search.add_argument("--profile", default="cmos45nm", help="energy profile name or TOML file")
    search.add_argument("--seed", type=_seed, default=0, help=f"{SEED_HELP} (default 0)")

    serve = sub.add_parser("serve", help="serve DIR's System 2 (and its strategies) over HTTP; needs the serve extra")
    serve.add_argument("dir", help="a report folder written by fit or demo")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    serve.add_argument("--port", type=_bounded(int, 0, 65535), default=8000, help="port (default 8000; 0: any free port)")
    serve.add_argument("--max-batch", type=_bounded(int, 1), default=256, help="most inputs in one System 2 pass (default 256)")
    serve.add_argument(
        "--max-wait-ms", type=_bounded(float, 0.0, 60000.0), default=5.0, help="longest wait for a batch to fill, ms (default 5)"
    )
    serve.add_argument(
        "--max-queue", type=_bounded(int, 1), default=1024, help="most inputs waiting; more get 503 (default 1024)"
    )
    serve.add_argument(
        "--max-body-bytes", type=_bounded(int, 1024), default=8 * 1024 * 1024, help="largest request body (default 8 MiB)"
    )

    export = sub.add_parser("export", help="System 1 as a NIR graph (neuromorphic hardware, SNN libraries), System 2 as ONNX")
    export.add_argument("dir", help="a report folder written by fit or demo")
    export.add_argument("--format", required=True, choices=["nir", "onnx"], help="nir: System 1; onnx: System 2")
    export.add_argument("--out", required=True, help="file to write, e.g. system1.nir")
    export.add_argument(
        "--reset-to-zero",
        action="store_true",
        help="nir: export a System 1 that resets by subtraction with reset to zero; prints the accuracy change on the test split",
    )
    export.add_argument(
        "--no-integrator",
        action="store_true",
        help="nir: end at the readout's Affine instead of nir.I (for readers without nir.I, e.g. snnTorch's import_from_nir)",
    )

    for p in (demo, fit, evaluate, calibrate, predict, continual, search, export):
        p.add_argument(
            "--threads",
            type=_threads,
            help="CPU threads for torch, numba and BLAS: auto (default: OMP_NUM_THREADS if set, else 1) or a count",
        )
        p.add_argument(
            "--quiet",
            action="store_true",
            help="no progress or table (off a terminal, progress is a plain line every 10 s; FASTSLOW_PROGRESS_INTERVAL sets it)",
        )
    return parser


def _run(args: argparse.Namespace) -> None:
    from fastslow.config import load_config
    from fastslow.pipeline import calibrate_folder, evaluate_folder, fit, predict_folder
    from fastslow.progress import output_console

    console = output_console()
    started = time.perf_counter()
    show = not getattr(args, "quiet", False)
    if args.command == "serve":
        _serve(args)
        return
    if args.command == "export":
        _export(args, show)
        return
    if args.command == "continual":
        from fastslow.stdp_jobs import continual_job

        continual_job(
            args.data,
            args.model,
            args.out,
            bits=args.bits,
            neurons=args.neurons,
            tasks=args.tasks,
            samples_per_task=args.samples_per_task,
            test_per_task=args.test_per_task,
            presentation_ms=args.presentation_ms,
            seed=args.seed,
            profile=args.profile,
            s2_epochs=args.s2_epochs,
            spikedyn_off=tuple(args.spikedyn_off),
            console=console,
            progress=show,
            show_table=show,
        )
        return
    if args.command == "search":
        from fastslow.stdp_jobs import search_job

        search_job(
            args.data,
            args.max_memory_kb,
            args.max_energy_uj,
            args.out,
            model=args.model,
            neurons=tuple(args.neurons),
            bits=tuple(args.bits),
            presentation_ms=tuple(args.presentation_ms),
            train_samples=args.train_samples,
            test_samples=args.test_samples,
            max_trained=args.max_trained,
            seed=args.seed,
            profile=args.profile,
            console=console,
            progress=show,
            show_table=show,
        )
        return
    if args.command == "demo":
        config = load_config(None, data="digits", seed=args.seed, threads=args.threads)
        result = fit(config, args.out, console=console, progress=show, show_table=show)
        if result is None:  # a rank other than 0 under torchrun: rank 0 writes and says so
            return
        out = Path(args.out)
    elif args.command == "fit":
        config = load_config(
            args.config,
            data=args.data,
            seed=args.seed,
            epochs=args.epochs,
            profile=args.profile,
            device=args.device,
            threads=args.threads,
            processes=args.processes,
            image_size=args.image_size,
            skip_bad_images=args.skip_bad_images or None,
        )
        result = fit(config, args.out, console=console, progress=show, show_table=show)
        if result is None:  # a rank other than 0 under torchrun: rank 0 writes and says so
            return
        out = Path(args.out)
    elif args.command == "predict":
        summary = predict_folder(
            args.dir,
            args.strategy,
            args.out,
            data=args.data,
            profile=args.profile,
            s2_url=args.s2_url,
            s2_timeout=args.s2_timeout,
            s2_retries=args.s2_retries,
            s2_batch=args.s2_batch,
            s2_breaker_failures=args.s2_breaker_failures,
            s2_breaker_cooldown_s=args.s2_breaker_cooldown,
            console=console,
            progress=show,
        )
        if show:
            accuracy = "n/a (no labels)" if summary["accuracy"] is None else f"{100 * summary['accuracy']:.2f}%"
            degraded = f", degraded {summary['degraded']} (System 2 unreachable)" if summary["degraded"] else ""
            console.print(
                f"{summary['strategy']}: {summary['inputs']} inputs, accuracy {accuracy}, escalated "
                f"{100 * summary['escalation_rate']:.1f}%{degraded}, {summary['mean_timesteps']:.2f} steps, "
                f"{summary['energy_uj']:.4g} µJ/input ({summary['profile']['name']})"
            )
            console.print(
                f"predictions: {Path(args.out) / 'predictions.jsonl'}, {Path(args.out) / 'summary.json'} "
                f"({time.perf_counter() - started:.1f} s)"
            )
        return
    elif args.command == "calibrate":
        calibrate_folder(
            args.dir,
            max_accuracy_drop=args.max_accuracy_drop,
            delta=args.delta,
            calibration_fraction=args.calibration_fraction,
            console=console,
            show_table=show,
            progress=show,
        )
        if show:
            console.print(f"calibration: {Path(args.dir) / 'calibration.json'}")
        return
    else:
        evaluate_folder(args.dir, data=args.data, profile=args.profile, console=console, show_table=show, progress=show)
        out = Path(args.dir)
    if show:
        world = "" if args.command not in ("demo", "fit") else _world_note(result.payload)
        console.print(
            f"report: {out / 'report.md'}, {out / 'results.json'}, {out / 'pareto.png'} ({time.perf_counter() - started:.1f} s{world})"
        )


def _world_note(payload: dict) -> str:
    """ ", N processes" for a data-parallel fit, else nothing."""
    size = payload.get("distributed", {}).get("world_size", 1)
    return f", {size} processes" if size > 1 else ""


def _export(args: argparse.Namespace, show: bool) -> None:
    """``fastslow export DIR --format nir|onnx --out FILE``: one line on what was written (and, for NIR
    with ``--reset-to-zero``, one on the accuracy change)."""
    from fastslow.errors import ConfigError

    if args.format == "onnx":
        if args.reset_to_zero or args.no_integrator:
            raise ConfigError("--reset-to-zero and --no-integrator apply to --format nir (System 1) only: drop them")
        from fastslow.interop.onnx import export_system2
        from fastslow.pipeline import load

        export_system2(load(args.dir), Path(args.out))
        if show:
            print(f"System 2 -> {args.out} (ONNX)")
        return
    from fastslow.interop.nir import DT, export_folder

    export = export_folder(args.dir, args.out, reset_to_zero=args.reset_to_zero, integrator=not args.no_integrator)
    if not show:
        return
    print(f"System 1 -> {export.path} (NIR): {', '.join(export.nodes)}; dt = {DT:g} s per step (tau = dt/(1 - beta), r = tau/dt)")
    if export.accuracy_before is not None:
        change = 100 * (export.accuracy_after - export.accuracy_before)
        print(
            f"reset subtract -> zero: System 1's accuracy on the test split ({export.test_inputs} inputs) "
            f"{100 * export.accuracy_before:.2f}% -> {100 * export.accuracy_after:.2f}% ({change:+.2f} points)"
        )
    elif args.reset_to_zero:
        print("reset: this System 1 already resets to zero; --reset-to-zero changed nothing")


def _serve(args: argparse.Namespace) -> None:
    """``fastslow serve``: load DIR, print one line with the real address, serve until SIGTERM/SIGINT."""
    import os

    from fastslow.errors import ConfigError
    from fastslow.pipeline import load

    try:
        from fastslow.serving.http import create_app, listen, run_server
    except ImportError:
        raise ConfigError("fastslow serve needs the serve extra: pip install 'fastslow[serve]'") from None
    token = os.environ.get("FASTSLOW_API_TOKEN")
    if token is not None and not token.strip():
        raise ConfigError("FASTSLOW_API_TOKEN is set but empty: set it to a secret token, or unset it to serve without auth")
    deployment = load(args.dir)
    app = create_app(
        deployment,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue,
        max_body_bytes=args.max_body_bytes,
        token=token,
    )
    try:
        sock = listen(args.host, args.port)
    except OSError as err:
        raise ConfigError(
            f"cannot listen on {args.host}:{args.port} ({err.strerror or err}): choose another --host or --port"
        ) from None
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    line = f"serving {args.dir} on http://{shown}:{port} (System 2 sha256 {deployment.system2_sha256})"
    run_server(app, sock, on_ready=lambda: print(line, flush=True))


def main(argv: list[str] | None = None) -> int:
    # Before anything loads torch: OpenMP reads its wait policy only when it starts.
    runtime.prepare_process()
    args = _parser().parse_args(argv)
    # A fit takes its thread count from its config (--threads included); the others from --threads.
    fits = args.command in ("demo", "fit")
    try:
        with contextlib.nullcontext() if fits else runtime.thread_policy(getattr(args, "threads", None) or "auto"):
            _run(args)
    except FastslowError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; each output folder is as it was, or whole where it was already replaced", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
