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
from fastslow.policies.router import Router
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
    try:
        module.load_state_dict(tensors)
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint {where} does not match its config ({str(err).splitlines()[0]}): re-run `fastslow fit`") from None


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


def router_stem(share: float) -> str:
    return f"router-share={share:g}"


def save_router(folder: Path, router: Router) -> None:
    config = {
        "n_features": router.net[0].in_features,
        "hidden": router.net[0].out_features,
        "target_share": router.target_share,
        "soft_share": getattr(router, "soft_share", None),
    }
    save_module(folder, router_stem(router.target_share), router, config)


def load_router(folder: Path, share: float) -> Router:
    stem = router_stem(share)
    config, tensors = _read(folder, stem)
    try:
        router = Router(int(config["n_features"]), int(config["hidden"]), float(config["target_share"]))
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint file {folder / (stem + '.json')} is invalid ({err}): re-run `fastslow fit`") from None
    _load_state(router, tensors, folder / f"{stem}.safetensors")
    router.soft_share = config.get("soft_share")
    return router.eval()
