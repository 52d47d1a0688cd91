"""PonderNet halting (Banino et al. 2021) — provisional implementation; see helper's version."""

from __future__ import annotations

import torch
from torch import nn


def halting_distribution(lambdas: torch.Tensor) -> torch.Tensor:
    lam = lambdas.clone()
    lam[-1] = 1.0
    survive = torch.cumprod(torch.cat([torch.ones_like(lam[:1]), 1 - lam[:-1]]), dim=0)
    return lam * survive


def geometric_prior(lambda_p: float, steps: int) -> torch.Tensor:
    t = torch.arange(steps, dtype=torch.float32)
    prior = lambda_p * (1 - lambda_p) ** t
    return prior / prior.sum()


def ponder_loss(lambdas, step_losses, lambda_p: float, kl_weight: float) -> torch.Tensor:
    p = halting_distribution(lambdas)
    prior = geometric_prior(lambda_p, lambdas.shape[0]).to(p)[:, None]
    task = (p * step_losses).sum(0).mean()
    kl = (p * (p.clamp_min(1e-10).log() - prior.log())).sum(0).mean()
    return task + kl_weight * kl


def halting_step(lambdas, rule: str = "threshold", threshold: float = 0.5, generator=None) -> torch.Tensor:
    steps = lambdas.shape[0]
    if rule == "threshold":
        halt = lambdas > threshold
    else:
        halt = torch.rand(lambdas.shape, generator=generator) < lambdas
    halt[-1] = True
    order = torch.arange(steps, 0, -1)[:, None]
    return (halt.long() * order).argmax(0) + 1


class HaltingHead(nn.Module):
    def __init__(self, n_features: int, hidden: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.register_buffer("feature_mean", torch.zeros(n_features))
        self.register_buffer("feature_std", torch.ones(n_features))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net((features - self.feature_mean) / self.feature_std).squeeze(-1))

    def macs(self) -> int:
        return sum(m.in_features * m.out_features for m in self.net if isinstance(m, nn.Linear))


def train_halting_head(features, step_losses, lambda_p, kl_weight=0.01, epochs=300, lr=1e-2, seed=0) -> HaltingHead:
    torch.manual_seed(seed)
    head = HaltingHead(features.shape[-1])
    flat = features.reshape(-1, features.shape[-1])
    head.feature_mean.copy_(flat.mean(0))
    head.feature_std.copy_(flat.std(0).clamp_min(1e-6))
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    for _ in range(epochs):
        loss = ponder_loss(head(features), step_losses, lambda_p, kl_weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return head.eval()
