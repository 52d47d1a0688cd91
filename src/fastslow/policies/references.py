"""Reference strategies: System 1 alone, System 2 alone, and those that read the labels (the
oracle, the AET oracle, random escalation at a matched rate), which bound what a policy can do
and are not deployable."""

from __future__ import annotations

import torch

from fastslow.policies.base import Decision, FitContext, Policy, Routing, SystemOutputs, at_last_step, first_true, register_policy


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


def aet_oracle_routing(logits: torch.Tensor, labels: torch.Tensor) -> Routing:
    """The oracle's average exit time (AET): each input stops at the first t where System 1 is right."""
    right = logits[:, -1].argmax(-1) == labels[None]
    first, _ = first_true(right)
    steps = first + 1
    return Routing(
        escalate=torch.zeros_like(steps, dtype=torch.bool),
        timesteps=steps,
        exit_taken=torch.full_like(steps, logits.shape[1] - 1),
        policy_macs=torch.zeros(len(steps)),
    )


class _Reference(Policy):
    """A reference with no knob: one point, named by its kind."""

    @property
    def name(self) -> str:
        return self.kind

    @classmethod
    def fit(cls, context: FitContext) -> list[Policy]:
        return [cls()]

    @classmethod
    def from_config(cls, config: dict, state: dict[str, torch.Tensor] | None = None) -> Policy:
        return cls()

    def labels(self, outputs: SystemOutputs) -> torch.Tensor:
        """The labels a reference reads; an error where there are none (it is not deployable)."""
        if outputs.labels is None:
            raise ValueError(f"{self.name} reads the labels: it is a reference, not a deployable policy")
        return outputs.labels


@register_policy
class System1Alone(_Reference):
    """System 1 runs all T steps and its last exit answers every input."""

    kind = "system1"
    reference = True
    rank = 0

    def decide(self, outputs: SystemOutputs) -> Decision:
        return at_last_step(outputs, lambda: Routing.full_system1(len(outputs), outputs.timesteps, outputs.last_exit))


@register_policy
class System2Alone(_Reference):
    """System 2 answers every input; System 1 never runs."""

    kind = "system2"
    reference = True
    rank = 1
    decides_before_system1 = True

    def decide(self, outputs: SystemOutputs) -> Decision:
        return Decision.final(Routing.system2_only(len(outputs)))


@register_policy
class Oracle(_Reference):
    """Escalates exactly the inputs System 1 gets wrong after T steps (reads the labels)."""

    kind = "oracle"
    reference = True
    rank = 2
    deployable = False

    def decide(self, outputs: SystemOutputs) -> Decision:
        def routing() -> Routing:
            correct = outputs.s1_final_logits().argmax(1) == self.labels(outputs)
            return oracle_routing(correct, outputs.timesteps, outputs.last_exit)

        return at_last_step(outputs, routing)


@register_policy
class AETOracle(_Reference):
    """Each input stops at the first step where System 1 is right (reads the labels)."""

    kind = "aet_oracle"
    reference = True
    rank = 3
    deployable = False

    def decide(self, outputs: SystemOutputs) -> Decision:
        return at_last_step(outputs, lambda: aet_oracle_routing(outputs.s1.logits, self.labels(outputs)))


@register_policy
class RandomEscalation(Policy):
    """Escalates a seeded uniform draw of round(rate·N) inputs after System 1 ran in full: the floor a
    policy must beat at the same escalation rate. Evaluation makes its points at the rates the
    other policies reached; its draw depends on the batch, so it is not deployable."""

    kind = "random"
    rank = 4
    deployable = False

    def __init__(self, rate: float, seed: int = 0) -> None:
        self.rate, self.seed = rate, seed

    @property
    def name(self) -> str:
        return f"random@rate={self.rate:.3f}"

    @property
    def knob(self) -> dict:
        return {"rate": self.rate}

    def to_config(self) -> dict:
        return {"rate": self.rate, "seed": self.seed}

    @classmethod
    def from_config(cls, config: dict, state: dict[str, torch.Tensor] | None = None) -> Policy:
        return cls(float(config["rate"]), int(config.get("seed", 0)))

    def decide(self, outputs: SystemOutputs) -> Decision:
        return at_last_step(
            outputs, lambda: random_routing(len(outputs), self.rate, outputs.timesteps, outputs.last_exit, self.seed)
        )
