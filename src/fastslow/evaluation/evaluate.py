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
import torch.nn.functional as F
from torch import nn

from fastslow.data import check_batch
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
from fastslow.policies.dynamic import aet_oracle_routing, cascade_routing, seenn1_routing
from fastslow.policies.exit_router import ExitRouter, action_table, exit_router_features
from fastslow.policies.seenn2 import TimestepPolicy, policy_input
from fastslow.policies.step_router import StepRouter, step_router_features
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
    policy_inputs: torch.Tensor  # [N, F] what an input-reading policy (SEENN-II) sees

    def subset(self, index: torch.Tensor) -> "SystemOutputs":
        """The records of the inputs at ``index`` only."""
        return SystemOutputs(
            labels=self.labels[index],
            s1_logits=self.s1_logits[:, :, index],
            s1_synaptic_ops=self.s1_synaptic_ops[:, :, index],
            s1_dense_macs=self.s1_dense_macs[:, :, index],
            s1_neuron_updates=self.s1_neuron_updates,
            s1_spike_rates=self.s1_spike_rates[:, :, index],
            exit_layers=self.exit_layers,
            s2_logits=self.s2_logits[index],
            s2_macs=self.s2_macs,
            policy_inputs=self.policy_inputs[index],
        )

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

    def exit_router_features(self) -> torch.Tensor:
        return exit_router_features(self.s1_logits, self.s1_spike_rates)

    def step_router_features(self) -> torch.Tensor:
        return step_router_features(self.s1_logits, self.s1_spike_rates)

    def step_outcome_energies(self, profile: EnergyProfile, policy_macs_per_step: float) -> tuple[torch.Tensor, torch.Tensor]:
        """µJ [T, N] of stopping after t steps at the last exit, and of escalating after t steps
        (System 1 for t steps, a policy of ``policy_macs_per_step`` MACs read at each, then System 2)."""
        n, last = len(self.labels), self.last_exit
        to_s2 = torch.ones(n, dtype=torch.bool)
        stop, escalate = [], []
        for t in range(1, self.timesteps + 1):
            stop.append(per_input_energy(Routing.full_system1(n, t, last, policy_macs=t * policy_macs_per_step), self, profile))
            escalate.append(per_input_energy(Routing.full_system1(n, t, last, to_s2, t * policy_macs_per_step), self, profile))
        return torch.stack(stop), torch.stack(escalate)

    def step_features(self) -> torch.Tensor:
        """[T, N, 5] per-step state for a halting head: the step statistics of
        :func:`~fastslow.policies.step_router.step_state_features` (SEENN-I's max-softmax, margin and
        1 − H/log C of the last exit, t/T, and whether the answer equals the previous step's)."""
        classes = self.s1_logits.shape[-1]
        return self.step_router_features()[..., classes : classes + 5]

    def s1_correct_by_step(self) -> torch.Tensor:
        """[T, N] whether the final exit's answer after t steps is right."""
        return self.s1_logits[:, -1].argmax(-1) == self.labels[None]

    def s2_correct(self) -> torch.Tensor:
        return self.s2_logits.argmax(-1) == self.labels

    def step_losses(self) -> torch.Tensor:
        """[T, N] cross-entropy of the final exit's answer after t steps."""
        final = self.s1_logits[:, -1]
        steps, n, classes = final.shape
        return F.cross_entropy(final.reshape(-1, classes).float(), self.labels.repeat(steps), reduction="none").reshape(steps, n)

    def action_losses(self) -> torch.Tensor:
        """[N, E·T + 1] cross-entropy of every (exit, t) answer, then System 2's (see :func:`action_table`)."""
        steps, exits, n, classes = self.s1_logits.shape
        per_exit_step = F.cross_entropy(
            self.s1_logits.permute(1, 0, 2, 3).reshape(-1, classes).float(), self.labels.repeat(exits * steps), reduction="none"
        ).reshape(exits * steps, n)
        s2 = F.cross_entropy(self.s2_logits.float(), self.labels, reduction="none")
        return torch.cat([per_exit_step, s2[None]]).T

    def action_energies(self, profile: EnergyProfile, policy_macs: float, s2_after_first_step: bool) -> torch.Tensor:
        """[N, E·T + 1] µJ of every (exit, t) action (cascade-charged), then System 2's: after System 1's
        first step at exit 0 when ``s2_after_first_step``, else System 2 alone."""
        n = len(self.labels)
        columns = []
        for action in action_table(self.s1_logits.shape[1], self.timesteps):
            if action is None:
                steps = 1 if s2_after_first_step else 0
                routing = Routing(torch.ones(n, dtype=torch.bool), torch.full((n,), steps), torch.zeros(n, dtype=torch.long),
                                  torch.full((n,), float(policy_macs)), cascade=True)
            else:
                exit_index, steps = action
                routing = Routing(torch.zeros(n, dtype=torch.bool), torch.full((n,), steps), torch.full((n,), exit_index),
                                  torch.full((n,), float(policy_macs)), cascade=True)
            columns.append(per_input_energy(routing, self, profile))
        return torch.stack(columns, dim=1)


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
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("logits", "syn", "dense", "rates", "s2", "policy")}
    neuron_updates = None
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            xb = x[start : start + batch_size].to(device)
            run = system1.run(xb, generator=generator)
            parts["logits"].append(run.logits.cpu())
            parts["syn"].append(run.synaptic_ops.cpu())
            parts["dense"].append(run.dense_macs.cpu())
            parts["rates"].append(run.spike_rates.cpu())
            s2_logits = system2(xb)
            if tuple(s2_logits.shape) != (len(xb), system1.spec.n_classes):
                raise ValueError(f"System 2 returns {list(s2_logits.shape)} for {len(xb)} inputs, but System 1 has "
                                 f"{system1.spec.n_classes} classes: it must map [B, ...] inputs to [B, {system1.spec.n_classes}] logits")
            parts["s2"].append(s2_logits.cpu())
            parts["policy"].append(policy_input(xb).cpu())
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
        policy_inputs=torch.cat(parts["policy"]),
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


