"""Evaluate every strategy over the same recorded System 1 / System 2 outputs.

System 1 is simulated once per input (all T steps, every exit recorded) and System 2
once; each strategy is then a :class:`~fastslow.policies.Routing` over those records,
charged for exactly what it ran.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from fastslow.data import check_batch
from fastslow.energy.accounting import charge, escalation_bytes
from fastslow.energy.profile import EnergyProfile
from fastslow.evaluation.metrics import routing_metrics
from fastslow.policies import POLICIES, Policy, RandomEscalation, Routing, SystemOutputs
from fastslow.policies.seenn2 import policy_input
from fastslow.systems.records import S1Record
from fastslow.systems.system1 import System1


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
    check_batch(x, y, system1.spec.n_classes)
    if s2_macs < 0:
        raise ValueError(f"s2_macs (System 2's MACs per input) must be ≥ 0, got {s2_macs}: count them with fastslow.count_macs")
    device = torch.device(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    system1.eval()
    system2.eval()
    records: list[S1Record] = []
    s2_parts, policy_parts = [], []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            xb = x[start : start + batch_size].to(device)
            run = system1.run(xb, generator=generator)
            records.append(run.to("cpu"))
            s2_logits = system2(xb)
            if tuple(s2_logits.shape) != (len(xb), system1.spec.n_classes):
                raise ValueError(
                    f"System 2 returns {list(s2_logits.shape)} for {len(xb)} inputs, but System 1 has "
                    f"{system1.spec.n_classes} classes: it must map [B, ...] inputs to [B, {system1.spec.n_classes}] logits"
                )
            s2_parts.append(s2_logits.cpu())
            policy_parts.append(policy_input(xb).cpu())
            if on_batch is not None:
                on_batch()
    return SystemOutputs(
        s1=S1Record.concatenate(records),
        timesteps=system1.spec.timesteps,
        policy_inputs=torch.cat(policy_parts),
        s2_macs=s2_macs,
        s2_logits=torch.cat(s2_parts),
        labels=y.cpu(),
        link_bytes=escalation_bytes(tuple(x.shape[1:]), system1.spec.n_classes),
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


def routing_predictions(routing: Routing, outputs: SystemOutputs) -> torch.Tensor:
    """The class each input is answered with [N]: System 2's, or System 1's at its (exit, t)."""
    n = len(outputs)
    s1_logits = outputs.s1.logits[(routing.timesteps.long() - 1).clamp(min=0), routing.exit_taken.long(), torch.arange(n)]
    return torch.where(routing.escalate, outputs.s2_logits.argmax(1), s1_logits.argmax(1))


def score_routing(
    name: str, family: str, routing: Routing, outputs: SystemOutputs, profile: EnergyProfile, knob: dict | None = None
) -> StrategyResult:
    """Accuracy and per-input energy of ``routing`` over ``outputs`` (energy_ratio filled by the caller)."""
    steps = routing.timesteps.long()
    exit_taken = routing.exit_taken.long()
    predictions = routing_predictions(routing, outputs)
    charged = charge(outputs.s1, routing, outputs.s2_macs, profile, link_bytes=outputs.link_bytes)
    counts = charged.ops
    terms = {k: float(v.mean()) for k, v in charged.terms_uj.items()}
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
            "synaptic_ops": float(counts.synaptic_ops.mean()),
            "s1_dense_macs": float(counts.s1_dense_macs.mean()),
            "neuron_updates": float(counts.neuron_updates.mean()),
            "policy_macs": float(counts.policy_macs.mean()),
            "s2_macs": float(counts.s2_macs.mean()),
            "link_bytes": float((counts.bytes_sent + counts.bytes_received).mean()),
        },
        exits=dict(sorted(exits.items())),
        knob=knob or {},
    )


@dataclass
class Strategy:
    """One point to score: a policy and its routing over a split."""

    policy: Policy
    routing: Routing

    @property
    def name(self) -> str:
        return self.policy.name


def enumerate_strategies(outputs: SystemOutputs, policies: list[Policy]) -> list[Strategy]:
    """Every policy's routing over ``outputs`` (a recorded split), in the policies' order."""
    return [Strategy(policy, policy.route(outputs)) for policy in policies]


def evaluate_strategies(
    outputs: SystemOutputs, profile: EnergyProfile, policies: list[Policy], *, seed: int = 0
) -> list[StrategyResult]:
    """Every policy point in ``policies`` (the references ``system1`` and ``system2`` among them), then
    ``random@rate=r``: random escalation at the rates the learned router reached (or the confidence
    sweep's, without routers), seeded from ``seed``."""
    results = [
        score_routing(s.name, s.policy.family, s.routing, outputs, profile, s.policy.knob)
        for s in enumerate_strategies(outputs, policies)
    ]
    names = [r.name for r in results]
    for reference in ("system1", "system2"):
        if reference not in names:
            raise ValueError(f"the policies must include the reference {reference!r} (every ratio and metric is against it)")
    families = {r.family for r in results}
    matched_family = "router" if "router" in families else "confidence"
    matched_rates = sorted({round(r.escalation_rate, 3) for r in results if r.family == matched_family} - {0.0, 1.0})
    for index, rate in enumerate(matched_rates):
        random = RandomEscalation(rate, seed=seed + index)
        results.append(score_routing(random.name, random.family, random.route(outputs), outputs, profile, random.knob))
    s2_energy = results[names.index("system2")].energy_uj
    for result in results:
        result.energy_ratio_vs_s2 = result.energy_uj / s2_energy if s2_energy > 0 else float("nan")
    return results


def is_reference(family: str) -> bool:
    """Whether results of ``family`` are a reference point (a registered family marked ``reference``)."""
    return family in POLICIES and POLICIES[family].reference


def system1_only_families(results: list[StrategyResult]) -> set[str]:
    """The families whose every point answered from System 1 alone on these results (none escalated)."""
    families = {r.family for r in results}
    return {f for f in families if all(r.escalation_rate == 0 for r in results if r.family == f)}


def family_metrics(results: list[StrategyResult]) -> dict[str, dict]:
    """APGR / CPT for every swept family (see :mod:`fastslow.evaluation.metrics`)."""
    by_name = {r.name: r for r in results}
    acc_s1, acc_s2 = by_name["system1"].accuracy, by_name["system2"].accuracy
    families = sorted(f for f in {r.family for r in results} if not is_reference(f))
    return {
        family: routing_metrics(
            [(r.escalation_rate, r.accuracy) for r in results if r.family == family], acc_s1, acc_s2
        ).to_dict()
        for family in families
    }


def best_within(results: list[StrategyResult], reference: str = "system2", max_drop: float = 0.005) -> dict[str, StrategyResult]:
    """Per policy family, the cheapest point within ``max_drop`` accuracy of ``reference``."""
    target = next(r for r in results if r.name == reference).accuracy - max_drop
    best: dict[str, StrategyResult] = {}
    for result in results:
        if is_reference(result.family) or result.accuracy < target:
            continue
        if result.family not in best or result.energy_uj < best[result.family].energy_uj:
            best[result.family] = result
    return best
