"""The learned router over the whole exit space: every (System 1 exit e, timestep t), or System 2.

It reads System 1's state after its first timestep at the shallowest exit (cumulative logits,
confidence statistics, the first layer's firing rate) and commits to one action. Trained with the
foundation router's loss extended to all actions (π_ia the probability of action a for input i):

    L = 1/N Σ_i Σ_a π_ia · (ℓ_ia + λ · E_ia / Ē)  +  β · KL( π̄ ‖ target )

ℓ_ia is the cross-entropy of the answer action a gives (exit e's cumulative logits at t, or
System 2's), E_ia its energy (µJ, what actually runs), Ē System 1's mean full-run energy, π̄ the
mean routing distribution. The target is either a full distribution over actions or, by default,
only the share ρ of System 2 (then π̄ is collapsed to Bern(share of System 2)). At inference the
arg-max action is taken after a bias on the System 2 logit, set on the router split so that the
share of System 2 is ρ.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fastslow.policies.base import FeatureMLP, Routing
from fastslow.policies.confidence import confidence_score


def exit_router_features(logits: torch.Tensor, spike_rates: torch.Tensor) -> torch.Tensor:
    """[N, C + 3 + 1] from ``logits`` [T, E, N, C] and ``spike_rates`` [H, T, N], at t = 1, exit 0."""
    first = logits[0, 0]
    stats = torch.stack([confidence_score(first, m) for m in ("max_softmax", "margin", "neg_entropy")], dim=1)
    return torch.cat([first.float(), stats, spike_rates[0, 0][:, None].float()], dim=1)


def action_table(n_exits: int, timesteps: int) -> list[tuple[int, int] | None]:
    """Actions in index order: (exit, t) for every exit and t = 1..T, then None for System 2."""
    return [(e, t) for e in range(n_exits) for t in range(1, timesteps + 1)] + [None]


class ExitRouter(FeatureMLP):
    """MLP over :func:`exit_router_features` → logits over :func:`action_table`."""

    def __init__(self, n_features: int, n_exits: int, timesteps: int, hidden: int = 32, target_share: float = 0.2) -> None:
        super().__init__(n_features, hidden, n_exits * timesteps + 1)
        self.n_exits, self.timesteps, self.target_share = n_exits, timesteps, target_share
        self.register_buffer("s2_bias", torch.zeros(()))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.logits(features)

    def actions(self, features: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            logits = self(features)
            logits[:, -1] += self.s2_bias
            return logits.argmax(1)

    def route(self, features: torch.Tensor) -> Routing:
        """System 1 runs to the chosen (exit, t); for System 2, its first step (the router's input) is paid too."""
        action = self.actions(features)
        to_s2 = action == self.n_exits * self.timesteps
        exit_taken = torch.where(to_s2, torch.zeros_like(action), action // self.timesteps)
        steps = torch.where(to_s2, torch.ones_like(action), action % self.timesteps + 1)
        return Routing(
            escalate=to_s2,
            timesteps=steps,
            exit_taken=exit_taken,
            policy_macs=torch.full((len(action),), float(self.macs())),
            cascade=True,  # head 0 was read at t = 1 whatever the exit
        )


def _kl(mean_dist: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    mean_dist = mean_dist.clamp_min(1e-8)
    return (mean_dist * (mean_dist.log() - target.clamp_min(1e-8).log())).sum()


def train_exit_router(
    features: torch.Tensor,
    action_losses: torch.Tensor,
    action_energy: torch.Tensor,
    n_exits: int,
    timesteps: int,
    target_share: float,
    *,
    target_distribution: torch.Tensor | None = None,
    energy_weight: float = 0.5,
    kl_weight: float = 10.0,
    hidden: int = 32,
    epochs: int = 400,
    lr: float = 1e-2,
    seed: int = 0,
) -> ExitRouter:
    """Train on one split; ``action_losses``/``action_energy`` [N, A] per input and action (A = E·T + 1)."""
    if not 0.0 <= target_share <= 1.0:
        raise ValueError(f"target share {target_share} is outside [0, 1]")
    torch.manual_seed(seed)
    features = features.float()
    router = ExitRouter(features.shape[1], n_exits, timesteps, hidden, target_share)
    router.fit_standardisation(features)
    full_run = action_energy[:, n_exits * timesteps - 1].mean().clamp_min(1e-12)
    cost = action_losses + energy_weight * action_energy / full_run
    optimizer = torch.optim.Adam(router.parameters(), lr=lr, weight_decay=1e-4)
    for _ in range(epochs):
        probs = F.softmax(router(features), dim=1)
        mean_dist = probs.mean(0)
        if target_distribution is not None:
            kl = _kl(mean_dist, target_distribution)
        else:
            share = mean_dist[-1:]
            kl = _kl(torch.cat([1 - share, share]), torch.tensor([1 - target_share, target_share]))
        loss = (probs * cost).sum(1).mean() + kl_weight * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    router.eval()
    router.s2_bias.copy_(_calibrate_s2_bias(router, features, target_share))
    return router


def _calibrate_s2_bias(router: ExitRouter, features: torch.Tensor, share: float) -> torch.Tensor:
    """Bias on the System 2 logit so that the arg-max sends a fraction ``share`` of inputs to System 2."""
    with torch.no_grad():
        logits = router(features)
        best_other = logits[:, :-1].max(1).values
        margin = logits[:, -1] - best_other  # System 2 wins where margin + bias > 0
        ordered = margin.sort(descending=True).values
        k = round(share * len(ordered))
        if k <= 0:
            return -(ordered[0] + 1.0)
        if k >= len(ordered):
            return -(ordered[-1] - 1.0)
        return -(ordered[k - 1] + ordered[k]) / 2
