"""fastslow: thinking fast and slow with neural networks.

A spiking System 1 answers most inputs over a few timesteps; a conventional System 2
is called when a policy decides to escalate; every answer carries an energy estimate.
"""

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

__all__ = [
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
