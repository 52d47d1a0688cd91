"""The policy interface: what every policy reads (:class:`SystemOutputs`), decides
(:class:`Decision`, :class:`Routing`) and how a family joins the one registry (:data:`POLICIES`).

A family is one class, subclassing :class:`Policy` and decorated with :func:`register_policy`.
Fitting, evaluation, checkpoints, calibration and serving iterate :data:`POLICIES`; none of them
names a family.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from fastslow.energy.accounting import charge
from fastslow.energy.profile import EnergyProfile
from fastslow.systems.records import S1Record


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
    def full_system1(
        n: int, timesteps: int, last_exit: int, escalate: torch.Tensor | None = None, policy_macs: float = 0.0
    ) -> "Routing":
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


@dataclass
class Decision:
    """A policy's answer over a prefix of System 1's steps, per input [N].

    ``decided``: the input's routing is final (it stops, or escalates, at or before the last step
    recorded); the other inputs run on. ``routing``: for the decided rows, where each stops (its
    ``timesteps`` at most the steps recorded), which exit answers, whether it escalates, the policy's
    MACs. Rows not decided hold anything.
    """

    decided: torch.Tensor
    routing: Routing

    @staticmethod
    def final(routing: Routing) -> "Decision":
        """Every input decided as ``routing`` says."""
        return Decision(torch.ones_like(routing.escalate, dtype=torch.bool), routing)

    @staticmethod
    def undecided(n: int, device: torch.device | str = "cpu") -> "Decision":
        """Nobody decided yet: every input runs on."""
        zeros = torch.zeros(n, dtype=torch.long, device=device)
        return Decision(
            torch.zeros(n, dtype=torch.bool, device=device), Routing(zeros.bool(), zeros, zeros, torch.zeros(n, device=device))
        )


@dataclass
class SystemOutputs:
    """What a policy may read about N inputs: System 1's record of the steps run so far (all T in
    evaluation and fitting; a prefix while serving), what an input-reading policy sees, and, on
    recorded splits only, System 2's outputs and the labels (references and training read them)."""

    s1: S1Record
    timesteps: int  # System 1's T (the record may hold fewer steps)
    policy_inputs: torch.Tensor  # [N, F] (see fastslow.policies.seenn2.policy_input)
    s2_macs: int = 0
    s2_logits: torch.Tensor | None = None  # [N, C]
    labels: torch.Tensor | None = None  # [N]
    link_bytes: tuple[int, int] = (0, 0)  # (sent, received) per escalation (fastslow.energy.escalation_bytes)

    def __len__(self) -> int:
        return len(self.policy_inputs)

    @property
    def steps_run(self) -> int:
        """Steps in the record: T once System 1 ran in full."""
        return self.s1.steps

    @property
    def last_exit(self) -> int:
        return len(self.s1.exit_layers) - 1 if self.s1.exit_layers else self.s1.last_exit

    def subset(self, index: torch.Tensor) -> "SystemOutputs":
        """The outputs of the inputs at ``index`` only."""
        pick = lambda t: None if t is None else t[index]  # noqa: E731
        return SystemOutputs(
            self.s1.rows(index),
            self.timesteps,
            self.policy_inputs[index],
            self.s2_macs,
            pick(self.s2_logits),
            pick(self.labels),
            self.link_bytes,
        )

    @staticmethod
    def concatenate(parts: "list[SystemOutputs]") -> "SystemOutputs":
        """Recorded outputs of several splits as one, in order (System 2's MACs and the link from the first)."""
        first = parts[0]
        return SystemOutputs(
            s1=S1Record.concatenate([p.s1 for p in parts]),
            timesteps=first.timesteps,
            policy_inputs=torch.cat([p.policy_inputs for p in parts]),
            s2_macs=first.s2_macs,
            s2_logits=torch.cat([p.s2_logits for p in parts]),
            labels=torch.cat([p.labels for p in parts]),
            link_bytes=first.link_bytes,
        )

    def s1_final_logits(self) -> torch.Tensor:
        return self.s1.logits[-1, -1]

    def _recorded(self, what: str) -> None:
        if self.labels is None or self.s2_logits is None or self.steps_run != self.timesteps:
            raise ValueError(f"{what} needs a recorded split (labels, System 2's outputs, all T steps)")

    def s1_correct_by_step(self) -> torch.Tensor:
        """[T, N] whether the final exit's answer after t steps is right."""
        self._recorded("System 1's correctness")
        return self.s1.logits[:, -1].argmax(-1) == self.labels[None]

    def s2_correct(self) -> torch.Tensor:
        self._recorded("System 2's correctness")
        return self.s2_logits.argmax(-1) == self.labels

    def step_losses(self) -> torch.Tensor:
        """[T, N] cross-entropy of the final exit's answer after t steps."""
        self._recorded("a step loss")
        final = self.s1.logits[:, -1]
        steps, n, classes = final.shape
        return F.cross_entropy(final.reshape(-1, classes).float(), self.labels.repeat(steps), reduction="none").reshape(steps, n)

    def energy_uj(self, routing: Routing, profile: EnergyProfile) -> torch.Tensor:
        """µJ spent on each input [N] by ``routing``: everything that ran (:func:`fastslow.energy.charge`)."""
        return charge(self.s1, routing, self.s2_macs, profile, link_bytes=self.link_bytes).total_uj

    def step_outcome_energies(self, profile: EnergyProfile, policy_macs_per_step: float) -> tuple[torch.Tensor, torch.Tensor]:
        """µJ [T, N] of stopping after t steps at the last exit, and of escalating after t steps
        (System 1 for t steps, a policy of ``policy_macs_per_step`` MACs read at each, then System 2)."""
        n, last = len(self), self.last_exit
        to_s2 = torch.ones(n, dtype=torch.bool)
        stop, escalate = [], []
        for t in range(1, self.timesteps + 1):
            stop.append(self.energy_uj(Routing.full_system1(n, t, last, policy_macs=t * policy_macs_per_step), profile))
            escalate.append(self.energy_uj(Routing.full_system1(n, t, last, to_s2, t * policy_macs_per_step), profile))
        return torch.stack(stop), torch.stack(escalate)


