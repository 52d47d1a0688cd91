"""Policies that stop System 1 early: SEENN-I over timesteps, cascade exits over layers.

Both read System 1's recorded cumulative-mean logits [T, E, N, C] (see
:class:`fastslow.systems.records.S1Record`) and return a :class:`Routing` whose
``timesteps``/``exit_taken`` say where each input stopped, so energy is charged for
exactly that.
"""

from __future__ import annotations

import torch

from fastslow.policies.base import Decision, FitContext, Policy, Routing, SystemOutputs, at_last_step, first_true, register_policy
from fastslow.policies.confidence import ConfidenceMeasure, confidence_policy_macs, confidence_score


def seenn1_confidence(
    logits: torch.Tensor, temperature: float = 1.0, measure: ConfidenceMeasure = "max_softmax", steps: torch.Tensor | None = None
) -> torch.Tensor:
    """SEENN-I's confidence at every step [T, N]: softmax(S_t / τ) of the cumulative *sum* S_t of outputs.

    ``logits`` [T, N, C] are cumulative means, so S_t = t · logits[t-1]. ``steps``: the t of each row
    of ``logits`` instead, shaped as its leading dimensions or broadcast to them (serving's
    stragglers each have their own t).
    """
    if steps is None:
        steps = torch.arange(1, logits.shape[0] + 1, device=logits.device)[:, None]
    return confidence_score(logits * steps[..., None].to(logits.dtype) / temperature, measure)


def seenn1_decision(
    logits: torch.Tensor,
    threshold: float,
    timesteps: int,
    *,
    temperature: float = 1.0,
    measure: ConfidenceMeasure = "max_softmax",
    escalate_unconfident: bool = False,
) -> Decision:
    """SEENN-I (Li et al. 2023) over the first t ≤ T steps recorded, ``logits`` [t, E, N, C]: an input
    stops at the first step whose confidence exceeds ``threshold``; at T the rest stop too (or, with
    ``escalate_unconfident``, go to System 2). The final exit answers; the policy costs C MACs per step."""
    recorded = logits.shape[0]
    final = logits[:, -1]
    n = final.shape[1]
    if recorded == 0:
        return Decision.undecided(n, logits.device)
    confident = seenn1_confidence(final, temperature, measure) > threshold
    first, any_confident = first_true(confident)
    at_end = recorded >= timesteps
    steps = torch.where(any_confident, first + 1, torch.full_like(first, recorded))
    routing = Routing(
        escalate=(~any_confident) & escalate_unconfident & at_end,
        timesteps=steps,
        exit_taken=torch.full_like(steps, logits.shape[1] - 1),
        policy_macs=steps.float() * confidence_policy_macs(logits.shape[-1]),
    )
    return Decision(any_confident | at_end, routing)


def seenn1_routing(
    logits: torch.Tensor,
    threshold: float,
    *,
    temperature: float = 1.0,
    measure: ConfidenceMeasure = "max_softmax",
    escalate_unconfident: bool = False,
) -> Routing:
    """SEENN-I over a full run's ``logits`` [T, E, N, C] (see :func:`seenn1_decision`)."""
    return seenn1_decision(
        logits, threshold, logits.shape[0], temperature=temperature, measure=measure, escalate_unconfident=escalate_unconfident
    ).routing


def cascade_routing(
    logits: torch.Tensor,
    threshold: float,
    *,
    measure: ConfidenceMeasure = "max_softmax",
    escalate_unconfident: bool = False,
) -> Routing:
    """Cascade exits (Leroux et al. 2017): heads are checked in depth order after T steps; an input
    leaves at the first head whose confidence reaches ``threshold`` (else the last head answers, or
    System 2 with ``escalate_unconfident``). Every head checked is charged (``cascade=True``).
    """
    at_t = logits[-1]  # [E, N, C]
    confident = confidence_score(at_t, measure) >= threshold  # [E, N]
    first, any_confident = first_true(confident)
    steps = torch.full_like(first, logits.shape[0])
    n_classes = logits.shape[-1]
    return Routing(
        escalate=(~any_confident) & escalate_unconfident,
        timesteps=steps,
        exit_taken=first,
        policy_macs=(first + 1).float() * confidence_policy_macs(n_classes),
        cascade=True,
    )


class _ThresholdSweep(Policy):
    """A family swept over the confidence thresholds, with and without escalating (``+s2``)."""

    knob_order = ("threshold", True)

    def __init__(self, threshold: float, escalate: bool = False, measure: ConfidenceMeasure = "max_softmax") -> None:
        self.threshold, self.escalate, self.measure = float(threshold), bool(escalate), measure

    @property
    def name(self) -> str:
        return f"{self.kind}@{self.threshold:.10g}{'+s2' if self.escalate else ''}"

    @property
    def family(self) -> str:
        return f"{self.kind}+s2" if self.escalate else self.kind

    @property
    def knob(self) -> dict:
        return {"threshold": self.threshold, "measure": self.measure, "escalate": self.escalate}

    @classmethod
    def fit(cls, context: FitContext) -> list[Policy]:
        c = context.config.confidence
        return [cls(threshold, escalate, c.measure) for escalate in (False, True) for threshold in c.thresholds]

    @classmethod
    def from_config(cls, config: dict, state: dict[str, torch.Tensor] | None = None) -> Policy:
        return cls(float(config["threshold"]), bool(config.get("escalate", False)), config.get("measure", "max_softmax"))


@register_policy
class Seenn1(_ThresholdSweep):
    """``seenn1@θ[+s2]``: stop each input at the first step whose SEENN-I confidence exceeds θ."""

    kind = "seenn1"
    rank = 20

    def __init__(
        self, threshold: float, escalate: bool = False, measure: ConfidenceMeasure = "max_softmax", temperature: float = 1.0
    ) -> None:
        super().__init__(threshold, escalate, measure)
        if not temperature > 0.0:
            raise ValueError(f"temperature (SEENN-I's softmax temperature) must be positive, got {temperature}")
        self.temperature = float(temperature)

    @property
    def knob(self) -> dict:
        return {**super().knob, "temperature": self.temperature}

    @classmethod
    def fit(cls, context: FitContext) -> list[Policy]:
        c = context.config.confidence
        return [cls(threshold, escalate, c.measure, c.temperature) for escalate in (False, True) for threshold in c.thresholds]

    @classmethod
    def from_config(cls, config: dict, state: dict[str, torch.Tensor] | None = None) -> Policy:
        return cls(
            float(config["threshold"]),
            bool(config.get("escalate", False)),
            config.get("measure", "max_softmax"),
            float(config.get("temperature", 1.0)),
        )

    def decide(self, outputs: SystemOutputs) -> Decision:
        return seenn1_decision(
            outputs.s1.logits,
            self.threshold,
            outputs.timesteps,
            temperature=self.temperature,
            measure=self.measure,
            escalate_unconfident=self.escalate,
        )


@register_policy
class CascadeExits(_ThresholdSweep):
    """``exits@θ[+s2]``: after T steps, the first exit head (in depth order) confident to θ answers."""

    kind = "exits"
    rank = 30

    @classmethod
    def fit(cls, context: FitContext) -> list[Policy]:
        return super().fit(context) if len(context.val.s1.exit_layers) > 1 else []

    def decide(self, outputs: SystemOutputs) -> Decision:
        return at_last_step(
            outputs,
            lambda: cascade_routing(outputs.s1.logits, self.threshold, measure=self.measure, escalate_unconfident=self.escalate),
        )