def _op_counts(routing: Routing, outputs: SystemOutputs) -> OpCounts:
    synaptic, dense, neurons = s1_op_counts(
        outputs.s1_synaptic_ops, outputs.s1_dense_macs, outputs.s1_neuron_updates, outputs.exit_layers,
        routing.timesteps.long(), routing.exit_taken.long(), routing.cascade,
    )
    return OpCounts(
        synaptic_ops=synaptic,
        s1_dense_macs=dense,
        neuron_updates=neurons,
        policy_macs=routing.policy_macs.float(),
        s2_macs=routing.escalate.float() * outputs.s2_macs,
    )


def per_input_energy(routing: Routing, outputs: SystemOutputs, profile: EnergyProfile) -> torch.Tensor:
    """µJ spent on each input [N] by ``routing``: everything that ran, summed over the energy terms."""
    return sum(_op_counts(routing, outputs).energy_terms_uj(profile).values())


def routing_predictions(routing: Routing, outputs: SystemOutputs) -> torch.Tensor:
    """The class each input is answered with [N]: System 2's, or System 1's at its (exit, t)."""
    n = len(outputs.labels)
    s1_logits = outputs.s1_logits[(routing.timesteps.long() - 1).clamp(min=0), routing.exit_taken.long(), torch.arange(n)]
    return torch.where(routing.escalate, outputs.s2_logits.argmax(1), s1_logits.argmax(1))


def score_routing(
    name: str, family: str, routing: Routing, outputs: SystemOutputs, profile: EnergyProfile, knob: dict | None = None
) -> StrategyResult:
    """Accuracy and per-input energy of ``routing`` over ``outputs`` (energy_ratio filled by the caller)."""
    steps = routing.timesteps.long()
    exit_taken = routing.exit_taken.long()
    predictions = routing_predictions(routing, outputs)
    counts = _op_counts(routing, outputs)
    synaptic, dense, neurons = counts.synaptic_ops, counts.s1_dense_macs, counts.neuron_updates
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


@dataclass
class PolicySet:
    """The trained policies to evaluate, each with its knob."""

    routers: list[Router] = field(default_factory=list)
    exit_routers: list[ExitRouter] = field(default_factory=list)
    step_routers: list[StepRouter] = field(default_factory=list)
    seenn2: list[tuple[float, TimestepPolicy]] = field(default_factory=list)  # (beta, policy)
    halting: list[tuple[float, nn.Module]] = field(default_factory=list)  # (lambda_p, HaltingHead)


