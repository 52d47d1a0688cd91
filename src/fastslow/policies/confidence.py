"""Confidence policy: escalate to System 2 when System 1's confidence after T steps is below a threshold."""

from __future__ import annotations

import math
from typing import Literal

import torch

from fastslow.policies.base import Decision, FitContext, Policy, Routing, SystemOutputs, at_last_step, register_policy

ConfidenceMeasure = Literal["max_softmax", "margin", "neg_entropy"]
CONFIDENCE_MEASURES: tuple[str, ...] = ("max_softmax", "margin", "neg_entropy")


def confidence_score(logits: torch.Tensor, measure: ConfidenceMeasure = "max_softmax") -> torch.Tensor:
    """Confidence in [0, 1] of each row of ``logits`` [N, C].

    ``max_softmax``: top probability; ``margin``: top minus second probability;
    ``neg_entropy``: 1 − H(p)/log C (1 = one-hot, 0 = uniform).
    """
    probs = torch.softmax(logits.float(), dim=-1)
    if measure == "max_softmax":
        return probs.max(-1).values
    if measure == "margin":
        top2 = probs.topk(2, dim=-1).values
        return top2[..., 0] - top2[..., 1]
    if measure == "neg_entropy":
        entropy = -(probs * probs.clamp_min(1e-12).log()).sum(-1)
        return 1.0 - entropy / math.log(logits.shape[-1])
    raise ValueError(f"unknown confidence measure {measure!r}: use one of {CONFIDENCE_MEASURES}")


def confidence_policy_macs(n_classes: int) -> int:
    """The policy's own cost, counted as one MAC per class (softmax normalisation)."""
    return n_classes


def confidence_routing(
    logits: torch.Tensor, threshold: float, timesteps: int, last_exit: int, measure: ConfidenceMeasure = "max_softmax"
) -> Routing:
    """System 1 runs to T; inputs whose confidence is below ``threshold`` escalate."""
    escalate = confidence_score(logits, measure) < threshold
    return Routing.full_system1(len(logits), timesteps, last_exit, escalate, confidence_policy_macs(logits.shape[-1]))


@register_policy
class ConfidencePolicy(Policy):
    """``confidence@θ``: System 1 runs all T steps; an answer less confident than θ escalates."""

    kind = "confidence"
    rank = 10
    knob_order = ("threshold", True)

    def __init__(self, threshold: float, measure: ConfidenceMeasure = "max_softmax") -> None:
        self.threshold, self.measure = float(threshold), measure

    @property
    def name(self) -> str:
        return f"confidence@{self.threshold:.10g}"

    @property
    def knob(self) -> dict:
        return {"threshold": self.threshold, "measure": self.measure}

    @classmethod
    def fit(cls, context: FitContext) -> list[Policy]:
        c = context.config.confidence
        return [cls(threshold, c.measure) for threshold in c.thresholds]

    @classmethod
    def from_config(cls, config: dict, state: dict[str, torch.Tensor] | None = None) -> Policy:
        return cls(float(config["threshold"]), config.get("measure", "max_softmax"))

    def decide(self, outputs: SystemOutputs) -> Decision:
        return at_last_step(
            outputs,
            lambda: confidence_routing(
                outputs.s1_final_logits(), self.threshold, outputs.timesteps, outputs.last_exit, self.measure
            ),
        )
