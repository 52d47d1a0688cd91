"""The main job: train System 1 and System 2, train the routers, evaluate, write the report.

``fit`` and ``evaluate_folder`` are what the CLI's ``demo``/``fit``/``evaluate`` call.
"""

from __future__ import annotations

import platform
import random
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sklearn.model_selection import train_test_split
from torch import nn

from fastslow import _atomic, checkpoint
from fastslow.config import FitConfig
from fastslow.data import Dataset, load_dataset, resolved_data
from fastslow.energy import EnergyProfile, count_macs, load_profile, memory_bytes
from fastslow.errors import CheckpointError, ConfigError, DataError
from fastslow.evaluation.evaluate import (
    REFERENCE_FAMILIES,
    PolicySet,
    StrategyResult,
    SystemOutputs,
    best_within,
    collect_outputs,
    evaluate_strategies,
    family_metrics,
    per_input_energy,
    score_routing,
)
from fastslow.evaluation.report import print_table, write_report
from fastslow.policies import Routing, share_for_energy_budget, train_router
from fastslow.policies.base import FeatureMLP
from fastslow.policies.exit_router import train_exit_router
from fastslow.policies.step_router import train_step_router
from fastslow.policies.router import per_input_cross_entropy
from fastslow.policies.seenn2 import train_seenn2
from fastslow.systems.system1 import System1, System1Spec
from fastslow.systems.system2 import System2Spec, build_system2
from fastslow.systems.training import ce_loss, system1_loss, train_classifier

CHECKPOINTS = "checkpoints"


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
    policies: PolicySet
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


def make_splits(config: FitConfig) -> Splits:
    """Load the dataset and hold out ``val_fraction`` of its training split (stratified, seeded) for the router."""
    dataset = load_dataset(config.data, seed=config.seed, test_fraction=config.test_fraction)
    try:
        x_fit, x_val, y_fit, y_val = train_test_split(
            dataset.x_train, dataset.y_train, test_size=config.val_fraction, stratify=dataset.y_train, random_state=config.seed
        )
    except ValueError as err:
        raise DataError(f"cannot hold out {config.val_fraction:g} of the training split for the router ({err}): give every class more samples or change val_fraction") from None
    as_x = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32)  # noqa: E731
    as_y = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.long)  # noqa: E731
    return Splits(as_x(x_fit), as_y(y_fit), as_x(x_val), as_y(y_val), as_x(dataset.x_test), as_y(dataset.y_test), dataset)


def system1_spec(config: FitConfig, input_shape: tuple[int, ...], n_classes: int) -> System1Spec:
    c = config.system1
    return System1Spec(
        input_shape=tuple(input_shape),
        n_classes=n_classes,
        arch=c.resolved_arch(tuple(input_shape)),
        hidden=tuple(c.hidden),
        conv_channels=tuple(c.conv_channels),
        timesteps=c.timesteps,
        encoding=c.encoding,
        readout=c.readout,
        lif=c.lif.params(),
        exit_heads=tuple(c.exit_heads),
        checkpoint_steps=c.checkpoint_steps,
    )


@contextmanager
def _progress(console: Console, enabled: bool):
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, disable=not enabled, transient=False,
    )
    with progress:
        yield progress