def ponder_routing(head: nn.Module, step_features: torch.Tensor, last_exit: int, escalate_unconfident: bool) -> Routing:
    """PonderNet at inference: halt at the first t with λ_t > 0.5 (deterministic, not sampled); inputs
    that reach T with λ_T ≤ 0.5 (the network did not choose to halt) escalate when asked to."""
    from fastslow.policies.ponder import halting_step

    with torch.no_grad():
        lambdas = head(step_features)
    steps = halting_step(lambdas, rule="threshold", threshold=0.5)
    undecided = ~(lambdas > 0.5).any(0)
    return Routing(
        escalate=undecided & escalate_unconfident,
        timesteps=steps,
        exit_taken=torch.full_like(steps, last_exit),
        policy_macs=steps.float() * head.macs(),
    )


def _whole_space_router_label(space: str, index: int, router: ExitRouter | StepRouter) -> tuple[str, str, dict]:
    """Strategy name, family and knob of a whole-exit-space router (``space``: "exits" for the
    one-shot router, "steps" for the sequential one), by the target it was calibrated to."""
    if router.target_distribution is not None:
        return f"router@{space},target#{index}", f"router_{space}_target", {"target_distribution": router.target_distribution}
    if router.energy_budget_uj is not None:
        budget = router.energy_budget_uj
        return f"router@{space},budget={budget:.10g}uJ", f"router_{space}_budget", {"energy_budget_uj": budget}
    share = router.target_share
    return f"router@{space},share={share:g}", f"router_{space}", {"target_share": share}


def enumerate_strategies(
    outputs: SystemOutputs,
    policies: PolicySet | None = None,
    *,
    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS,
    measure: ConfidenceMeasure = "max_softmax",
    temperature: float = 1.0,
) -> list[tuple[str, str, dict, Routing]]:
    """(name, family, knob, routing) of every reference and policy point except ``random``."""
    policies = policies or PolicySet()
    n, steps, last = len(outputs.labels), outputs.timesteps, outputs.last_exit
    s1_correct = outputs.s1_final_logits().argmax(1) == outputs.labels
    items: list[tuple[str, str, dict, Routing]] = [
        ("system1", "system1", {}, Routing.full_system1(n, steps, last)),
        ("system2", "system2", {}, Routing.system2_only(n)),
        ("oracle", "oracle", {}, oracle_routing(s1_correct, steps, last)),
        ("aet_oracle", "aet_oracle", {}, aet_oracle_routing(outputs.s1_logits, outputs.labels)),
    ]
    add = lambda name, family, routing, knob: items.append((name, family, knob, routing))  # noqa: E731
    final_logits = outputs.s1_final_logits()
    for threshold in thresholds:
        knob = {"threshold": threshold, "measure": measure}
        add(f"confidence@{threshold:.10g}", "confidence", confidence_routing(final_logits, threshold, steps, last, measure), knob)
    for escalate in (False, True):
        suffix = "+s2" if escalate else ""
        for threshold in thresholds:
            knob = {"threshold": threshold, "measure": measure, "temperature": temperature, "escalate": escalate}
            routing = seenn1_routing(outputs.s1_logits, threshold, temperature=temperature, measure=measure, escalate_unconfident=escalate)
            add(f"seenn1@{threshold:.10g}{suffix}", f"seenn1{suffix}", routing, knob)
        if outputs.s1_logits.shape[1] > 1:
            for threshold in thresholds:
                routing = cascade_routing(outputs.s1_logits, threshold, measure=measure, escalate_unconfident=escalate)
                add(f"exits@{threshold:.10g}{suffix}", f"exits{suffix}", routing, {"threshold": threshold, "escalate": escalate})
    for beta, policy in policies.seenn2:
        add(f"seenn2@beta={beta:g}", "seenn2", policy.route(outputs.policy_inputs, last), {"beta": beta})
    if policies.halting:
        step_features = outputs.step_features()
        for escalate in (False, True):
            suffix = "+s2" if escalate else ""
            for lambda_p, head in policies.halting:
                add(f"ponder@lambda_p={lambda_p:g}{suffix}", f"ponder{suffix}", ponder_routing(head, step_features, last, escalate),
                    {"lambda_p": lambda_p, "escalate": escalate, "halting": "first t with lambda_t > 0.5"})
    if policies.routers:
        features = outputs.router_features()
        for router in policies.routers:
            share = router.target_share
            add(f"router@share={share:g}", "router", router.route(features, steps, last), {"target_share": share})
    if policies.exit_routers:
        features = outputs.exit_router_features()
        for index, router in enumerate(policies.exit_routers):
            name, family, knob = _whole_space_router_label("exits", index, router)
            add(name, family, router.route(features), knob)
    if policies.step_routers:
        features = outputs.step_router_features()
        for index, router in enumerate(policies.step_routers):
            name, family, knob = _whole_space_router_label("steps", index, router)
            add(name, family, router.route(features, last), knob)
    return items


