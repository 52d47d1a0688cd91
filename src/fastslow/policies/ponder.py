"""PonderNet halting (Banino, Balaguer, Blundell 2021) over System 1's timesteps.

A halting head reads System 1's state after each step t and outputs λ_t, the probability of
halting at t given it has not halted before. The halting distribution is
p_t = λ_t ∏_{j<t} (1 − λ_j) with λ_T = 1, and the training loss is

    L = Σ_t p_t · L_t(y, ŷ_t)  +  β · KL(p ‖ p_G),   p_G(t) ∝ λ_p (1 − λ_p)^(t−1), t = 1..T

in the paper's direction KL(p ‖ p_G) (a well-known public implementation passes the arguments to
``nn.KLDivLoss`` so that it computes KL(p_G ‖ p) instead). The prior is truncated at T and
renormalised. At inference fastslow halts at the first t with λ_t > 0.5 (deterministic), or samples.
"""

from __future__ import annotations

from typing import Literal

import torch

from fastslow.policies.base import Decision, FeatureMLP, FitContext, Policy, SystemOutputs, load_state, register_policy
from fastslow.policies.step_router import halting_decision, step_router_features


def halting_distribution(lambdas: torch.Tensor) -> torch.Tensor:
    """p_t = λ_t ∏_{j<t}(1 − λ_j) with λ_T forced to 1, so Σ_t p_t = 1; ``lambdas`` [T, N] → [T, N]."""
    forced = torch.cat([lambdas[:-1], torch.ones_like(lambdas[-1:])])
    not_yet = torch.cumprod(torch.cat([torch.ones_like(lambdas[:1]), 1.0 - lambdas[:-1]]), dim=0)
    return forced * not_yet


def geometric_prior(lambda_p: float, steps: int) -> torch.Tensor:
    """Geometric prior p_G(t) = λ_p (1 − λ_p)^(t−1) over t = 1..T, renormalised to sum to 1 over T steps."""
    if not 0.0 < lambda_p <= 1.0:
        raise ValueError(f"lambda_p {lambda_p} is outside (0, 1]")
    if steps < 1:
        raise ValueError(f"steps {steps} must be at least 1")
    t = torch.arange(steps, dtype=torch.float32)
    prior = lambda_p * (1.0 - lambda_p) ** t
    return prior / prior.sum()


def kl_to_prior(p: torch.Tensor, lambda_p: float) -> torch.Tensor:
    """KL(p ‖ p_G) = Σ_t p_t (log p_t − log p_G(t)) per input [N] for halting distributions ``p`` [T, N].

    Both logs are clamped at 1e-12, so steps with p_t = 0 contribute 0 (not NaN) and a prior that
    underflows (λ_p near 1, large T) stays finite.
    """
    prior = geometric_prior(lambda_p, p.shape[0]).to(p)[:, None]
    return (p * (p.clamp_min(1e-12).log() - prior.clamp_min(1e-12).log())).sum(0)


def ponder_loss(lambdas: torch.Tensor, step_losses: torch.Tensor, lambda_p: float, kl_weight: float) -> torch.Tensor:
    """Mean over inputs of Σ_t p_t·L_t + β·KL(p ‖ p_G); ``lambdas``, ``step_losses`` [T, N]."""
    p = halting_distribution(lambdas)
    return ((p * step_losses).sum(0) + kl_weight * kl_to_prior(p, lambda_p)).mean()


