"""Checkpoints: weights as safetensors plus a JSON config beside them, written atomically, and
``manifest.json``: the fit's generation id, each file's SHA-256, the policies and the fit's config."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import nn

from fastslow import atomic
from fastslow.errors import CheckpointError
from fastslow.policies import POLICIES, Policy
from fastslow.systems.system1 import System1, System1Spec
from fastslow.systems.system2 import System2Spec, build_system2

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 2  # 2: generation id, per-file SHA-256 and the fit's config


def save_module(folder: Path, stem: str, module: nn.Module, config: dict) -> None:
    """Write ``stem.safetensors`` (state dict) then ``stem.json`` (config) into ``folder``."""
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    atomic.write_bytes(folder / f"{stem}.safetensors", save_tensors(state))
    atomic.write_json(folder / f"{stem}.json", {"format": FORMAT_VERSION, **config})


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} is missing: re-run `fastslow fit` to write a complete checkpoint folder")
    try:
        config = json.loads(path.read_text())
        if not isinstance(config, dict):
            raise ValueError("not a JSON object")
    except (ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(f"checkpoint file {path} is corrupt ({err}): re-run `fastslow fit`") from None
    return config


def _read(folder: Path, stem: str) -> tuple[dict, dict[str, torch.Tensor]]:
    paths = [folder / f"{stem}.json", folder / f"{stem}.safetensors"]
    for path in paths:
        if not path.is_file():
            raise CheckpointError(
                f"checkpoint file {path} is missing: re-run `fastslow fit` to write a complete checkpoint folder"
            )
    config = _read_json(paths[0])
    try:
        tensors = load_tensors(paths[1].read_bytes())
    except (SafetensorError, ValueError, RuntimeError) as err:
        raise CheckpointError(
            f"checkpoint file {paths[1]} is corrupt ({str(err).splitlines()[0]}): re-run `fastslow fit`"
        ) from None
    return config, tensors


def _check_finite(tensors: dict[str, torch.Tensor], where: Path) -> None:
    # A parseable file can still hold what no training writes. Names in sorted order: the loaded
    # dict's order is not the file's, so the first bad one would differ from run to run.
    bad = [
        name for name in sorted(tensors) if tensors[name].is_floating_point() and not bool(torch.isfinite(tensors[name]).all())
    ]
    if bad:
        more = f" (and {len(bad) - 1} more tensor{'s' if len(bad) > 2 else ''})" if len(bad) > 1 else ""
        raise CheckpointError(f"checkpoint {where} holds NaN/inf values in {bad[0]}{more}: re-run `fastslow fit`")


def _load_state(module: nn.Module, tensors: dict[str, torch.Tensor], where: Path) -> None:
    _check_finite(tensors, where)
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
        raise CheckpointError(
            f"checkpoint file {folder / 'system1.json'} holds an invalid spec ({err}): re-run `fastslow fit`"
        ) from None
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
        raise CheckpointError(
            f"checkpoint file {folder / 'system2.json'} holds an invalid spec ({err}): re-run `fastslow fit`"
        ) from None
    _load_state(model, tensors, folder / "system2.safetensors")
    return model.eval(), spec


def policy_stem(index: int) -> str:
    return f"policy-{index:03d}"


def save_policies(folder: Path, policies: list[Policy]) -> list[dict]:
    """Write each policy point as ``policy-NNN.json`` (its kind and :meth:`~fastslow.policies.Policy.to_config`)
    and, where it has trained weights, ``policy-NNN.safetensors``; returns the manifest's entries."""
    entries = []
    for index, policy in enumerate(policies):
        stem = policy_stem(index)
        record = {"kind": policy.kind, "name": policy.name, "config": policy.to_config()}
        if policy.module is not None:
            save_module(folder, stem, policy.module, record)
        else:
            atomic.write_json(folder / f"{stem}.json", {"format": FORMAT_VERSION, **record})
        entries.append({"kind": policy.kind, "name": policy.name, "file": stem, "weights": policy.module is not None})
    return entries