@dataclass
class FitContext:
    """What a learned family trains on: recorded outputs of both systems (frozen) on inputs they did
    not train on — the router split's, or every training input's out of fold (``[router] data``)."""

    config: Any  # fastslow.config.FitConfig: each family reads its own section
    val: SystemOutputs
    profile: EnergyProfile
    input_shape: tuple[int, ...]
    seed: int


class Policy:
    """One point of a policy family: it decides, per input, when System 1 stops and what escalates.

    A family implements :meth:`decide` (online and offline alike: over the steps recorded so far,
    which inputs are decided and how), :meth:`fit` (the points a fit makes of it: a threshold sweep,
    or trained networks), :meth:`to_config` / :meth:`from_config` (with ``module``'s weights, the
    checkpoint), and says its ``name``, ``family`` and ``knob``. Register it with
    :func:`register_policy`.

    Class attributes: ``kind`` the registry key (also in checkpoints); ``rank`` the family's place
    in results (default 100: after the built-in families); ``knob_order`` (knob key,
    whether a larger value is safer: more System 2 or more steps) for calibration's fixed-sequence
    test, or None; ``deployable`` False for references that read labels; ``decides_before_system1``
    True where :meth:`decide` may decide from the input alone, before any step (t = 0).
    """

    kind: ClassVar[str] = ""
    rank: ClassVar[int] = 100  # where the family's points come in results: references first, then by rank
    knob_order: ClassVar[tuple[str, bool] | None] = None
    deployable: ClassVar[bool] = True
    reference: ClassVar[bool] = False  # a reference point (system1, system2, the oracles), not a policy family
    decides_before_system1: ClassVar[bool] = False
    module: nn.Module | None = None  # trained weights, if any (checkpointed as safetensors)

    @property
    def name(self) -> str:
        """The strategy's name in results.json, e.g. ``seenn1@0.9+s2``."""
        raise NotImplementedError

    @property
    def family(self) -> str:
        """The family the strategy belongs to in results (its sweep is one curve)."""
        return self.kind

    @property
    def knob(self) -> dict:
        """The knob values that make this point of the family."""
        return {}

    def decide(self, outputs: SystemOutputs) -> Decision:
        """Which inputs are decided after the ``outputs.steps_run`` steps recorded (0 before System 1
        runs, where :attr:`decides_before_system1`), and each decided input's routing."""
        raise NotImplementedError

    def route(self, outputs: SystemOutputs) -> Routing:
        """The routing of every input over a full record (all T steps)."""
        decision = self.decide(outputs)
        if not bool(decision.decided.all()):
            raise RuntimeError(f"policy {self.name} left inputs undecided after all {outputs.timesteps} steps")
        return decision.routing

    @classmethod
    def fit(cls, context: FitContext) -> list["Policy"]:
        """The points of this family a fit makes (sweeping its knob, training where it learns)."""
        return []

    def to_config(self) -> dict:
        """JSON-able settings that, with ``module``'s weights, rebuild this point (:meth:`from_config`)."""
        return dict(self.knob)

    @classmethod
    def from_config(cls, config: dict, state: dict[str, torch.Tensor] | None = None) -> "Policy":
        raise NotImplementedError

    def to(self, device: torch.device | str) -> "Policy":
        if self.module is not None:
            self.module.to(device)
        return self

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


