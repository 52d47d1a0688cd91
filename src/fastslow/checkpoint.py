"""Checkpoints: weights as safetensors plus a JSON config beside them, written atomically."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import nn

from fastslow import _atomic
from fastslow.errors import CheckpointError
from fastslow.policies.exit_router import ExitRouter
from fastslow.policies.step_router import StepRouter
from fastslow.policies.router import Router
from fastslow.policies.seenn2 import TimestepPolicy
from fastslow.systems.system1 import System1, System1Spec
from fastslow.systems.system2 import System2Spec, build_system2

FORMAT_VERSION = 1


def save_module(folder: Path, stem: str, module: nn.Module, config: dict) -> None:
    """Write ``stem.safetensors`` (state dict) then ``stem.json`` (config) into ``folder``."""
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    _atomic.write_bytes(folder / f"{stem}.safetensors", save_tensors(state))
    _atomic.write_json(folder / f"{stem}.json", {"format": FORMAT_VERSION, **config})


def _read(folder: Path, stem: str) -> tuple[dict, dict[str, torch.Tensor]]:
    paths = [folder / f"{stem}.json", folder / f"{stem}.safetensors"]
    for path in paths:
        if not path.is_file():
            raise CheckpointError(f"checkpoint file {path} is missing: re-run `fastslow fit` to write a complete checkpoint folder")
    try:
        config = json.loads(paths[0].read_text())
        if not isinstance(config, dict):
            raise ValueError("not a JSON object")
    except (ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(f"checkpoint file {paths[0]} is corrupt ({err}): re-run `fastslow fit`") from None
    try:
        tensors = load_tensors(paths[1].read_bytes())
    except (SafetensorError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"checkpoint file {paths[1]} is corrupt ({str(err).splitlines()[0]}): re-run `fastslow fit`") from None
    return config, tensors


def _load_state(module: nn.Module, tensors: dict[str, torch.Tensor], where: Path) -> None:
    for name, tensor in tensors.items():  # a parseable file can still hold what no training writes
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"checkpoint {where} holds NaN/inf values in {name}: re-run `fastslow fit`")
    try:
        module.load_state_dict(tensors)
    except RuntimeError as err:
        # The first line only says "Error(s) in loading state_dict": name the first parameter that differs.
        problems = [line.strip() for line in str(err).splitlines()[1:] if line.strip()] or [str(err).strip()]
        raise CheckpointError(f"checkpoint {where} does not match its config ({problems[0]}): re-run `fastslow fit`") from None


def save_system1(folder: Path, model: System1) -> None:
    save_module(folder, "system1", model, {"spec": model.spec.to_dict()})


def load_system1(folder: Path) -> System1:
    config, tensors = _read(folder, "system1")
    try:
        model = System1(System1Spec.from_dict(config["spec"]))
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint file {folder / 'system1.json'} holds an invalid spec ({err}): re-run `fastslow fit`") from None
    _load_state(model, tensors, folder / "system1.safetensors")
    return model.eval()


def save_system2(folder: Path, model: nn.Module, spec: System2Spec) -> None:
    save_module(folder, "system2", model, {"spec": spec.to_dict()})


def load_system2(folder: Path) -> tuple[nn.Module, System2Spec]:
    config, tensors = _read(folder, "system2")
    try:
        spec = System2Spec.from_dict(config["spec"])
        model = build_system2(spec)
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint file {folder / 'system2.json'} holds an invalid spec ({err}): re-run `fastslow fit`") from None
    _load_state(model, tensors, folder / "system2.safetensors")
    return model.eval(), spec


def _build_router(c: dict) -> nn.Module:
    return Router(int(c["n_features"]), int(c["hidden"]), float(c["knob"]))


def _build_exit_router(c: dict) -> nn.Module:
    return ExitRouter(int(c["n_features"]), int(c["n_exits"]), int(c["timesteps"]), int(c["hidden"]), float(c["knob"]))


def _build_exit_router_budget(c: dict) -> nn.Module:
    return ExitRouter(int(c["n_features"]), int(c["n_exits"]), int(c["timesteps"]), int(c["hidden"]), 0.0, energy_budget_uj=float(c["knob"]))


def _build_step_router(c: dict) -> nn.Module:
    return StepRouter(int(c["n_features"]), int(c["timesteps"]), int(c["hidden"]), float(c["knob"]))


def _build_step_router_budget(c: dict) -> nn.Module:
    return StepRouter(int(c["n_features"]), int(c["timesteps"]), int(c["hidden"]), 0.0, energy_budget_uj=float(c["knob"]))


def _build_seenn2(c: dict) -> nn.Module:
    return TimestepPolicy(int(c["n_features"]), int(c["timesteps"]), int(c["hidden"]), tuple(c["input_shape"]))


def _build_halting(c: dict) -> nn.Module:
    from fastslow.policies.ponder import HaltingHead

    return HaltingHead(int(c["n_features"]), int(c["hidden"]))


# kind → (file stem prefix, knob name, builder from the saved config)
POLICY_KINDS = {
    "router": ("router-share=", "target_share", _build_router),
    "exit_router": ("router-exits-share=", "target_share", _build_exit_router),
    "exit_router_budget": ("router-exits-budget=", "energy_budget_uj", _build_exit_router_budget),
    "step_router": ("router-steps-share=", "target_share", _build_step_router),
    "step_router_budget": ("router-steps-budget=", "energy_budget_uj", _build_step_router_budget),
    "seenn2": ("seenn2-beta=", "beta", _build_seenn2),
    "ponder": ("ponder-lambda_p=", "lambda_p", _build_halting),
}


def policy_config(kind: str, module: nn.Module) -> dict:
    """What rebuilds a trained policy module (sizes read off its first linear layer)."""
    first = next(m for m in module.modules() if isinstance(m, nn.Linear))
    config = {"n_features": first.in_features, "hidden": first.out_features}
    if kind in ("exit_router", "exit_router_budget"):
        config.update(n_exits=module.n_exits, timesteps=module.timesteps)
    if kind in ("step_router", "step_router_budget"):
        config.update(timesteps=module.timesteps)
    if kind == "seenn2":
        config.update(timesteps=module.timesteps, input_shape=list(module.input_shape))
    if kind == "router":
        config.update(soft_share=getattr(module, "soft_share", None))
    return config


def save_policy(folder: Path, kind: str, knob: float, module: nn.Module) -> None:
    prefix, knob_name, _ = POLICY_KINDS[kind]
    save_module(folder, f"{prefix}{knob:.10g}", module, {"kind": kind, knob_name: knob, "knob": knob, **policy_config(kind, module)})


def load_policy(folder: Path, kind: str, knob: float) -> nn.Module:
    prefix, _, build = POLICY_KINDS[kind]
    stem = f"{prefix}{knob:.10g}"
    config, tensors = _read(folder, stem)
    try:
        module = build(config)
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint file {folder / (stem + '.json')} is invalid ({err}): re-run `fastslow fit`") from None
    _load_state(module, tensors, folder / f"{stem}.safetensors")
    if kind == "router":
        module.soft_share = config.get("soft_share")
    return module.eval()
