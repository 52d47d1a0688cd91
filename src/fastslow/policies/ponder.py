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

from fastslow.policies.base import FeatureMLP


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
