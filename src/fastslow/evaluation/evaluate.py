"""Evaluate every strategy over the same recorded System 1 / System 2 outputs.

System 1 is simulated once per input (all T steps, every exit recorded) and System 2
once; each strategy is then a :class:`~fastslow.policies.Routing` over those records,
charged for exactly what it ran.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
from torch import nn

from fastslow.energy.accounting import OpCounts, s1_op_counts
from fastslow.energy.profile import EnergyProfile
from fastslow.evaluation.metrics import routing_metrics
from fastslow.policies import (
    Router,
    Routing,
    confidence_routing,
    oracle_routing,
    random_routing,
    router_features,
)
from fastslow.policies.confidence import ConfidenceMeasure
from fastslow.systems.system1 import System1


@dataclass
class SystemOutputs:
    """Both systems' records on one split (CPU tensors). N inputs, T steps, E exits, K components."""

    labels: torch.Tensor  # [N]
    s1_logits: torch.Tensor  # [T, E, N, C] cumulative
    s1_synaptic_ops: torch.Tensor  # [K, T, N]
    s1_dense_macs: torch.Tensor  # [K, T, N]
    s1_neuron_updates: torch.Tensor  # [K]
    s1_spike_rates: torch.Tensor  # [H, T, N]
    exit_layers: tuple[int, ...]
    s2_logits: torch.Tensor  # [N, C]
    s2_macs: int

    @property
    def timesteps(self) -> int:
        return self.s1_logits.shape[0]

    @property
    def last_exit(self) -> int:
        return self.s1_logits.shape[1] - 1

    def s1_final_logits(self) -> torch.Tensor:
        return self.s1_logits[-1, -1]

    def router_features(self) -> torch.Tensor:
        return router_features(self.s1_logits[:, -1], self.s1_spike_rates)


def collect_outputs(
    system1: System1,
    system2: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    s2_macs: int,
    *,
    batch_size: int = 256,
    seed: int = 0,
    device: torch.device | str = "cpu",
    on_batch: Callable[[], None] | None = None,
) -> SystemOutputs:
    """Run both systems over ``x`` in batches; the spike encoder's randomness is seeded."""
    device = torch.device(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    system1.eval()
    system2.eval()
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("logits", "syn", "dense", "rates", "s2")}
    neuron_updates = None
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            xb = x[start : start + batch_size].to(device)
            run = system1.run(xb, generator=generator)
            parts["logits"].append(run.logits.cpu())
            parts["syn"].append(run.synaptic_ops.cpu())
            parts["dense"].append(run.dense_macs.cpu())
            parts["rates"].append(run.spike_rates.cpu())
            parts["s2"].append(system2(xb).cpu())
            neuron_updates = run.neuron_updates.cpu()
            if on_batch is not None:
                on_batch()
    return SystemOutputs(
        labels=y.cpu(),
        s1_logits=torch.cat(parts["logits"], dim=2),
        s1_synaptic_ops=torch.cat(parts["syn"], dim=2),
        s1_dense_macs=torch.cat(parts["dense"], dim=2),
        s1_neuron_updates=neuron_updates,
        s1_spike_rates=torch.cat(parts["rates"], dim=2),
        exit_layers=system1.exit_layers,
        s2_logits=torch.cat(parts["s2"]),
        s2_macs=s2_macs,
    )