def halting_step(
    lambdas: torch.Tensor,
    rule: Literal["threshold", "sample"] = "threshold",
    threshold: float = 0.5,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Step (1..T) at which each input halts [N], as a LongTensor.

    ``"threshold"``: the first t with λ_t > ``threshold``, else T. ``"sample"``: a Bernoulli(λ_t) draw at
    each step with ``generator``, halting at the first success (λ_T counts as 1), i.e. a sample of t ~ p.
    """
    if rule == "threshold":
        halt = lambdas > threshold
    elif rule == "sample":
        halt = torch.rand(lambdas.shape, generator=generator, device=lambdas.device) < lambdas
    else:
        raise ValueError(f"unknown halting rule {rule!r}: use 'threshold' or 'sample'")
    halt = torch.cat([halt[:-1], torch.ones_like(halt[-1:])])
    order = torch.arange(halt.shape[0], 0, -1, device=halt.device)[:, None]
    return (halt.long() * order).argmax(0) + 1


class HaltingHead(FeatureMLP):
    """MLP ``features`` [T, N, F] → λ [T, N] in (0, 1); features standardised with stored statistics.
    Its :meth:`macs` are per step evaluated."""

    def __init__(self, n_features: int, hidden: int = 32) -> None:
        super().__init__(n_features, hidden, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """λ in (0, 1), shape ``features.shape[:-1]`` ([T, N] for [T, N, F])."""
        return torch.sigmoid(self.logits(features).squeeze(-1))


def train_halting_head(
    features: torch.Tensor,
    step_losses: torch.Tensor,
    lambda_p: float,
    kl_weight: float = 0.01,
    epochs: int = 300,
    lr: float = 1e-2,
    seed: int = 0,
    hidden: int = 32,
) -> HaltingHead:
    """Fit a halting head on recorded per-step features [T, N, F] and losses [T, N] (System 1 frozen).

    Full-batch Adam on :func:`ponder_loss`; features are standardised with per-feature mean/std over
    all T·N rows, stored as buffers in the head.
    """
    torch.manual_seed(seed)
    features = features.float()
    head = HaltingHead(features.shape[-1], hidden)
    head.fit_standardisation(features)
    optimizer = torch.optim.Adam(head.parameters(), lr=lr)
    for _ in range(epochs):
        loss = ponder_loss(head(features), step_losses, lambda_p, kl_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return head.eval()


def halting_features(outputs: SystemOutputs) -> torch.Tensor:
    """[t, N, 5] a halting head's input at each step recorded: the step statistics of
    :func:`~fastslow.policies.step_router.step_state_features` (SEENN-I's max-softmax, margin and
    1 − H/log C of the last exit, t/T, and whether the answer equals the previous step's)."""
    classes = outputs.s1.logits.shape[-1]
    return step_router_features(outputs.s1.logits, outputs.s1.spike_rates, outputs.timesteps)[..., classes : classes + 5]


@register_policy
class Ponder(Policy):
    """``ponder@lambda_p=λ[+s2]``: PonderNet halting at the first step with λ_t > 0.5 (deterministic);
    with ``+s2``, inputs that reach T without choosing to halt escalate."""

    kind = "ponder"
    rank = 50
    knob_order = ("lambda_p", False)  # a larger prior λ_p halts earlier: less safe

    def __init__(self, module: HaltingHead, lambda_p: float, escalate: bool = False) -> None:
        self.module, self.lambda_p, self.escalate = module.eval(), float(lambda_p), bool(escalate)

    @property
    def name(self) -> str:
        return f"ponder@lambda_p={self.lambda_p:g}{'+s2' if self.escalate else ''}"

    @property
    def family(self) -> str:
        return "ponder+s2" if self.escalate else "ponder"

    @property
    def knob(self) -> dict:
        return {"lambda_p": self.lambda_p, "escalate": self.escalate, "halting": "first t with lambda_t > 0.5"}

    def to_config(self) -> dict:
        m = self.module
        return {
            "lambda_p": self.lambda_p,
            "escalate": self.escalate,
            "n_features": m.net[0].in_features,
            "hidden": m.net[0].out_features,
        }

    @classmethod
    def from_config(cls, config: dict, state: dict[str, torch.Tensor] | None = None) -> Policy:
        module = HaltingHead(int(config["n_features"]), int(config["hidden"]))
        return cls(load_state(module, state), float(config["lambda_p"]), bool(config.get("escalate", False)))

    @classmethod
    def fit(cls, context: FitContext) -> list[Policy]:
        pc, val = context.config.ponder, context.val
        features, losses = halting_features(val), val.step_losses()
        heads = [
            (
                lambda_p,
                train_halting_head(
                    features, losses, lambda_p, kl_weight=pc.kl_weight, epochs=pc.epochs, lr=pc.lr, seed=context.seed
                ),
            )
            for lambda_p in pc.lambda_ps
        ]
        return [cls(head, lambda_p, escalate) for escalate in (False, True) for lambda_p, head in heads]

    def decide(self, outputs: SystemOutputs) -> Decision:
        if outputs.steps_run == 0:
            return Decision.undecided(len(outputs), outputs.policy_inputs.device)
        with torch.no_grad():
            halts = self.module(halting_features(outputs)) > 0.5
        unsure = torch.full((len(outputs),), self.escalate, dtype=torch.bool)
        return halting_decision(halts, torch.zeros_like(halts), outputs.timesteps, self.module.macs(), outputs.last_exit, unsure)