def load_policies(folder: Path, entries: list[dict]) -> list[Policy]:
    """The policy points a manifest lists, rebuilt through :data:`~fastslow.policies.POLICIES`."""
    policies = []
    for entry in entries:
        try:
            kind, stem, weights = entry["kind"], entry["file"], bool(entry["weights"])
        except (KeyError, TypeError) as err:
            raise CheckpointError(
                f"checkpoint file {folder / 'manifest.json'} lists a policy without {err}: re-run `fastslow fit`"
            ) from None
        if kind not in POLICIES:
            raise CheckpointError(
                f"checkpoint {folder / stem}.json is a policy of kind {kind!r}, which is not registered "
                f"(known: {', '.join(POLICIES)}): import the module that registers it before loading"
            )
        if weights:
            config, tensors = _read(folder, stem)
            _check_finite(tensors, folder / f"{stem}.safetensors")
        else:
            config, tensors = _read_json(folder / f"{stem}.json"), None
        try:
            policy = POLICIES[kind].from_config(config["config"], tensors)
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            problem = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise CheckpointError(
                f"checkpoint {folder / stem} does not rebuild its {kind} policy ({problem}): re-run `fastslow fit`"
            ) from None
        policies.append(policy)
    return policies


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_manifest(
    folder: Path, *, generation: str, system2: str, policies: list[dict], config: dict, training: dict | None = None
) -> None:
    """Write ``manifest.json`` last: the fit's ``generation`` id, the SHA-256 of every checkpoint
    file already in ``folder`` (a fit writes into a fresh folder, so exactly its own), the
    policies' entries (:func:`save_policies`), the fit's config and ``training`` (how the systems
    were trained: world size, backend; results.json's ``distributed``)."""
    files = {
        path.name: _sha256(path)
        for path in sorted(folder.iterdir())
        if path.is_file() and not path.name.startswith(".") and path.name != MANIFEST
    }
    manifest = {
        "format": MANIFEST_FORMAT,
        "generation": generation,
        "system2": system2,
        "policies": policies,
        "files": files,
        "config": config,
        **({} if training is None else {"training": training}),
    }
    atomic.write_json(folder / MANIFEST, manifest)


def read_manifest(folder: Path) -> dict:
    """``folder``'s manifest, its shape checked (``generation``, ``files``, ``policies``, ``config``)."""
    path = folder / MANIFEST
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} is missing: re-run `fastslow fit` to write a complete checkpoint folder")
    try:
        manifest = json.loads(path.read_text())
        if not isinstance(manifest, dict):
            raise ValueError("not a JSON object")
        if manifest.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"format {manifest.get('format')!r}, expected {MANIFEST_FORMAT}")
        checks = {"generation": str, "files": dict, "policies": list, "config": dict}
        for key, kind in checks.items():
            if not isinstance(manifest[key], kind):
                raise ValueError(f"its {key} is not a {kind.__name__}")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise CheckpointError(
            f"checkpoint file {path} is corrupt or from an older fastslow ({err}): re-run `fastslow fit`"
        ) from None
    return manifest


def verify_files(folder: Path, manifest: dict) -> None:
    """Every file the manifest lists is present with the SHA-256 it recorded: else the folder
    mixes fits (files copied in, edited, or left by an interrupted older writer) and is refused."""
    stale = []
    for name, digest in manifest["files"].items():
        path = folder / str(name)
        if not path.is_file():
            stale.append(f"{name} (missing)")
        elif _sha256(path) != digest:
            stale.append(str(name))
    if stale:
        shown = ", ".join(stale[:4]) + (f" and {len(stale) - 4} more" if len(stale) > 4 else "")
        raise CheckpointError(
            f"checkpoint files in {folder} are not the ones its fit wrote (generation {manifest['generation'][:12]} "
            f"in {MANIFEST}): {shown} — changed by hand or copied from another fit; re-run `fastslow fit`, or restore them"
        )
