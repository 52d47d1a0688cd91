"""fastslow: thinking fast and slow with neural networks.

A spiking System 1 answers most inputs over a few timesteps; a conventional System 2
is called when a policy decides to escalate; every answer carries an energy estimate.

Names load on first use (PEP 562), so ``import fastslow.cli`` or ``fastslow.runtime`` loads no torch:
the command line sets OpenMP's wait policy before torch starts its threads (``fastslow.runtime``).
"""

from __future__ import annotations

import importlib
from importlib import metadata
from typing import TYPE_CHECKING

try:
    __version__ = metadata.version("fastslow")
except metadata.PackageNotFoundError:  # run from sources that are not installed
    __version__ = "unknown"

if TYPE_CHECKING:
    from fastslow.config import FitConfig, load_config
    from fastslow.energy import EnergyProfile, count_macs, load_profile
    from fastslow.errors import FastslowError
    from fastslow.evaluation import StrategyResult, collect_outputs, evaluate_strategies, routing_metrics
    from fastslow.pipeline import FitResult, evaluate_folder, fit, load
    from fastslow.policies import POLICIES, Policy, Router, Routing, confidence_score, register_policy, train_router
    from fastslow.serving import Deployment, FastSlow
    from fastslow.spiking import LIF, LIFParams, LIFState, lif_multistep, lif_step
    from fastslow.stdp import STDPNetwork, STDPSpec
    from fastslow.systems import GraphedSystem1, System1, System1Spec, System2Spec, build_system2

_EXPORTS = {
    "build_system2": "fastslow.systems",
    "collect_outputs": "fastslow.evaluation",
    "confidence_score": "fastslow.policies",
    "count_macs": "fastslow.energy",
    "Deployment": "fastslow.serving",
    "EnergyProfile": "fastslow.energy",
    "evaluate_folder": "fastslow.pipeline",
    "evaluate_strategies": "fastslow.evaluation",
    "FastSlow": "fastslow.serving",
    "FastslowError": "fastslow.errors",
    "fit": "fastslow.pipeline",
    "FitConfig": "fastslow.config",
    "FitResult": "fastslow.pipeline",
    "GraphedSystem1": "fastslow.systems",
    "LIF": "fastslow.spiking",
    "lif_multistep": "fastslow.spiking",
    "lif_step": "fastslow.spiking",
    "LIFParams": "fastslow.spiking",
    "LIFState": "fastslow.spiking",
    "load": "fastslow.pipeline",
    "load_config": "fastslow.config",
    "load_profile": "fastslow.energy",
    "POLICIES": "fastslow.policies",
    "Policy": "fastslow.policies",
    "register_policy": "fastslow.policies",
    "Router": "fastslow.policies",
    "Routing": "fastslow.policies",
    "routing_metrics": "fastslow.evaluation",
    "STDPNetwork": "fastslow.stdp",
    "STDPSpec": "fastslow.stdp",
    "StrategyResult": "fastslow.evaluation",
    "System1": "fastslow.systems",
    "System1Spec": "fastslow.systems",
    "System2Spec": "fastslow.systems",
    "train_router": "fastslow.policies",
}


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fastslow' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next access skips this hook
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "__version__",
    "Deployment",
    "EnergyProfile",
    "FastslowError",
    "FitConfig",
    "FastSlow",
    "FitResult",
    "GraphedSystem1",
    "LIF",
    "LIFParams",
    "LIFState",
    "POLICIES",
    "Policy",
    "Router",
    "Routing",
    "STDPNetwork",
    "STDPSpec",
    "StrategyResult",
    "System1",
    "System1Spec",
    "System2Spec",
    "build_system2",
    "collect_outputs",
    "confidence_score",
    "count_macs",
    "evaluate_folder",
    "evaluate_strategies",
    "fit",
    "lif_multistep",
    "lif_step",
    "load",
    "load_config",
    "load_profile",
    "register_policy",
    "routing_metrics",
    "train_router",
]