def evaluate_strategies(
    outputs: SystemOutputs,
    profile: EnergyProfile,
    *,
    policies: PolicySet | None = None,
    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS,
    measure: ConfidenceMeasure = "max_softmax",
    temperature: float = 1.0,
    seed: int = 0,
) -> list[StrategyResult]:
    """Every reference and every swept policy point, in a stable order.

    Families: references ``system1``, ``system2``, ``oracle``, ``aet_oracle``; ``confidence@θ``;
    ``seenn1@θ`` (S1 only) and ``seenn1@θ+s2``; ``exits@θ`` and ``exits@θ+s2`` (with exit heads);
    ``seenn2@beta=β``; ``ponder@lambda_p=λ`` and ``…+s2``; ``router@share=ρ`` (S1 at T or S2) and
    ``router@exits,share=ρ`` (the whole exit space, one decision after step 1) and
    ``router@steps,share=ρ`` (a decision after every step); ``random@rate=r``.
    """
    policies = policies or PolicySet()
    results = [
        score_routing(name, family, routing, outputs, profile, knob)
        for name, family, knob, routing in enumerate_strategies(
            outputs, policies, thresholds=thresholds, measure=measure, temperature=temperature
        )
    ]
    n, steps, last = len(outputs.labels), outputs.timesteps, outputs.last_exit
    # Random escalation at the rates the learned router reached (or the confidence sweep's, without routers).
    matched_family = "router" if policies.routers else "confidence"
    matched_rates = sorted({round(r.escalation_rate, 3) for r in results if r.family == matched_family} - {0.0, 1.0})
    for index, rate in enumerate(matched_rates):
        routing = random_routing(n, rate, steps, last, seed=seed + index)
        results.append(score_routing(f"random@rate={rate:.3f}", "random", routing, outputs, profile, {"rate": rate}))
    s2_energy = results[1].energy_uj
    for result in results:
        result.energy_ratio_vs_s2 = result.energy_uj / s2_energy if s2_energy > 0 else float("nan")
    return results


S1_ONLY_FAMILIES = ("system1", "aet_oracle", "seenn1", "exits", "ponder")
REFERENCE_FAMILIES = ("system1", "system2", "oracle", "aet_oracle")


def family_metrics(results: list[StrategyResult]) -> dict[str, dict]:
    """APGR / CPT for every swept family (see :mod:`fastslow.evaluation.metrics`)."""
    by_name = {r.name: r for r in results}
    acc_s1, acc_s2 = by_name["system1"].accuracy, by_name["system2"].accuracy
    families = sorted({r.family for r in results} - set(REFERENCE_FAMILIES))
    return {
        family: routing_metrics([(r.escalation_rate, r.accuracy) for r in results if r.family == family], acc_s1, acc_s2).to_dict()
        for family in families
    }


def best_within(results: list[StrategyResult], reference: str = "system2", max_drop: float = 0.005) -> dict[str, StrategyResult]:
    """Per policy family, the cheapest point within ``max_drop`` accuracy of ``reference``."""
    target = next(r for r in results if r.name == reference).accuracy - max_drop
    best: dict[str, StrategyResult] = {}
    for result in results:
        if result.family in REFERENCE_FAMILIES or result.accuracy < target:
            continue
        if result.family not in best or result.energy_uj < best[result.family].energy_uj:
            best[result.family] = result
    return best