@dataclass
class StrategyResult:
    """One evaluated strategy; accuracies and rates are fractions, energies µJ per input (mean)."""

    name: str
    family: str
    accuracy: float
    escalation_rate: float
    energy_uj: float
    energy_terms_uj: dict[str, float]
    mean_timesteps: float
    energy_ratio_vs_s2: float
    ops_per_input: dict[str, float]
    exits: dict[str, int]
    knob: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def score_routing(
    name: str, family: str, routing: Routing, outputs: SystemOutputs, profile: EnergyProfile, knob: dict | None = None
) -> StrategyResult:
    """Accuracy and per-input energy of ``routing`` over ``outputs`` (energy_ratio filled by the caller)."""
    n = len(outputs.labels)
    steps = routing.timesteps.long()
    exit_taken = routing.exit_taken.long()
    s1_logits = outputs.s1_logits[(steps - 1).clamp(min=0), exit_taken, torch.arange(n)]
    predictions = torch.where(routing.escalate, outputs.s2_logits.argmax(1), s1_logits.argmax(1))
    synaptic, dense, neurons = s1_op_counts(
        outputs.s1_synaptic_ops, outputs.s1_dense_macs, outputs.s1_neuron_updates, outputs.exit_layers, steps, exit_taken,
        routing.cascade,
    )
    counts = OpCounts(
        synaptic_ops=synaptic,
        s1_dense_macs=dense,
        neuron_updates=neurons,
        policy_macs=routing.policy_macs.float(),
        s2_macs=routing.escalate.float() * outputs.s2_macs,
    )
    terms = {k: float(v.mean()) for k, v in counts.energy_terms_uj(profile).items()}
    exits = Counter(
        "system2" if esc else f"system1:exit{int(e)}@t{int(t)}"
        for esc, e, t in zip(routing.escalate.tolist(), exit_taken.tolist(), steps.tolist())
    )
    return StrategyResult(
        name=name,
        family=family,
        accuracy=float((predictions == outputs.labels).float().mean()),
        escalation_rate=float(routing.escalate.float().mean()),
        energy_uj=sum(terms.values()),
        energy_terms_uj=terms,
        mean_timesteps=float(steps.float().mean()),
        energy_ratio_vs_s2=float("nan"),
        ops_per_input={
            "synaptic_ops": float(synaptic.mean()),
            "s1_dense_macs": float(dense.mean()),
            "neuron_updates": float(neurons.mean()),
            "policy_macs": float(counts.policy_macs.mean()),
            "s2_macs": float(counts.s2_macs.mean()),
        },
        exits=dict(sorted(exits.items())),
        knob=knob or {},
    )


DEFAULT_THRESHOLDS: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999)


def evaluate_strategies(
    outputs: SystemOutputs,
    profile: EnergyProfile,
    *,
    routers: list[Router] = (),
    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS,
    measure: ConfidenceMeasure = "max_softmax",
    seed: int = 0,
) -> list[StrategyResult]:
    """Every reference and every swept policy point, in a stable order."""
    n, steps, last = len(outputs.labels), outputs.timesteps, outputs.last_exit
    s1_correct = outputs.s1_final_logits().argmax(1) == outputs.labels
    results = [
        score_routing("system1", "system1", Routing.full_system1(n, steps, last), outputs, profile),
        score_routing("system2", "system2", Routing.system2_only(n), outputs, profile),
        score_routing("oracle", "oracle", oracle_routing(s1_correct, steps, last), outputs, profile),
    ]
    final_logits = outputs.s1_final_logits()
    for threshold in thresholds:
        routing = confidence_routing(final_logits, threshold, steps, last, measure)
        results.append(score_routing(f"confidence@{threshold:g}", "confidence", routing, outputs, profile, {"threshold": threshold, "measure": measure}))
    features = outputs.router_features() if routers else None
    for router in routers:
        routing = router.route(features, steps, last)
        share = router.target_share
        results.append(score_routing(f"router@share={share:g}", "router", routing, outputs, profile, {"target_share": share}))
    # Random escalation at the rates the learned router reached (or the confidence sweep's, without routers).
    matched_family = "router" if routers else "confidence"
    matched_rates = sorted({round(r.escalation_rate, 3) for r in results if r.family == matched_family} - {0.0, 1.0})
    for index, rate in enumerate(matched_rates):
        routing = random_routing(n, rate, steps, last, seed=seed + index)
        results.append(score_routing(f"random@rate={rate:.3f}", "random", routing, outputs, profile, {"rate": rate}))
    s2_energy = results[1].energy_uj
    for result in results:
        result.energy_ratio_vs_s2 = result.energy_uj / s2_energy if s2_energy > 0 else float("nan")
    return results


def family_metrics(results: list[StrategyResult]) -> dict[str, dict]:
    """APGR / CPT for every swept family (see :mod:`fastslow.evaluation.metrics`)."""
    by_name = {r.name: r for r in results}
    acc_s1, acc_s2 = by_name["system1"].accuracy, by_name["system2"].accuracy
    families = sorted({r.family for r in results} - {"system1", "system2", "oracle"})
    return {
        family: routing_metrics([(r.escalation_rate, r.accuracy) for r in results if r.family == family], acc_s1, acc_s2).to_dict()
        for family in families
    }


def best_within(results: list[StrategyResult], reference: str = "system2", max_drop: float = 0.005) -> dict[str, StrategyResult]:
    """Per policy family, the cheapest point within ``max_drop`` accuracy of ``reference``."""
    target = next(r for r in results if r.name == reference).accuracy - max_drop
    best: dict[str, StrategyResult] = {}
    for result in results:
        if result.family in ("system1", "system2", "oracle") or result.accuracy < target:
            continue
        if result.family not in best or result.energy_uj < best[result.family].energy_uj:
            best[result.family] = result
    return best


