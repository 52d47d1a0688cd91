"""The main job: train System 1 and System 2, train the routers, evaluate, write the report.

``fit`` and ``evaluate_folder`` are what the CLI's ``demo``/``fit``/``evaluate`` call.
"""

from __future__ import annotations

import copy
import dataclasses
import platform
import random
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import Progress
from sklearn.model_selection import train_test_split
from torch import nn

import fastslow
from fastslow import atomic, checkpoint, distributed, runtime
from fastslow.config import FitConfig
from fastslow.data import Dataset, load_dataset, load_inputs, resolved_data
from fastslow.energy import EnergyProfile, count_macs, load_profile, memory_bytes
from fastslow.errors import CheckpointError, ConfigError, DataError, FastslowError
from fastslow.evaluation.calibration import METHOD, calibrate_knob, check_calibration_request, min_calibration_size
from fastslow.evaluation.evaluate import (
    StrategyResult,
    best_within,
    collect_outputs,
    enumerate_strategies,
    evaluate_strategies,
    family_metrics,
    is_reference,
    routing_predictions,
    score_routing,
)
from fastslow.evaluation.report import print_table, write_report
from fastslow.policies import POLICIES, FitContext, Policy, SystemOutputs
from fastslow.progress import output_console, progress_bars
from fastslow.serving.deploy import Deployment, UnknownStrategy, prediction_rows
from fastslow.serving.remote import (
    DEFAULT_BATCH,
    DEFAULT_BREAKER_COOLDOWN_S,
    DEFAULT_BREAKER_FAILURES,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT_S,
    CircuitBreaker,
    RemoteSystem2,
    System2Identity,
    check_client_options,
)
from fastslow.systems.deep import DEEP_ARCHS
from fastslow.systems.system1 import System1, System1Spec
from fastslow.systems.system2 import System2Spec, build_system2
from fastslow.systems.training import ce_loss, system1_loss, train_classifier

CHECKPOINTS = "checkpoints"
# What a fit's folder holds: a re-fit replaces the whole folder, so anything else found there is refused, not deleted.
FIT_FILES = (
    "config.json",
    "results.json",
    "report.md",
    "pareto.png",
    "timesteps.png",
    "calibration.json",
    CHECKPOINTS,
    f"{CHECKPOINTS}/*.json",
    f"{CHECKPOINTS}/*.safetensors",
)
PREDICT_FILES = ("predictions.jsonl", "summary.json")
# config.json keys a later command may change (evaluate --data/--profile remember theirs there); the rest made the checkpoints.
RUN_TIME_KEYS = ("data", "profile", "device", "eval_batch_size")
IN_PLACE_FIX = "make the folder writable, or copy it and run on the copy"
# The spike encoder's seed offsets from the fit's seed: the router split's records, then the test split's.
VAL_SEED_OFFSET, TEST_SEED_OFFSET = 1, 2


@dataclass
class Splits:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    dataset: Dataset


@dataclass
class FitResult:
    """What a fit produced: the trained systems, routers, the evaluated strategies and the payload written."""

    system1: System1
    system2: nn.Module
    policies: list[Policy]
    results: list[StrategyResult]
    payload: dict


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but no CUDA device is available: use --device cpu or auto")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def data_options(config: FitConfig) -> dict:
    """The options of :func:`~fastslow.data.load_dataset` that ``config`` sets (event frames = System 1's T)."""
    return {
        "timesteps": config.system1.timesteps,
        "image_size": config.image_size,
        "skip_bad_images": config.skip_bad_images,
    }


def make_splits(config: FitConfig) -> Splits:
    """Load the dataset and hold out ``val_fraction`` of its training split (stratified, seeded) for the
    router; with ``[router] data = "crossfit"`` nothing is held out (``x_val`` has no rows)."""
    dataset = load_dataset(config.data, seed=config.seed, test_fraction=config.test_fraction, **data_options(config))
    if config.router.data == "crossfit":
        x, y = np.asarray(dataset.x_train), np.asarray(dataset.y_train)
        x_fit, x_val, y_fit, y_val = x, x[:0], y, y[:0]
    else:
        x_fit, x_val, y_fit, y_val = _router_split(config, dataset)
    as_x = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32)  # noqa: E731
    as_y = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.long)  # noqa: E731
    return Splits(as_x(x_fit), as_y(y_fit), as_x(x_val), as_y(y_val), as_x(dataset.x_test), as_y(dataset.y_test), dataset)


def _router_split(config: FitConfig, dataset: Dataset) -> tuple:
    """(x_fit, x_val, y_fit, y_val): ``val_fraction`` of the training split held out, stratified, seeded."""
    try:
        x_fit, x_val, y_fit, y_val = train_test_split(
            dataset.x_train, dataset.y_train, test_size=config.val_fraction, stratify=dataset.y_train, random_state=config.seed
        )
    except ValueError as err:
        raise DataError(
            f"cannot hold out {config.val_fraction:g} of the training split for the router ({err}): give every class more samples or change val_fraction"
        ) from None
    return x_fit, x_val, y_fit, y_val


def encoding_for(config: FitConfig, dataset: Dataset) -> FitConfig:
    """``config`` with System 1's encoding fitting the data: event frames take ``events`` (chosen when the
    config does not set an encoding), and only they do; ConfigError where the config says otherwise."""
    c = config.system1
    if dataset.frames and c.encoding != "events":
        if "encoding" in c.model_fields_set:
            raise ConfigError(
                f'config option system1.encoding: {dataset.name} holds event frames, which System 1 takes with encoding = "events", not {c.encoding!r}: set it to "events" or leave it out'
            )
        return config.model_copy(update={"system1": c.model_copy(update={"encoding": "events"})})
    if not dataset.frames and c.encoding == "events":
        raise ConfigError(
            f'config option system1.encoding: "events" takes event data (tonic:NMNIST:ROOT, tonic:DVSGesture:ROOT), not {dataset.name}: use direct, rate or latency'
        )
    return config