def _train(progress: Progress, description: str, model: nn.Module, loss_fn, x, y, epochs, lr, batch_size, seed) -> None:
    batches = epochs * max(1, -(-len(x) // batch_size))
    task = progress.add_task(description, total=batches)
    train_classifier(model, x, y, loss_fn, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, on_batch=lambda: progress.advance(task))


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
    try:
        own = metadata.version("fastslow")
    except metadata.PackageNotFoundError:
        own = "unknown"
    return {"fastslow": own, "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version()}



def _outputs(system1, system2, s2_macs, x, y, config: FitConfig, device, seed_offset: int) -> SystemOutputs:
    return collect_outputs(system1, system2, x, y, s2_macs, batch_size=config.eval_batch_size, seed=config.seed + seed_offset, device=device)


def _router_shares(config: FitConfig, val: SystemOutputs, profile: EnergyProfile, policy_macs: int) -> list[float]:
    """Requested shares plus the shares that meet each requested energy budget on the router split."""
    shares = list(config.router.shares)
    if config.router.energy_budgets_uj:
        n = len(val.labels)
        s1 = score_routing("s1", "s1", Routing.full_system1(n, val.timesteps, val.last_exit), val, profile).energy_uj
        s2 = val.s2_macs * profile.E_MAC_pJ / 1e6
        policy = policy_macs * profile.E_MAC_pJ / 1e6
        shares += [round(share_for_energy_budget(b, s1, s2, policy), 4) for b in config.router.energy_budgets_uj]
    return sorted(set(shares))


def _systems_summary(system1: System1, system2: nn.Module, s2_macs_per_layer: dict[str, int], profile: EnergyProfile, s1_result: StrategyResult) -> dict:
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


def _evaluate_and_report(
    out: Path, config: FitConfig, splits: Splits, system1: System1, system2: nn.Module, policies: PolicySet,
    profile: EnergyProfile, device: torch.device, console: Console, show_table: bool,
) -> tuple[list[StrategyResult], dict]:
    s2_macs_per_layer = count_macs(system2, tuple(splits.x_test.shape[1:]))
    test = _outputs(system1, system2, sum(s2_macs_per_layer.values()), splits.x_test, splits.y_test, config, device, seed_offset=2)
    results = evaluate_strategies(
        test, profile, policies=policies, thresholds=tuple(config.confidence.thresholds), measure=config.confidence.measure,
        temperature=config.confidence.temperature, seed=config.seed,
    )
    s1_result = next(r for r in results if r.name == "system1")
    dataset = splits.dataset
    payload = {
        "dataset": dataset.name,
        "data_note": dataset.note,
        "split": {"train": len(splits.x_train), "val": len(splits.x_val), "test": len(splits.x_test)},
        "seed": config.seed,
        "profile": profile.summary(),
        "versions": versions(),
        "config": config.model_dump(),
        "systems": _systems_summary(system1, system2, s2_macs_per_layer, profile, s1_result),
        "routers": [
            {"target_share": r.target_share, "soft_share_on_router_split": getattr(r, "soft_share", None), "macs": r.macs()}
            for r in policies.routers
        ],
        "strategies": [r.to_dict() for r in results],
        "routing_metrics": family_metrics(results),
        "best_within_half_point_of_system2": {k: v.name for k, v in best_within(results).items()},
    }
    write_report(out, payload, results)
    if show_table:
        print_table(results, f"{dataset.name}: {len(splits.x_test)} test inputs, profile {profile.name}", console)
    return results, payload


def _policy_items(policies: PolicySet) -> list[tuple[str, float, nn.Module]]:
    return (
        [("router", r.target_share, r) for r in policies.routers]
        + [("exit_router", r.target_share, r) for r in policies.exit_routers if r.energy_budget_uj is None and r.target_distribution is None]
        + [("exit_router_budget", r.energy_budget_uj, r) for r in policies.exit_routers if r.energy_budget_uj is not None]
        + [("step_router", r.target_share, r) for r in policies.step_routers if r.energy_budget_uj is None and r.target_distribution is None]
        + [("step_router_budget", r.energy_budget_uj, r) for r in policies.step_routers if r.energy_budget_uj is not None]
        + [("seenn2", beta, p) for beta, p in policies.seenn2]
        + [("ponder", lambda_p, h) for lambda_p, h in policies.halting]
    )


def train_policies(
    config: FitConfig, val: SystemOutputs, input_shape: tuple[int, ...], profile: EnergyProfile, bars: Progress
) -> PolicySet:
    """Train every learned policy on the router split's recorded outputs (both systems frozen)."""
    from fastslow.policies.ponder import train_halting_head

    rc, sc, pc = config.router, config.seenn2, config.ponder
    features = val.router_features()
    s1_loss = per_input_cross_entropy(val.s1_final_logits(), val.labels)
    s2_loss = per_input_cross_entropy(val.s2_logits, val.labels)
    shares = _router_shares(config, val, profile, FeatureMLP.macs_for(features.shape[1], rc.hidden, 1))
    step_targets = [(share, None) for share in rc.step_shares] + [(0.0, budget) for budget in rc.step_energy_budgets_uj]
    total = len(shares) + len(rc.exit_shares) + len(rc.exit_energy_budgets_uj) + len(step_targets) + len(sc.betas) + len(pc.lambda_ps)
    task = bars.add_task("policies (router, SEENN-II, ponder)", total=total)
    policies = PolicySet()
    for share in shares:
        policies.routers.append(
            train_router(features, s1_loss, s2_loss, share, hidden=rc.hidden, epochs=rc.epochs, lr=rc.lr,
                         kl_weight=rc.kl_weight, energy_weight=rc.energy_weight, seed=config.seed)
        )
        bars.advance(task)
    exit_features = val.exit_router_features()
    n_exits = val.s1_logits.shape[1]
    exit_macs = FeatureMLP.macs_for(exit_features.shape[1], rc.hidden, n_exits * val.timesteps + 1)
    exit_energy = val.action_energies(profile, exit_macs, s2_after_first_step=True)
    exit_losses = val.action_losses()
    targets = [(share, None) for share in rc.exit_shares] + [(0.0, budget) for budget in rc.exit_energy_budgets_uj]
    for share, budget in targets:
        policies.exit_routers.append(
            train_exit_router(exit_features, exit_losses, exit_energy, n_exits, val.timesteps, share, energy_budget_uj=budget,
                              energy_weight=rc.exit_energy_weight, kl_weight=rc.kl_weight, hidden=rc.hidden,
                              epochs=rc.exit_epochs, lr=rc.lr, seed=config.seed)
        )
        bars.advance(task)
    step_losses = val.step_losses()
    sequential_features = val.step_router_features()
    stop_energy, escalate_energy = val.step_outcome_energies(profile, FeatureMLP.macs_for(sequential_features.shape[-1], rc.hidden, 3))
    s1_correct, s2_correct = val.s1_correct_by_step(), val.s2_correct()
    step_errors, s2_errors = (~s1_correct).float(), (~s2_correct).float()
    for share, budget in step_targets:
        policies.step_routers.append(
            train_step_router(sequential_features, step_errors, s2_errors, stop_energy, escalate_energy, share, energy_budget_uj=budget,
                              energy_weight=rc.step_energy_weight, kl_weight=rc.step_kl_weight, hidden=rc.hidden,
                              epochs=rc.step_epochs, lr=rc.lr, seed=config.seed)
        )
        bars.advance(task)
    seenn2_energy = _seenn2_action_energies(val, profile)
    for beta in sc.betas:
        policy, _ = train_seenn2(val.policy_inputs, s1_correct, s2_correct, seenn2_energy, beta, input_shape=input_shape,
                                 hidden=sc.hidden, pretrain_epochs=sc.pretrain_epochs, rl_epochs=sc.rl_epochs, lr=sc.lr, seed=config.seed)
        policies.seenn2.append((beta, policy))
        bars.advance(task)
    step_features = val.step_features()
    for lambda_p in pc.lambda_ps:
        head = train_halting_head(step_features, step_losses, lambda_p, kl_weight=pc.kl_weight, epochs=pc.epochs, lr=pc.lr, seed=config.seed)
        policies.halting.append((lambda_p, head))
        bars.advance(task)
    return policies


def _seenn2_action_energies(val: SystemOutputs, profile: EnergyProfile) -> torch.Tensor:
    """[N, T + 1] µJ: System 1 for t steps at its last exit, then System 2 alone (policy cost excluded: same for all)."""
    s1_steps, _ = val.step_outcome_energies(profile, 0.0)
    return torch.cat([s1_steps.T, per_input_energy(Routing.system2_only(len(val.labels)), val, profile)[:, None]], dim=1)


def fit(
    config: FitConfig,
    out: str | Path,
    *,
    console: Console | None = None,
    progress: bool = True,
    show_table: bool = True,
    system2: nn.Module | None = None,
) -> FitResult:
    """Train everything ``config`` describes on its dataset and write the report folder ``out``.

    ``system2``: any ``nn.Module`` mapping inputs to logits, to use instead of the default
    (trained here like the default; only the default can be reloaded by ``evaluate``).
    """
    console = console or Console()
    out = _atomic.check_folder(out)
    config = config.model_copy(update={"data": resolved_data(config.data)})  # recorded absolute: evaluate may run elsewhere
    profile = load_profile(config.profile)
    device = resolve_device(config.device)
    seed_everything(config.seed)
    splits = make_splits(config)
    dataset = splits.dataset
    # Each system's initialisation is seeded on its own, so changing one leaves the other as it was.
    torch.manual_seed(config.seed)
    try:
        s1 = System1(system1_spec(config, dataset.input_shape, dataset.n_classes)).to(device)
    except ValueError as err:  # what the config's schema cannot know: the layers the data gives, exit indices among them
        raise ConfigError(f"config [system1]: {err}") from None
    s2_spec = System2Spec(tuple(dataset.input_shape), dataset.n_classes, config.system2.arch, config.system2.hidden)
    torch.manual_seed(config.seed + 1)
    s2 = (system2 if system2 is not None else build_system2(s2_spec)).to(device)
    xd, yd = splits.x_train.to(device), splits.y_train.to(device)
    c1, c2 = config.system1, config.system2
    with _progress(console, progress) as bars:
        torch.manual_seed(config.seed)  # rate encoding draws from the global generator while training
        _train(bars, "System 1 (SNN, BPTT)", s1, lambda m, x, y: system1_loss(m, x, y, c1.loss), xd, yd, c1.epochs, c1.lr, c1.batch_size, config.seed)
        _train(bars, "System 2 (ANN)", s2, ce_loss, xd, yd, c2.epochs, c2.lr, c2.batch_size, config.seed)
        s2_macs = sum(count_macs(s2, tuple(dataset.input_shape)).values())
        val = _outputs(s1, s2, s2_macs, splits.x_val, splits.y_val, config, device, seed_offset=1)
        policies = train_policies(config, val, tuple(dataset.input_shape), profile, bars)
    folder = out / CHECKPOINTS
    # A calibration belongs to the checkpoints it chose knobs for: an earlier fit's would be stale here.
    (out / "calibration.json").unlink(missing_ok=True)
    checkpoint.save_system1(folder, s1)
    if system2 is None:
        checkpoint.save_system2(folder, s2, s2_spec)
    manifest = {"system2": "default" if system2 is None else "custom"}
    for kind, knob, module in _policy_items(policies):
        checkpoint.save_policy(folder, kind, knob, module)
        manifest.setdefault(kind, []).append(knob)
    _atomic.write_json(folder / "manifest.json", manifest)
    _atomic.write_json(out / "config.json", config.model_dump())
    results, payload = _evaluate_and_report(out, config, splits, s1, s2, policies, profile, device, console, show_table)
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
    policies: PolicySet
    splits: Splits


def load_fit(folder: str | Path, *, data: str | None = None, profile: str | None = None) -> LoadedFit:
    """Reload the checkpoints of a ``fit``/``demo`` folder and its data split (or ``data``)."""
    import json

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
    manifest_path = ckpt / "manifest.json"
    if not manifest_path.is_file():
        raise CheckpointError(f"checkpoint file {manifest_path} is missing: re-run `fastslow fit` to write a complete checkpoint folder")
    try:
        manifest = json.loads(manifest_path.read_text())
        knobs = {kind: [float(k) for k in manifest.get(kind, [])] for kind in checkpoint.POLICY_KINDS}
    except (ValueError, AttributeError, TypeError) as err:
        raise CheckpointError(f"checkpoint file {manifest_path} is corrupt ({err}): re-run `fastslow fit`") from None
    if manifest.get("system2") == "custom":
        raise CheckpointError("this fit used a custom System 2 from the Python API: re-evaluate it from Python, passing the module")
    s1 = checkpoint.load_system1(ckpt).to(device)
    s2, _ = checkpoint.load_system2(ckpt)
    loaded = {kind: [(k, checkpoint.load_policy(ckpt, kind, k)) for k in values] for kind, values in knobs.items()}
    for kind, modules in loaded.items():
        for knob, module in modules:
            steps = getattr(module, "timesteps", s1.spec.timesteps)
            if steps != s1.spec.timesteps:
                raise CheckpointError(f"checkpoint {kind} {knob:g} decides over {steps} timesteps but system1.json runs "
                                      f"{s1.spec.timesteps}: the folder's files do not belong together; re-run `fastslow fit`")
    policies = PolicySet(
        routers=[m for _, m in loaded["router"]],
        exit_routers=[m for _, m in loaded["exit_router"] + loaded["exit_router_budget"]],
        step_routers=[m for _, m in loaded["step_router"] + loaded["step_router_budget"]],
        seenn2=loaded["seenn2"],
        halting=loaded["ponder"],
    )
    seed_everything(config.seed)
    splits = make_splits(config)
    if tuple(splits.dataset.input_shape) != tuple(s1.spec.input_shape) or splits.dataset.n_classes != s1.spec.n_classes:
        raise DataError(
            f"data {config.data!r} has inputs {tuple(splits.dataset.input_shape)} and {splits.dataset.n_classes} classes, "
            f"but the checkpoints expect {tuple(s1.spec.input_shape)} and {s1.spec.n_classes}: pass matching --data"
        )
    return LoadedFit(folder, config, energy_profile, device, s1, s2.to(device), policies, splits)


def evaluate_folder(
    folder: str | Path,
    *,
    data: str | None = None,
    profile: str | None = None,
    console: Console | None = None,
    show_table: bool = True,
) -> tuple[list[StrategyResult], dict]:
    """Reload a fit's checkpoints, re-evaluate on its test split (or ``data``), rewrite its report."""
    fit_ = load_fit(folder, data=data, profile=profile)
    _atomic.write_json(fit_.folder / "config.json", fit_.config.model_dump())
    return _evaluate_and_report(fit_.folder, fit_.config, fit_.splits, fit_.system1, fit_.system2, fit_.policies, fit_.profile,
                                fit_.device, console or Console(), show_table)


# Knob order for fixed-sequence testing, safest (most System 2 / most timesteps) first.
_SAFETY_ORDER = {"threshold": True, "target_share": True, "energy_budget_uj": True, "lambda_p": False, "beta": False}


def _safest_first(items: list[tuple[str, str, dict, Routing]]) -> list[tuple[str, str, dict, Routing]]:
    knob_name = next(k for k in _SAFETY_ORDER if k in items[0][2])
    return sorted(items, key=lambda item: item[2][knob_name], reverse=_SAFETY_ORDER[knob_name])


def calibrate_folder(
    folder: str | Path,
    *,
    max_accuracy_drop: float,
    delta: float,
    calibration_fraction: float = 0.5,
    console: Console | None = None,
    show_table: bool = True,
) -> dict:
    """Choose each policy family's knob with Learn-then-Test so that, with probability ≥ 1 − δ over the
    calibration split, accuracy is at most ``max_accuracy_drop`` below System 2's; then least energy.

    The fit's test split is divided (stratified, seeded) into a calibration part and a held-out part;
    the held-out accuracy and energy at the chosen knob are reported. Writes ``calibration.json``.
    """
    from fastslow.evaluation.calibration import METHOD, _check, calibrate_knob
    from fastslow.evaluation.evaluate import enumerate_strategies, routing_predictions

    _check(max_accuracy_drop, delta)
    if not 0.0 < calibration_fraction < 1.0:
        raise ConfigError(f"calibration fraction {calibration_fraction} is outside (0, 1): pass e.g. 0.5")
    fit_ = load_fit(folder)
    config, splits = fit_.config, fit_.splits
    s2_macs = sum(count_macs(fit_.system2, tuple(splits.x_test.shape[1:])).values())
    test = _outputs(fit_.system1, fit_.system2, s2_macs, splits.x_test, splits.y_test, config, fit_.device, seed_offset=2)
    try:
        cal_index, held_index = train_test_split(
            np.arange(len(test.labels)), train_size=calibration_fraction, stratify=test.labels.numpy(), random_state=config.seed
        )
    except ValueError as err:
        raise DataError(f"cannot split the test split for calibration ({err}): choose a --calibration-fraction that leaves every class at least one input on each side (e.g. 0.5), or use a larger test split") from None
    parts = {"calibration": test.subset(torch.as_tensor(cal_index)), "held_out": test.subset(torch.as_tensor(held_index))}
    strategies = {
        part: enumerate_strategies(outputs, fit_.policies, thresholds=tuple(config.confidence.thresholds),
                                   measure=config.confidence.measure, temperature=config.confidence.temperature)
        for part, outputs in parts.items()
    }
    held_scores = {
        name: score_routing(name, family, routing, parts["held_out"], fit_.profile, knob)
        for name, family, knob, routing in strategies["held_out"]
    }
    s2_held = held_scores["system2"]
    cal = parts["calibration"]
    s2_right = (cal.s2_logits.argmax(1) == cal.labels).numpy()
    families: dict[str, dict] = {}
    for family in dict.fromkeys(f for _, f, _, _ in strategies["calibration"]):
        if family in REFERENCE_FAMILIES:
            continue
        items = [item for item in strategies["calibration"] if item[1] == family]
        if not any(name in items[0][2] for name in _SAFETY_ORDER):  # e.g. a router trained for a target distribution
            families[family] = {"chosen": None, "note": f"not calibrated: its knob {sorted(items[0][2])} has no safest-first order"}
            continue
        items = _safest_first(items)
        losses = np.stack([((routing_predictions(r, cal) != cal.labels).numpy() & s2_right) for _, _, _, r in items], axis=1).astype(float)
        energies = np.array([float(per_input_energy(r, cal, fit_.profile).mean()) for _, _, _, r in items])
        result = calibrate_knob(losses, energies, max_accuracy_drop, delta)
        entry = {"knobs_safest_first": [name for name, _, _, _ in items], "certified": [items[j][0] for j in result.certified],
                 "pvalues": result.pvalues, "chosen": None, "note": result.note}
        if result.chosen is not None:
            name, _, knob, _ = items[result.chosen]
            held = held_scores[name]
            entry.update(
                chosen=name, knob=knob, calibration_energy_uj=float(energies[result.chosen]),
                held_out_accuracy=held.accuracy, held_out_energy_uj=held.energy_uj,
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
        "calibration_size": len(cal_index),
        "held_out_size": len(held_index),
        "profile": fit_.profile.name,
        "profile_figures": fit_.profile.summary(),
        "seed": config.seed,
        "versions": versions(),
        "config": config.model_dump(),
        "system2_held_out_accuracy": s2_held.accuracy,
        "system2_held_out_energy_uj": s2_held.energy_uj,
        "families": families,
    }
    _atomic.write_json(fit_.folder / "calibration.json", payload)
    if show_table:
        _print_calibration(payload, console or Console())
    return payload


def _print_calibration(payload: dict, console: Console) -> None:
    from rich.table import Table

    table = Table(title=f"Learn-then-Test: drop ≤ {payload['max_accuracy_drop']:g} vs System 2 with prob ≥ {1 - payload['delta']:g} "
                        f"(n_cal = {payload['calibration_size']})",
                  caption=f"held out: {payload['held_out_size']} inputs; System 2 {100 * payload['system2_held_out_accuracy']:.2f}%. "
                          f"µJ per input, profile {payload['profile']}, arithmetic only (synaptic accumulates from the real spikes, "
                          f"MACs, neuron updates).",
                  caption_justify="left")
    for column in ("family", "chosen knob", "held-out acc %", "drop (pt)", "µJ/in", "×S2"):
        table.add_column(column, justify="left" if column in ("family", "chosen knob") else "right", no_wrap=True)
    for family, entry in payload["families"].items():
        if entry["chosen"] is None:
            table.add_row(family, "not calibrated" if entry["note"].startswith("not calibrated") else "none certified", "", "", "", "")
        else:
            table.add_row(family, entry["chosen"], f"{100 * entry['held_out_accuracy']:.2f}", f"{100 * entry['held_out_drop_vs_s2']:.2f}",
                          f"{entry['held_out_energy_uj']:.4f}", f"{entry['held_out_energy_ratio_vs_s2']:.3f}")
    console.print(table)
