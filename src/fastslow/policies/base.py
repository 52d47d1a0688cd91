"""What every policy produces: a routing decision per input over the same exits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn


@dataclass
class Routing:
    """Per-input decision, tensors of length N.

    - ``escalate``: answered by System 2.
    - ``timesteps``: System 1 timesteps simulated (0 = System 1 skipped).
    - ``exit_taken``: which System 1 exit answers (or ran last before escalating).
    - ``policy_macs``: the policy's own MACs spent on the input.
    - ``cascade``: every exit head up to ``exit_taken`` was evaluated (and is charged),
      not only the one that answered.
    """

    escalate: torch.Tensor
    timesteps: torch.Tensor
    exit_taken: torch.Tensor
    policy_macs: torch.Tensor
    cascade: bool = False

    @staticmethod
    def full_system1(n: int, timesteps: int, last_exit: int, escalate: torch.Tensor | None = None, policy_macs: float = 0.0) -> "Routing":
        """System 1 runs all T steps to its last exit; ``escalate`` marks inputs sent on to System 2."""
        return Routing(
            escalate=torch.zeros(n, dtype=torch.bool) if escalate is None else escalate.bool(),
            timesteps=torch.full((n,), timesteps, dtype=torch.long),
            exit_taken=torch.full((n,), last_exit, dtype=torch.long),
            policy_macs=torch.full((n,), float(policy_macs)),
        )

    @staticmethod
    def system2_only(n: int) -> "Routing":
        return Routing(
            escalate=torch.ones(n, dtype=torch.bool),
            timesteps=torch.zeros(n, dtype=torch.long),
            exit_taken=torch.zeros(n, dtype=torch.long),
            policy_macs=torch.zeros(n),
        )


class FeatureMLP(nn.Module):
    """A learned policy's network: features standardised with statistics stored in the checkpoint,
    then one hidden ReLU layer. Subclasses give the outputs their meaning."""

    def __init__(self, n_features: int, hidden: int, outputs: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, outputs))
        self.register_buffer("feature_mean", torch.zeros(n_features))
        self.register_buffer("feature_std", torch.ones(n_features))

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """Raw outputs [..., outputs] for ``features`` [..., F]."""
        return self.net((features - self.feature_mean) / self.feature_std)

    def fit_standardisation(self, features: torch.Tensor) -> None:
        """Store the mean and std of ``features`` [..., F] over every leading dimension."""
        flat = features.reshape(-1, features.shape[-1])
        self.feature_mean.copy_(flat.mean(0))
        self.feature_std.copy_(flat.std(0).clamp_min(1e-6))

    def macs(self) -> int:
        """MACs per evaluation (Σ in × out over the linear layers)."""
        return sum(m.in_features * m.out_features for m in self.net if isinstance(m, nn.Linear))

    @staticmethod
    def macs_for(n_features: int, hidden: int, outputs: int) -> int:
        """What :meth:`macs` will be, before building the network."""
        return n_features * hidden + hidden * outputs


def fit_biases_to_frequencies(
    frequency: Callable[[torch.Tensor], torch.Tensor], target: torch.Tensor, rounds: int = 400
) -> torch.Tensor:
    """Biases b [K] whose arg-max outcome frequencies ``frequency(b)`` [K] match ``target`` [K]:
    log-space proportional fitting, a step kept only where it lowers the largest error and halved
    where it does not (arg-max mass moves in jumps)."""
    log_target = target.clamp_min(1e-6).log()
    best = torch.zeros(len(target))
    best_frequency = frequency(best)
    best_error, step = float((best_frequency - target).abs().max()), 0.5
    for _ in range(rounds):
        if best_error < 0.005 or step < 1e-4:
            break
        candidate = best + step * (log_target - best_frequency.clamp_min(1e-6).log())
        candidate_frequency = frequency(candidate)
        error = float((candidate_frequency - target).abs().max())
        if error < best_error:
            best, best_frequency, best_error, step = candidate, candidate_frequency, error, step * 1.5
        else:
            step /= 2
    return best


def share_kl(share: torch.Tensor, target_share: float) -> torch.Tensor:
    """KL( Bern(share) ‖ Bern(target_share) ): pulls a mean share of System 2 towards the target
    (both clamped to [1e-6, 1 − 1e-6], so 0 and 1 stay finite)."""
    share = share.clamp(1e-6, 1 - 1e-6)
    target_share = min(max(target_share, 1e-6), 1 - 1e-6)
    return distribution_kl(torch.stack([1 - share, share]), torch.tensor([1 - target_share, target_share]))


def distribution_kl(mean_dist: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """KL( mean_dist ‖ target ) over the last dimension; both clamped below at 1e-8 (zeros stay finite)."""
    mean_dist = mean_dist.clamp_min(1e-8)
    return (mean_dist * (mean_dist.log() - target.to(mean_dist).clamp_min(1e-8).log())).sum(-1)


def resolve_target(
    target_share: float, target_distribution, energy_budget_uj: float | None, outcomes: int, outcome_names: str,
    cheapest_uj: float, s2_uj: float,
) -> tuple[torch.Tensor | None, float]:
    """A learned router's target, checked: (the distribution over its ``outcomes`` or None, the share
    of System 2 it implies). An energy budget becomes the share of System 2 that spends it on top of
    the cheapest System 1 answer (``cheapest_uj``; ``s2_uj`` the mean µJ of escalating)."""
    if target_distribution is not None:
        target_distribution = torch.as_tensor(target_distribution, dtype=torch.float32)
        if target_distribution.shape != (outcomes,) or (target_distribution < 0).any() or abs(float(target_distribution.sum()) - 1) > 1e-4:
            raise ValueError(f"target distribution must be {outcomes} non-negative shares ({outcome_names}) summing to 1")
        target_share = float(target_distribution[-1])
    elif energy_budget_uj is not None:
        if not energy_budget_uj > 0:
            raise ValueError(f"energy budget {energy_budget_uj} µJ must be positive")
        target_share = min(1.0, max(0.0, (energy_budget_uj - cheapest_uj) / max(s2_uj - cheapest_uj, 1e-12)))
    if not 0.0 <= target_share <= 1.0:
        raise ValueError(f"target share {target_share} is outside [0, 1]")
    return target_distribution, target_share


def largest_feasible(feasible: Callable[[float], bool], low: float = -100.0, high: float = 100.0, rounds: int = 50) -> float:
    """Bisection for the largest x in [low, high] with ``feasible(x)``, for a ``feasible`` that holds
    below some point and fails above it; ``low`` where nothing is feasible, ``high`` where all is."""
    if not feasible(low):
        return low
    if feasible(high):
        return high
    for _ in range(rounds):
        middle = (low + high) / 2
        low, high = (middle, high) if feasible(middle) else (low, middle)
    return low