# kind → family class, in registration order (the order of results.json's strategies).
POLICIES: dict[str, type[Policy]] = {}


def register_policy(cls: type[Policy]) -> type[Policy]:
    """Class decorator: add a :class:`Policy` family to :data:`POLICIES` under its ``kind``, kept in
    ``rank`` order (ties in registration order), whatever order the modules were imported in."""
    if not cls.kind:
        raise ValueError(f"{cls.__name__} needs a kind (its registry key)")
    if POLICIES.get(cls.kind, cls) is not cls:
        raise ValueError(f"policy kind {cls.kind!r} is already registered by {POLICIES[cls.kind].__name__}")
    POLICIES[cls.kind] = cls
    ordered = sorted(POLICIES.items(), key=lambda item: item[1].rank)
    POLICIES.clear()
    POLICIES.update(ordered)
    return cls


def load_state(module: nn.Module, state: dict[str, torch.Tensor] | None) -> nn.Module:
    """``module`` with ``state`` loaded (strict), in eval mode."""
    if state is None:
        raise ValueError("this policy has trained weights: its checkpoint's tensors are missing")
    module.load_state_dict(state)
    return module.eval()


def first_true(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of the first True along dim 0 of ``mask`` [T, N] (T − 1 where none) and whether any was True."""
    steps = mask.shape[0]
    order = torch.arange(steps, 0, -1, device=mask.device)[:, None]  # earlier steps weigh more
    first = torch.where(mask.any(0), (mask * order).argmax(0), torch.full_like(mask[0], steps - 1, dtype=torch.long))
    return first.long(), mask.any(0)


def at_last_step(outputs: SystemOutputs, routing: Callable[[], Routing]) -> Decision:
    """For policies that decide once System 1 has run all T steps: undecided before, ``routing()`` then."""
    if outputs.steps_run < outputs.timesteps:
        return Decision.undecided(len(outputs), outputs.policy_inputs.device)
    return Decision.final(routing())


def whole_space_router_label(space: str, index: int, router) -> tuple[str, str, dict]:
    """Strategy name, family and knob of a whole-exit-space router (``space``: "exits" for the
    one-shot router, "steps" for the sequential one), by the target it was calibrated to; ``index``
    numbers routers trained for a target distribution."""
    if router.target_distribution is not None:
        return f"router@{space},target#{index}", f"router_{space}_target", {"target_distribution": router.target_distribution}
    if router.energy_budget_uj is not None:
        budget = router.energy_budget_uj
        return f"router@{space},budget={budget:.10g}uJ", f"router_{space}_budget", {"energy_budget_uj": budget}
    share = router.target_share
    return f"router@{space},share={share:g}", f"router_{space}", {"target_share": share}


class WholeSpaceRouter(Policy):
    """A router trained for a share of System 2, an energy budget or a target distribution (its label
    and knob say which); ``index`` numbers those of a target distribution."""

    space = ""

    def __init__(self, module, index: int = 0) -> None:
        self.module, self.index = module.eval(), index

    @property
    def name(self) -> str:
        return whole_space_router_label(self.space, self.index, self.module)[0]

    @property
    def family(self) -> str:
        return whole_space_router_label(self.space, self.index, self.module)[1]

    @property
    def knob(self) -> dict:
        return whole_space_router_label(self.space, self.index, self.module)[2]

    @property
    def knob_order(self) -> tuple[str, bool] | None:
        key = next(iter(self.knob))
        return None if key == "target_distribution" else (key, True)

    def to_config(self) -> dict:
        m = self.module
        return {
            "target_share": m.target_share,
            "energy_budget_uj": m.energy_budget_uj,
            "target_distribution": m.target_distribution,
            "index": self.index,
            "n_features": m.net[0].in_features,
            "hidden": m.net[0].out_features,
            "timesteps": m.timesteps,
        }


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
    target_share: float,
    target_distribution,
    energy_budget_uj: float | None,
    outcomes: int,
    outcome_names: str,
    cheapest_uj: float,
    s2_uj: float,
) -> tuple[torch.Tensor | None, float]:
    """A learned router's target, checked: (the distribution over its ``outcomes`` or None, the share
    of System 2 it implies). An energy budget becomes the share of System 2 that spends it on top of
    the cheapest System 1 answer (``cheapest_uj``; ``s2_uj`` the mean µJ of escalating)."""
    if target_distribution is not None:
        target_distribution = torch.as_tensor(target_distribution, dtype=torch.float32)
        if (
            target_distribution.shape != (outcomes,)
            or (target_distribution < 0).any()
            or abs(float(target_distribution.sum()) - 1) > 1e-4
        ):
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
