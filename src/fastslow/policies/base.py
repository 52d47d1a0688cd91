"""What every policy produces: a routing decision per input over the same exits."""

from __future__ import annotations

from dataclasses import dataclass

import torch


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
