"""Reference strategies: random escalation at a given rate, and the oracle."""

from __future__ import annotations

import torch

from fastslow.policies.base import Routing


def random_routing(n: int, rate: float, timesteps: int, last_exit: int, seed: int) -> Routing:
    """Escalate round(rate·n) inputs drawn uniformly (seeded), after System 1 ran in full."""
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(n, generator=generator)[: round(rate * n)]
    escalate = torch.zeros(n, dtype=torch.bool)
    escalate[chosen] = True
    return Routing.full_system1(n, timesteps, last_exit, escalate)


def oracle_routing(s1_correct: torch.Tensor, timesteps: int, last_exit: int) -> Routing:
    """Escalate exactly the inputs System 1 gets wrong (an upper bound, not a real policy)."""
    return Routing.full_system1(len(s1_correct), timesteps, last_exit, ~s1_correct.bool())