def system1_spec(config: FitConfig, input_shape: tuple[int, ...], n_classes: int) -> System1Spec:
    c = config.system1
    # Event frames [T, C, H, W]: the architecture is chosen for one frame.
    frame_shape = tuple(input_shape[1:]) if c.encoding == "events" else tuple(input_shape)
    return System1Spec(
        input_shape=tuple(input_shape),
        n_classes=n_classes,
        arch=c.resolved_arch(frame_shape),
        hidden=tuple(c.hidden),
        conv_channels=tuple(c.conv_channels),
        stage_channels=tuple(c.stage_channels or ()) if c.resolved_arch(frame_shape) in DEEP_ARCHS else (),
        stage_blocks=tuple(c.stage_blocks or ()) if c.resolved_arch(frame_shape) in DEEP_ARCHS else (),
        timesteps=c.timesteps,
        encoding=c.encoding,
        readout=c.readout,
        lif=c.lif.params(),
        exit_heads=tuple(c.resolved_exit_heads(frame_shape)),
        checkpoint_steps=c.checkpoint_steps,
        backend=c.backend,
    )


def _train(
    progress: Progress, description: str, model: nn.Module, loss_fn, x, y, epochs, lr, batch_size, seed, parallel: bool = False
) -> tuple[float, float]:
    """Train ``model`` (data-parallel over the process group where ``parallel``); returns the wall and
    this process's CPU seconds it took (apart, they say how long a process waited for the others)."""
    per_epoch = max(1, -(-len(x) // batch_size))
    task = progress.add_task(description, total=epochs * per_epoch, epoch_batches=per_epoch)
    started, cpu = time.perf_counter(), time.process_time()
    train_classifier(
        model,
        x,
        y,
        loss_fn,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        on_batch=lambda: progress.advance(task),
        data_parallel=parallel,
    )
    return time.perf_counter() - started, time.process_time() - cpu


def describe_module(module: nn.Module) -> str:
    parts = []
    for mod in module.modules():
        if isinstance(mod, nn.Conv2d):
            parts.append(f"conv{mod.kernel_size[0]}×{mod.kernel_size[1]} {mod.in_channels}→{mod.out_channels}")
        elif isinstance(mod, nn.Linear):
            parts.append(f"fc {mod.in_features}→{mod.out_features}")
    return " · ".join(parts)


def versions() -> dict[str, str]:
    """Versions of what made a result (recorded in every result file)."""
    return {
        "fastslow": fastslow.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def _outputs(
    system1, system2, s2_macs, x, y, config: FitConfig, device, seed_offset: int, bars: Progress | None = None, split: str = ""
) -> SystemOutputs:
    """Both systems' outputs on ``x`` (a task on ``bars`` counts the batches of the ``split``)."""
    on_batch = None
    if bars is not None:
        task = bars.add_task(f"System 1 and 2 on the {split} split", total=-(-len(x) // config.eval_batch_size))
        on_batch = lambda: bars.advance(task)  # noqa: E731
    return collect_outputs(
        system1,
        system2,
        x,
        y,
        s2_macs,
        batch_size=config.eval_batch_size,
        seed=config.seed + seed_offset,
        device=device,
        on_batch=on_batch,
    )


def _backend_or_why(system1: System1, requires_grad: bool) -> str:
    """The backend a run with or without gradients uses here, or why the requested one cannot run it."""
    try:
        return system1.resolve_backend(requires_grad)
    except ValueError as err:
        return f"none: {err}"


def _systems_summary(
    system1: System1, system2: nn.Module, s2_macs_per_layer: dict[str, int], profile: EnergyProfile, s1_result: StrategyResult
) -> dict:
    s1_spec = system1.spec
    s2_params = sum(p.numel() for p in system2.parameters())
    lif = s1_spec.lif
    return {
        "system1": {
            "description": f"spiking {s1_spec.arch} ({describe_module(system1)}), {s1_spec.encoding} encoding, "
            f"{s1_spec.readout} readout, LIF beta={lif.beta:.3g} threshold={lif.threshold:g} reset={lif.reset}",
            "parameters": system1.parameter_count(),
            "stateful_neurons": system1.stateful_neurons(),
            "timesteps": s1_spec.timesteps,
            # Which kernels ran the LIF layers (the config's system1.backend, resolved on this device).
            "backend": {
                "requested": system1.requested_backend,
                "training": _backend_or_why(system1, True),
                "inference": _backend_or_why(system1, False),
            },
            "mean_synaptic_ops": s1_result.ops_per_input["synaptic_ops"],
            "mean_dense_macs": s1_result.ops_per_input["s1_dense_macs"],
            "neuron_updates": s1_result.ops_per_input["neuron_updates"],
            "memory_bytes": memory_bytes(system1.parameter_count(), system1.stateful_neurons(), profile),
        },
        "system2": {
            "description": describe_module(system2),
            "parameters": s2_params,
            "macs": sum(s2_macs_per_layer.values()),
            "macs_per_layer": s2_macs_per_layer,
            "memory_bytes": memory_bytes(s2_params, 0, profile),
        },
    }


def _evaluate(
    config: FitConfig,
    splits: Splits,
    system1: System1,
    system2: nn.Module,
    policies: list[Policy],
    profile: EnergyProfile,
    device: torch.device,
    generation: str,
    console: Console,
    progress: bool = True,
    training: dict | None = None,
) -> tuple[list[StrategyResult], dict]:
    """Every strategy on the test split, and the report's payload (``generation``: the checkpoints' id;
    ``training``: how the systems were trained, recorded under ``distributed``)."""
    s2_macs_per_layer = count_macs(system2, tuple(splits.x_test.shape[1:]))
    with progress_bars(console, progress) as bars:
        test = _outputs(
            system1,
            system2,
            sum(s2_macs_per_layer.values()),
            splits.x_test,
            splits.y_test,
            config,
            device,
            seed_offset=TEST_SEED_OFFSET,
            bars=bars,
            split="test",
        )
        task = bars.add_task(f"evaluate ({len(policies)} policy points)", total=1)
        results = evaluate_strategies(test, profile, policies, seed=config.seed)
        bars.advance(task)
    s1_result = next(r for r in results if r.name == "system1")
    dataset = splits.dataset
    payload = {
        "dataset": dataset.name,
        "data_note": dataset.note,
        **({"classes": list(dataset.classes)} if dataset.classes else {}),
        **({"skipped_files": len(dataset.skipped)} if dataset.skipped else {}),
        "split": {"train": len(splits.x_train), "val": len(splits.x_val), "test": len(splits.x_test)},
        "router_data": router_data(config, splits),
        "seed": config.seed,
        "generation": generation,
        "profile": profile.summary(),
        "versions": versions(),
        "runtime": runtime.thread_settings(),
        "distributed": training or distributed.World().summary(),
        "config": config.model_dump(),
        "systems": _systems_summary(system1, system2, s2_macs_per_layer, profile, s1_result),
        "policies": [{"name": p.name, "kind": p.kind, "deployable": p.deployable, "config": p.to_config()} for p in policies],
        "strategies": [r.to_dict() for r in results],
        "routing_metrics": family_metrics(results),
        "best_within_half_point_of_system2": {k: v.name for k, v in best_within(results).items()},
    }
    return results, payload


def router_data(config: FitConfig, splits: Splits) -> dict:
    """What the learned policies trained on (results.json's ``router_data``): the held-out router
    split, or every training input's out-of-fold outputs (``records`` inputs either way)."""
    if config.router.data == "crossfit":
        return {
            "source": "crossfit",
            "folds": config.router.folds,
            "records": len(splits.x_train),
            "note": f"out-of-fold outputs of all {len(splits.x_train)} training inputs ({config.router.folds} folds); "
            "the final systems trained on all of them",
        }
    return {
        "source": "split",
        "records": len(splits.x_val),
        "note": f"a router split of {len(splits.x_val)} inputs ({config.val_fraction:g} of the training split) held out of "
        "the systems' training",
    }


def _show(results: list[StrategyResult], splits: Splits, profile: EnergyProfile, console: Console) -> None:
    print_table(results, f"{splits.dataset.name}: {len(splits.x_test)} test inputs, profile {profile.name}", console)


def policy_kinds(config: FitConfig) -> list[str]:
    """The registered families a fit makes: ``config.policies`` (checked) or all; the references
    ``system1`` and ``system2`` always (every ratio and metric is against them)."""
    if config.policies is None:
        return list(POLICIES)
    unknown = [kind for kind in config.policies if kind not in POLICIES]
    if unknown:
        raise ConfigError(f"config option policies: unknown policy kind(s) {unknown}: use some of {', '.join(POLICIES)}")
    return [kind for kind in POLICIES if kind in config.policies or kind in ("system1", "system2")]


def fit_policies(
    config: FitConfig, val: SystemOutputs, input_shape: tuple[int, ...], profile: EnergyProfile, bars: Progress
) -> list[Policy]:
    """Every registered family's points, fitted on ``val``: the router split's recorded outputs, or the
    training split's out-of-fold ones (both systems frozen)."""
    kinds = policy_kinds(config)
    context = FitContext(config=config, val=val, profile=profile, input_shape=tuple(input_shape), seed=config.seed)
    task = bars.add_task(f"policies ({len(kinds)} families)", total=len(kinds))
    policies: list[Policy] = []
    for kind in kinds:
        policies += POLICIES[kind].fit(context)
        bars.advance(task)
    return policies


def crossfit_folds(labels: np.ndarray, folds: int, seed: int) -> list[np.ndarray]:
    """The held-out indices of each of ``folds`` stratified, shuffled (``seed``) folds of ``labels``:
    a partition of ``range(len(labels))``. DataError where a class has fewer inputs than folds."""
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(labels)
    counts = np.bincount(labels) if len(labels) else np.zeros(1, dtype=int)
    smallest = int(counts[counts > 0].min()) if counts.any() else 0
    if smallest < folds:
        raise DataError(
            f"cannot cross-fit {folds} folds: a class has {smallest} training inputs, fewer than the folds; "
            "lower [router] folds or give every class more samples"
        )
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return [held for _, held in splitter.split(np.zeros(len(labels)), labels)]


def _crossfit_outputs(
    config: FitConfig,
    system1: System1,
    system2: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    device,
    bars: Progress,
    world: distributed.World,
) -> SystemOutputs:
    """Every training input's outputs from systems that never trained on it: for each of the
    ``[router] folds`` folds, copies of the untrained ``system1`` and ``system2`` trained on the other
    folds (the same epochs, seeds and losses as the final systems) record the held-out fold. Returned
    in the order of ``x``; the policies train on them as on a router split. Over several processes
    each fold trains data-parallel like the final systems (every rank records; rank 0's are used)."""
    c1, c2, k = config.system1, config.system2, config.router.folds
    s2_macs = sum(count_macs(system2, tuple(x.shape[1:])).values())
    held_out = crossfit_folds(y.cpu().numpy(), k, config.seed)
    parts = []
    for fold, held in enumerate(held_out):
        keep = torch.ones(len(x), dtype=torch.bool)
        keep[torch.as_tensor(held)] = False
        train_index = keep.nonzero().squeeze(1).to(x.device)
        held_index = torch.as_tensor(held).to(x.device)
        s1, s2 = copy.deepcopy(system1), copy.deepcopy(system2)
        x_fold, y_fold = x[train_index], y[train_index]
        # As for the final System 1: rate encoding draws from the global generator, each rank its own.
        torch.manual_seed(distributed.rank_seed(config.seed, world.rank))
        name = f"fold {fold + 1}/{k}:"
        s1_loss = lambda m, xb, yb: system1_loss(m, xb, yb, c1.loss)  # noqa: E731
        parallel = world.parallel
        _train(bars, f"{name} System 1", s1, s1_loss, x_fold, y_fold, c1.epochs, c1.lr, c1.batch_size, config.seed, parallel)
        _train(bars, f"{name} System 2", s2, ce_loss, x_fold, y_fold, c2.epochs, c2.lr, c2.batch_size, config.seed, parallel)
        part = _outputs(s1, s2, s2_macs, x[held_index], y[held_index], config, device, VAL_SEED_OFFSET, bars, f"{name} held-out")
        parts.append(part)
    order = torch.as_tensor(np.concatenate(held_out))
    return SystemOutputs.concatenate(parts).subset(torch.argsort(order))


def fit(
    config: FitConfig,
    out: str | Path,
    *,
    console: Console | None = None,
    progress: bool = True,
    show_table: bool = True,
    system2: nn.Module | None = None,
) -> FitResult | None:
    """Train everything ``config`` describes on its dataset and write the report folder ``out``.

    ``system2``: any ``nn.Module`` mapping inputs to logits, to use instead of the default
    (trained here like the default; only the default can be reloaded by ``evaluate``).

    ``out`` is written as one generation (:class:`fastslow.atomic.Generation`): built beside it
    and swapped in at the end, so an interrupted or failed fit leaves it as it was. Whether it can
    be written is checked before any work. Runs on ``config.runtime.threads`` CPU threads
    (:mod:`fastslow.runtime`), restored after.

    ``config.runtime.processes`` = N > 1 trains both systems data-parallel on N new processes
    (:mod:`fastslow.distributed`; they print to this process's terminal, not to ``console``) and
    returns rank 0's result. Started by ``torchrun``, this process is one rank of its group: rank 0
    returns the result, the others None once both systems are trained.
    """
    world = distributed.from_torchrun()
    if world is not None:
        if config.runtime.processes not in (1, world.size):
            raise ConfigError(
                f"config option runtime.processes is {config.runtime.processes} but torchrun started {world.size} processes: "
                "leave --processes out under torchrun (its --nproc-per-node decides)"
            )
        return _fit_rank(world, config, out, progress, show_table, system2, console)
    processes = config.runtime.processes
    if processes == 1:
        return _fit_rank(distributed.World(), config, out, progress, show_table, system2, console)
    distributed.check_processes(processes, config.device)
    atomic.Generation(out, owns=FIT_FILES)  # what is wrong with --out, said before N processes start
    return distributed.launch(_fit_rank, (config, out, progress, show_table, system2), processes)


def _fit_rank(
    world: distributed.World,
    config: FitConfig,
    out: str | Path,
    progress: bool,
    show_table: bool,
    system2: nn.Module | None,
    console: Console | None = None,
) -> FitResult | None:
    """One process's part of a fit (all of it where ``world`` is one process)."""
    with runtime.thread_policy(config.runtime.threads, world.local_size):  # this machine's threads, shared
        if world.launcher is not None:
            world = dataclasses.replace(world, backend=distributed.backend_for(resolve_device(config.device).type))
        with distributed.process_group(world):
            main = world.is_main
            result = _fit(
                config,
                out,
                console=console if main else Console(quiet=True),
                progress=progress and main,
                show_table=show_table and main,
                system2=system2,
                world=world,
            )
    if result is not None and world.launcher == "fastslow":
        # Returned to the parent through a queue: CUDA tensors would travel as handles to memory
        # this worker frees when it exits.
        result.system1.cpu()
        result.system2.cpu()
        result.policies[:] = [policy.to("cpu") for policy in result.policies]
    return result


def _fit(
    config: FitConfig,
    out: str | Path,
    *,
    console: Console | None,
    progress: bool,
    show_table: bool,
    system2: nn.Module | None,
    world: distributed.World,
) -> FitResult | None:
    console = console or output_console()
    output, refused = None, None
    if world.is_main:
        try:
            output = atomic.Generation(out, owns=FIT_FILES)
        except FastslowError as err:
            refused = err
    # Under torchrun only rank 0 checks --out: the others hear its verdict before any collective
    # of the fit, and stop with it rather than wait for a peer that has left.
    verdict = distributed.from_main(world, None if refused is None else str(refused))
    if refused is not None:
        raise refused
    if verdict is not None:
        raise ConfigError(f"process 0 cannot write the fit: {verdict}")
    config = config.model_copy(update={"data": resolved_data(config.data)})  # recorded absolute: evaluate may run elsewhere
    profile = load_profile(config.profile)
    device = distributed.device_of(world, resolve_device(config.device))
    seed_everything(config.seed)
    splits = make_splits(config)
    dataset = splits.dataset
    config = encoding_for(config, dataset)
    if dataset.skipped:  # said even when quiet: the data are not all that was given
        console.print(
            f"skipped {len(dataset.skipped)} unreadable image{'s' if len(dataset.skipped) > 1 else ''} (e.g. {dataset.skipped[0]})"
        )
    # Each system's initialisation is seeded on its own, so changing one leaves the other as it was.
    torch.manual_seed(config.seed)
    try:
        s1 = System1(system1_spec(config, dataset.input_shape, dataset.n_classes)).to(device)
    except ValueError as err:  # what the config's schema cannot know: the layers the data gives, exit indices among them
        raise ConfigError(f"config [system1]: {err}") from None
    s2_spec = System2Spec(
        tuple(dataset.input_shape),
        dataset.n_classes,
        config.system2.arch,
        config.system2.hidden,
        width=config.system2.width,
        frames=dataset.frames,
    )
    # Recorded resolved: a later release's "auto" may pick another network for the same data.
    s2_spec = dataclasses.replace(s2_spec, arch=s2_spec.resolved_arch())
    torch.manual_seed(config.seed + 1)
    try:
        s2 = (system2 if system2 is not None else build_system2(s2_spec)).to(device)
    except ValueError as err:  # an arch the data's shape cannot take (e.g. resnet18 on flat inputs)
        raise ConfigError(f"config [system2]: {err}") from None
    xd, yd = splits.x_train.to(device), splits.y_train.to(device)
    c1, c2 = config.system1, config.system2
    with progress_bars(console, progress) as bars:
        crossfit = config.router.data == "crossfit"
        records = _crossfit_outputs(config, s1, s2, xd, yd, device, bars, world) if crossfit else None
        # Rate encoding draws from the global generator while training: each rank its own draws.
        torch.manual_seed(distributed.rank_seed(config.seed, world.rank))
        s1_seconds = _train(
            bars,
            "System 1 (SNN, BPTT)",
            s1,
            lambda m, x, y: system1_loss(m, x, y, c1.loss),
            xd,
            yd,
            c1.epochs,
            c1.lr,
            c1.batch_size,
            config.seed,
            world.parallel,
        )
        s2_seconds = _train(
            bars, "System 2 (ANN)", s2, ce_loss, xd, yd, c2.epochs, c2.lr, c2.batch_size, config.seed, world.parallel
        )
        if not world.is_main:  # routers, evaluation and the report are rank 0's
            return None
        s2_macs = sum(count_macs(s2, tuple(dataset.input_shape)).values())
        val = (
            records
            if records is not None
            else _outputs(
                s1,
                s2,
                s2_macs,
                splits.x_val,
                splits.y_val,
                config,
                device,
                seed_offset=VAL_SEED_OFFSET,
                bars=bars,
                split="router",
            )
        )
        policies = fit_policies(config, val, tuple(dataset.input_shape), profile, bars)
    training = {
        **world.summary(),
        "global_batch": {"system1": c1.batch_size, "system2": c2.batch_size},
        "train_seconds": {"system1": round(s1_seconds[0], 3), "system2": round(s2_seconds[0], 3)},
        "train_cpu_seconds": {"system1": round(s1_seconds[1], 3), "system2": round(s2_seconds[1], 3)},
    }
    generation = uuid.uuid4().hex
    results, payload = _evaluate(config, splits, s1, s2, policies, profile, device, generation, console, progress, training)
    # A new folder: no file of an earlier fit (its calibration.json included) survives a re-fit.
    with output as staging:
        folder = staging / CHECKPOINTS
        checkpoint.save_system1(folder, s1)
        if system2 is None:
            checkpoint.save_system2(folder, s2, s2_spec)
        entries = checkpoint.save_policies(folder, policies)
        checkpoint.write_manifest(
            folder,
            generation=generation,
            system2="default" if system2 is None else "custom",
            policies=entries,
            config=config.model_dump(),
            training=training,
        )
        atomic.write_json(staging / "config.json", config.model_dump())
        write_report(staging, payload, results)
    if show_table:
        _show(results, splits, profile, console)
    return FitResult(s1, s2, policies, results, payload)


@dataclass
class LoadedFit:
    """A fit's folder reloaded: its config (with overrides), systems, policies and data splits."""

    folder: Path
    config: FitConfig
    profile: EnergyProfile
    device: torch.device
    system1: System1
    system2: nn.Module
    policies: list[Policy]
    splits: Splits | None
    generation: str = ""
    training: dict | None = None  # the manifest's record of how the systems were trained


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _check_config(config: FitConfig, recorded: dict, path: Path) -> None:
    """``config.json`` agrees with the config the checkpoints were fit with (recorded in the
    manifest), except the run-time keys a later command may change: else it was edited."""
    try:
        fitted = _flatten(FitConfig.model_validate(recorded).model_dump())
    except ValueError as err:
        raise CheckpointError(
            f"the config in {path.parent / CHECKPOINTS / checkpoint.MANIFEST} is invalid or from an older fastslow "
            f"({str(err).splitlines()[0]}): re-run `fastslow fit`"
        ) from None
    found = _flatten(config.model_dump())
    for key in dict.fromkeys([*fitted, *found]):
        if key.split(".")[0] in RUN_TIME_KEYS or fitted.get(key) == found.get(key):
            continue
        raise CheckpointError(
            f"{path} was edited after the fit: {key} is {found.get(key)!r} there but the checkpoints were fit with "
            f"{fitted.get(key)!r}; re-fit, or restore it (only {', '.join(RUN_TIME_KEYS)} may change)"
        )


def _load_checkpoints(folder: str | Path, data: str | None = None, profile: str | None = None) -> LoadedFit:
    """A fit's folder reloaded and verified, its splits not yet loaded (``splits`` None): each file
    is read and checked, then the manifest's checksums (no file from another fit) and config.json
    against the fit's config."""
    from fastslow.config import load_config

    folder = Path(folder)
    run_folder = "pass the --out folder of a `fastslow fit` or `fastslow demo` run"
    if folder.exists() and not folder.is_dir():
        raise CheckpointError(f"{folder} is a file, not a report folder: {run_folder}")
    if not folder.is_dir():
        raise CheckpointError(f"report folder {folder} does not exist: {run_folder}")
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{folder} holds no config.json, so it is no complete report folder: {run_folder}")
    config = load_config(folder / "config.json", data=None if data is None else resolved_data(data), profile=profile)
    energy_profile = load_profile(config.profile)
    device = resolve_device(config.device)
    ckpt = folder / CHECKPOINTS
    manifest = checkpoint.read_manifest(ckpt)
    if manifest.get("system2") == "custom":
        raise CheckpointError(
            "this fit used a custom System 2 from the Python API: re-evaluate it from Python, passing the module"
        )
    s1 = checkpoint.load_system1(ckpt).to(device)
    s2, _ = checkpoint.load_system2(ckpt)
    policies = checkpoint.load_policies(ckpt, manifest["policies"])
    for policy in policies:
        steps = getattr(policy.module, "timesteps", s1.spec.timesteps)
        if steps != s1.spec.timesteps:
            raise CheckpointError(
                f"checkpoint policy {policy.name} decides over {steps} timesteps but system1.json runs "
                f"{s1.spec.timesteps}: the folder's files do not belong together; re-run `fastslow fit`"
            )
    # Each file was read and checked first (its own problem named); now that they belong together.
    checkpoint.verify_files(ckpt, manifest)
    _check_config(config, manifest["config"], folder / "config.json")
    # Policies stay on the CPU: they read records, which evaluation and serving keep there.
    training = manifest.get("training") if isinstance(manifest.get("training"), dict) else None
    return LoadedFit(folder, config, energy_profile, device, s1, s2.to(device), policies, None, manifest["generation"], training)


def _check_inputs_fit(
    what: str, input_shape: tuple[int, ...], n_classes: int | None, system1: System1, exact: bool = True
) -> None:
    """A clear error unless inputs of ``input_shape`` with ``n_classes`` classes (labels up to
    ``n_classes`` − 1 unless ``exact``; None: no labels) fit the checkpoints."""
    classes_fit = n_classes is None or (n_classes == system1.spec.n_classes if exact else n_classes <= system1.spec.n_classes)
    if tuple(input_shape) != tuple(system1.spec.input_shape) or not classes_fit:
        classes = "" if n_classes is None else f" and {n_classes} classes"
        raise DataError(
            f"{what} has inputs {tuple(input_shape)}{classes}, but the checkpoints expect {tuple(system1.spec.input_shape)} "
            f"and {system1.spec.n_classes}: pass matching --data"
        )


def load_fit(folder: str | Path, *, data: str | None = None, profile: str | None = None) -> LoadedFit:
    """Reload the checkpoints of a ``fit``/``demo`` folder and its data split (or ``data``)."""
    return _with_splits(_load_checkpoints(folder, data, profile))


def _with_splits(loaded: LoadedFit) -> LoadedFit:
    """``loaded`` with its config's data split loaded and checked against the checkpoints."""
    seed_everything(loaded.config.seed)
    splits = make_splits(loaded.config)
    _check_inputs_fit(f"data {loaded.config.data!r}", splits.dataset.input_shape, splits.dataset.n_classes, loaded.system1)
    loaded.splits = splits
    return loaded


def _default_strategy(folder: Path, deployable: list[str]) -> str:
    """The cheapest of results.json's best points within half a point of System 2 that deploys
    (``"system2"`` if it names none, or the folder holds no readable results.json)."""
    import json

    try:
        results = json.loads((folder / "results.json").read_text())
        energy = {s["name"]: float(s["energy_uj"]) for s in results["strategies"]}
        best = [name for name in results["best_within_half_point_of_system2"].values() if name in deployable and name in energy]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return "system2"
    return min(best, key=energy.__getitem__, default="system2")


def _deployment(loaded: LoadedFit) -> Deployment:
    import hashlib

    s2_macs = sum(count_macs(loaded.system2, tuple(loaded.system1.spec.input_shape)).values())
    s2_file = loaded.folder / CHECKPOINTS / "system2.safetensors"
    deployment = Deployment(
        loaded.system1,
        loaded.system2,
        loaded.policies,
        loaded.profile,
        s2_macs,
        seed=loaded.config.seed + TEST_SEED_OFFSET,
        batch_size=loaded.config.eval_batch_size,
        system2_checkpoint=s2_file.absolute(),
        system2_sha256=hashlib.sha256(s2_file.read_bytes()).hexdigest(),
    )
    deployment.default_strategy = _default_strategy(loaded.folder, deployment.strategies)
    return deployment


def _attach_remote(deployment: Deployment, url: str, timeout_s: float, retries: int, batch: int, breaker: CircuitBreaker) -> None:
    """Escalations of ``deployment`` go to the ``fastslow serve`` at ``url`` (checked now where it answers)."""
    spec = deployment.system1.spec
    identity = System2Identity(deployment.system2_sha256, tuple(spec.input_shape), spec.n_classes)
    deployment.remote = RemoteSystem2(url, identity, timeout_s=timeout_s, retries=retries, max_batch=batch, breaker=breaker)
    deployment.remote.check()


def load(
    folder: str | Path,
    *,
    profile: str | None = None,
    s2_url: str | None = None,
    s2_timeout: float = DEFAULT_TIMEOUT_S,
    s2_retries: int = DEFAULT_RETRIES,
    s2_batch: int = DEFAULT_BATCH,
    s2_breaker_failures: int = DEFAULT_BREAKER_FAILURES,
    s2_breaker_cooldown_s: float = DEFAULT_BREAKER_COOLDOWN_S,
) -> Deployment:
    """A fit's folder as a :class:`~fastslow.serving.Deployment`: ``load(DIR).predict(x, strategy=NAME)``
    answers with any strategy of the fit's results.json (see ``.strategies``); System 2's MACs are
    counted from the loaded System 2. Predicting the fit's test split reproduces its results.json.

    ``s2_url``: System 2 answers from the ``fastslow serve`` there (System 1 and the policy run
    here): escalations go in requests of at most ``s2_batch`` inputs, each phase timed out after
    ``s2_timeout`` seconds, retried ``s2_retries`` times (:class:`~fastslow.serving.remote.RemoteSystem2`);
    ``s2_breaker_failures`` failed attempts in a row open the circuit breaker for ``s2_breaker_cooldown_s``.
    A service hosting another System 2 is refused (:class:`~fastslow.errors.ServiceError`); one that
    cannot be reached leaves System 1's answers (``Answer.degraded``)."""
    breaker = CircuitBreaker(s2_breaker_failures, s2_breaker_cooldown_s) if s2_url is not None else None
    deployment = _deployment(_load_checkpoints(folder, profile=profile))
    if s2_url is not None:
        _attach_remote(deployment, s2_url, s2_timeout, s2_retries, s2_batch, breaker)
    return deployment


def predict_folder(
    folder: str | Path,
    strategy: str,
    out: str | Path,
    *,
    data: str | None = None,
    profile: str | None = None,
    s2_url: str | None = None,
    s2_timeout: float = DEFAULT_TIMEOUT_S,
    s2_retries: int = DEFAULT_RETRIES,
    s2_batch: int = DEFAULT_BATCH,
    s2_breaker_failures: int = DEFAULT_BREAKER_FAILURES,
    s2_breaker_cooldown_s: float = DEFAULT_BREAKER_COOLDOWN_S,
    console: Console | None = None,
    progress: bool = True,
) -> dict:
    """Answer the fit's test split (or ``data``: any data the loaders take, labels optional) with
    ``strategy``; write ``out/predictions.jsonl`` (one object per input, in input order) and
    ``out/summary.json`` (``out`` written as one generation, as ``fit`` writes its folder). Returns the
    summary. ``profile``: another energy profile than the fit's; ``s2_url`` and the ``s2_*`` options:
    System 2 behind a service, as in :func:`load`."""
    import json

    output = atomic.Generation(out, owns=PREDICT_FILES)
    breaker = None
    if s2_url is not None:  # the options are checked before the work of loading
        check_client_options(s2_timeout, s2_retries, s2_batch)
        breaker = CircuitBreaker(s2_breaker_failures, s2_breaker_cooldown_s)
    loaded = load_fit(folder, profile=profile) if data is None else _load_checkpoints(folder, profile=profile)
    deployment, loaded_config = _deployment(loaded), loaded.config
    try:
        deployment.policy(strategy)
    except UnknownStrategy as err:
        raise ConfigError(str(err)) from None
    if data is None:
        splits = loaded.splits
        x, y, source = splits.x_test, splits.y_test, f"the fit's test split ({splits.dataset.name})"
    else:
        inputs = load_inputs(
            resolved_data(data), seed=loaded_config.seed, test_fraction=loaded_config.test_fraction, **data_options(loaded_config)
        )
        x = torch.as_tensor(inputs.x, dtype=torch.float32)
        y = None if inputs.y is None else torch.as_tensor(inputs.y, dtype=torch.long)
        source = inputs.note
    n_classes = None if y is None or len(y) == 0 else int(y.max()) + 1
    _check_inputs_fit(f"data {data or loaded_config.data!r}", tuple(x.shape[1:]), n_classes, deployment.system1, exact=False)
    if s2_url is not None:
        _attach_remote(deployment, s2_url, s2_timeout, s2_retries, s2_batch, breaker)
    try:
        with progress_bars(console or output_console(), progress) as bars:
            task = bars.add_task(f"predict ({strategy})", total=-(-len(x) // deployment.batch_size))
            answer = deployment.predict(x, strategy, on_batch=lambda: bars.advance(task))
    finally:
        if deployment.remote is not None:
            deployment.remote.close()
    correct = None if y is None else answer.predictions == y
    lines = [json.dumps(row) for row in prediction_rows(answer, y)]
    summary = {
        "strategy": strategy,
        "inputs": len(x),
        "data": source,
        "accuracy": None if correct is None else float(correct.float().mean()),
        "escalation_rate": float(answer.escalated.float().mean()),
        "mean_timesteps": float(answer.timesteps.float().mean()),
        "energy_uj": float(answer.energy_uj.mean()),
        "energy_terms_uj": {term: float(v.mean()) for term, v in answer.energy_terms_uj.items()},
        "degraded": int(answer.degraded.sum()),
        "system2_url": s2_url,
        "system2_client": None
        if deployment.remote is None
        else {
            "timeout_s": s2_timeout,
            "retries": s2_retries,
            "batch": s2_batch,
            "breaker_failures": s2_breaker_failures,
            "breaker_cooldown_s": s2_breaker_cooldown_s,
            "breaker_opened": deployment.remote.breaker.opened,
            **dataclasses.asdict(deployment.remote.stats),
        },
        "profile": deployment.profile.summary(),
        "fit": str(Path(folder).absolute()),
        "generation": loaded.generation,
        "seed": deployment.seed,
        "versions": versions(),
        "config": loaded_config.model_dump(),
    }
    with output as staging:
        atomic.write_text(staging / "predictions.jsonl", "\n".join(lines) + "\n")
        atomic.write_json(staging / "summary.json", summary)
    return summary


def evaluate_folder(
    folder: str | Path,
    *,
    data: str | None = None,
    profile: str | None = None,
    console: Console | None = None,
    show_table: bool = True,
    progress: bool = True,
) -> tuple[list[StrategyResult], dict]:
    """Reload a fit's checkpoints, re-evaluate on its test split (or ``data``), rewrite its report.

    The folder is rewritten as one generation (its other files, the checkpoints included, carried
    over as hard links): an interrupted evaluate leaves it as it was."""
    console = console or output_console()
    loaded = _load_checkpoints(folder, data, profile)
    output = atomic.Generation(loaded.folder, keep=True, option="DIR", fix=IN_PLACE_FIX)
    fit_ = _with_splits(loaded)
    results, payload = _evaluate(
        fit_.config,
        fit_.splits,
        fit_.system1,
        fit_.system2,
        fit_.policies,
        fit_.profile,
        fit_.device,
        fit_.generation,
        console,
        progress,
        fit_.training,
    )
    with output as staging:
        atomic.write_json(staging / "config.json", fit_.config.model_dump())
        write_report(staging, payload, results)
    if show_table:
        _show(results, fit_.splits, fit_.profile, console)
    return results, payload


def calibrate_folder(
    folder: str | Path,
    *,
    max_accuracy_drop: float,
    delta: float,
    calibration_fraction: float = 0.5,
    console: Console | None = None,
    show_table: bool = True,
    progress: bool = True,
) -> dict:
    """Choose each policy family's knob with Learn-then-Test so that, with probability ≥ 1 − δ over the
    calibration split, accuracy is at most ``max_accuracy_drop`` below System 2's; then least energy.

    The fit's test split is divided (stratified, seeded) into a calibration part and a held-out part;
    the held-out accuracy and energy at the chosen knob are reported. Writes ``calibration.json``
    (one file, atomically, recording the checkpoints' generation; the rest of the folder is untouched).
    """
    check_calibration_request(max_accuracy_drop, delta)
    if not 0.0 < calibration_fraction < 1.0:
        raise ConfigError(f"calibration fraction {calibration_fraction} is outside (0, 1): pass e.g. 0.5")
    if Path(folder).is_dir():  # before any work; what else is wrong with the folder, loading it says
        atomic.probe_writable(folder, IN_PLACE_FIX)
    fit_ = load_fit(folder)
    config, splits = fit_.config, fit_.splits
    console = console or output_console()
    s2_macs = sum(count_macs(fit_.system2, tuple(splits.x_test.shape[1:])).values())
    with progress_bars(console, progress) as bars:
        test = _outputs(
            fit_.system1,
            fit_.system2,
            s2_macs,
            splits.x_test,
            splits.y_test,
            config,
            fit_.device,
            seed_offset=TEST_SEED_OFFSET,
            bars=bars,
            split="test",
        )
    try:
        cal_index, held_index = train_test_split(
            np.arange(len(test.labels)), train_size=calibration_fraction, stratify=test.labels.numpy(), random_state=config.seed
        )
    except ValueError as err:
        raise DataError(
            f"cannot split the test split for calibration ({err}): choose a --calibration-fraction that leaves every class at least one input on each side (e.g. 0.5), or use a larger test split"
        ) from None
    parts = {"calibration": test.subset(torch.as_tensor(cal_index)), "held_out": test.subset(torch.as_tensor(held_index))}
    strategies = {part: enumerate_strategies(outputs, fit_.policies) for part, outputs in parts.items()}
    held_scores = {
        s.name: score_routing(s.name, s.policy.family, s.routing, parts["held_out"], fit_.profile, s.policy.knob)
        for s in strategies["held_out"]
    }
    s2_held = held_scores["system2"]
    cal = parts["calibration"]
    s2_right = (cal.s2_logits.argmax(1) == cal.labels).numpy()
    families: dict[str, dict] = {}
    for family in dict.fromkeys(s.policy.family for s in strategies["calibration"]):
        if is_reference(family):
            continue
        items = [s for s in strategies["calibration"] if s.policy.family == family]
        order = items[0].policy.knob_order
        if order is None:  # e.g. a router trained for a target distribution
            families[family] = {
                "chosen": None,
                "note": f"not calibrated: its knob {sorted(items[0].policy.knob)} has no safest-first order",
            }
            continue
        knob_name, larger_is_safer = order
        items = sorted(items, key=lambda s: s.policy.knob[knob_name], reverse=larger_is_safer)  # safest first
        losses = np.stack(
            [((routing_predictions(s.routing, cal) != cal.labels).numpy() & s2_right) for s in items], axis=1
        ).astype(float)
        energies = np.array([float(cal.energy_uj(s.routing, fit_.profile).mean()) for s in items])
        result = calibrate_knob(losses, energies, max_accuracy_drop, delta)
        entry = {
            "knobs_safest_first": [s.name for s in items],
            "certified": [items[j].name for j in result.certified],
            "pvalues": result.pvalues,
            "chosen": None,
            "note": result.note,
        }
        if result.chosen is not None:
            chosen = items[result.chosen]
            held = held_scores[chosen.name]
            entry.update(
                chosen=chosen.name,
                knob=chosen.policy.knob,
                calibration_energy_uj=float(energies[result.chosen]),
                held_out_accuracy=held.accuracy,
                held_out_energy_uj=held.energy_uj,
                held_out_energy_ratio_vs_s2=held.energy_uj / s2_held.energy_uj,
                held_out_drop_vs_s2=s2_held.accuracy - held.accuracy,
            )
        families[family] = entry
    payload = {
        "method": METHOD,
        "max_accuracy_drop": max_accuracy_drop,
        "delta": delta,
        "guarantee": f"for each family on its own: with probability >= {1 - delta:g} over the calibration split, its chosen knob's "
        f"accuracy >= System 2's - {max_accuracy_drop:g} (for F families together, >= 1 - F*delta)",
        "split_note": f"the test split ({len(test.labels)}) divided {len(cal_index)} calibration / {len(held_index)} held out, stratified, seed {config.seed}",
        "calibration_fraction": calibration_fraction,
        "calibration_size": len(cal_index),
        "held_out_size": len(held_index),
        "profile": fit_.profile.name,
        "profile_figures": fit_.profile.summary(),
        "seed": config.seed,
        "generation": fit_.generation,
        "versions": versions(),
        "config": config.model_dump(),
        "system2_held_out_accuracy": s2_held.accuracy,
        "system2_held_out_energy_uj": s2_held.energy_uj,
        "families": families,
    }
    with atomic.writing(fit_.folder, IN_PLACE_FIX):
        atomic.write_json(fit_.folder / "calibration.json", payload)
    if show_table:
        _print_calibration(payload, console)
    return payload


def _print_calibration(payload: dict, console: Console) -> None:
    from rich.table import Table

    table = Table(
        title=f"Learn-then-Test: drop ≤ {payload['max_accuracy_drop']:g} vs System 2 with prob ≥ {1 - payload['delta']:g} "
        f"(n_cal = {payload['calibration_size']})",
        caption=f"held out: {payload['held_out_size']} inputs; System 2 {100 * payload['system2_held_out_accuracy']:.2f}%. "
        f"µJ per input, profile {payload['profile']}, arithmetic only (synaptic accumulates from the real spikes, "
        f"MACs, neuron updates).",
        caption_justify="left",
    )
    for column in ("family", "chosen knob", "held-out acc %", "drop (pt)", "µJ/in", "×S2"):
        table.add_column(column, justify="left" if column in ("family", "chosen knob") else "right", no_wrap=True)
    for family, entry in payload["families"].items():
        if entry["chosen"] is None:
            table.add_row(
                family, "not calibrated" if entry["note"].startswith("not calibrated") else "none certified", "", "", "", ""
            )
        else:
            table.add_row(
                family,
                entry["chosen"],
                f"{100 * entry['held_out_accuracy']:.2f}",
                f"{100 * entry['held_out_drop_vs_s2']:.2f}",
                f"{entry['held_out_energy_uj']:.4f}",
                f"{entry['held_out_energy_ratio_vs_s2']:.3f}",
            )
    console.print(table)
    families = payload["families"]
    stuck = [f for f, entry in families.items() if entry["chosen"] is None and not entry["note"].startswith("not calibrated")]
    if stuck:
        alpha, delta, n = payload["max_accuracy_drop"], payload["delta"], payload["calibration_size"]
        needed = min_calibration_size(alpha, delta)
        why = (
            f"a certificate of a {alpha:g} drop needs at least {needed} calibration inputs, there are {n}"
            if n < needed
            else "the safest knobs' calibration risk is too close to the allowed drop"
        )
        console.print(
            f"none certified for {len(stuck)} of {len(families)} families ({why}): allow a larger drop "
            f"(--max-accuracy-drop, now {alpha:g}) or failure probability (--delta, now {delta:g}), or calibrate on more "
            f"inputs (--calibration-fraction, now {payload['calibration_fraction']:g}, or a larger test split)",
            markup=False,
            highlight=False,
        )
