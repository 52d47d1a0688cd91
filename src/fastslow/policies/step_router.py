"""The sequential router: after every System 1 timestep it decides, per input, to stop (System 1's
last exit answers), to run another step, or to escalate to System 2.

Unlike :class:`~fastslow.policies.exit_router.ExitRouter`, which commits after the first step, it
sees each step's answer before deciding, so it can stop most inputs after one or two steps and still
escalate the few whose answer stays unsure. Its outcomes are (last exit, t) for t = 1..T, or System 2
after t steps. With q_t = softmax over (stop, continue, escalate) at step t (continue is unavailable
at T), the outcome probabilities are those of a halting process, as in PonderNet:

    P(stop at t) = q_t[stop] · Π_{j<t} q_j[continue],   P(escalate at t) = q_t[escalate] · Π_{j<t} q_j[continue]

and it is trained with the foundation router's loss over these outcomes,

    L = 1/N Σ_i Σ_o P_io · (ℓ_io + λ · E_io / Ē)  +  β · KL( Bern(s̄) ‖ Bern(ρ) )

ℓ_io the error of the outcome's answer (0/1: the expected error is then exactly the accuracy given
up, and it is smooth in the router's probabilities; the cross-entropy trained worse routers), E_io
its energy (µJ: System 1 for t steps, the router's MACs for t steps, System 2 if escalated), Ē
System 1's mean full-run energy and s̄ the mean probability of escalating. At inference each step takes the arg-max of the biased logits. The biases
[T, 3] are set on the router split so that held-out routing lands on what was asked: a share ρ of
System 2 (one bias on escalate, bisection), an energy budget (a price on the energy of continuing and
of escalating, bisection on mean µJ per input) or a distribution over the T + 1 outcomes (one bias
per outcome, proportional fitting).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fastslow.policies.base import (
    Decision,
    FeatureMLP,
    FitContext,
    Routing,
    SystemOutputs,
    WholeSpaceRouter,
    first_true,
    fit_biases_to_frequencies,
    largest_feasible,
    load_state,
    register_policy,
    resolve_target,
    share_kl,
)
from fastslow.policies.confidence import confidence_score

STOP, CONTINUE, ESCALATE = 0, 1, 2
INITIAL_BIAS = (0.0, 2.0, -2.0)


def step_state_features(
    mean_logits: torch.Tensor, previous_answer: torch.Tensor | None, t: int, timesteps: int, spike_rates: torch.Tensor
) -> torch.Tensor:
    """What the router reads after step ``t`` (1-based) [N, C + 5 + H], from the last exit only (so
    nothing but System 1's own run is read): the cumulative sum S_t of its outputs, SEENN-I's three
    confidences of S_t, t/T, whether the answer equals ``previous_answer`` [N] (None at t = 1) and
    each hidden layer's firing rate ``spike_rates`` [H, N]. ``mean_logits`` [N, C] is the cumulative mean."""
    summed = mean_logits.float() * t
    confidences = [confidence_score(summed, m) for m in ("max_softmax", "margin", "neg_entropy")]
    answer = summed.argmax(-1)
    same = torch.zeros_like(confidences[0]) if previous_answer is None else (answer == previous_answer).float()
    progress = torch.full_like(same, t / timesteps)
    return torch.cat([summed, torch.stack([*confidences, progress, same], dim=-1), spike_rates.float().T], dim=-1)


def step_router_features(logits: torch.Tensor, spike_rates: torch.Tensor, timesteps: int | None = None) -> torch.Tensor:
    """:func:`step_state_features` at every step recorded [t, N, F], from a run's ``logits``
    [t, E, N, C] (cumulative means) and ``spike_rates`` [H, t, N]; ``timesteps`` System 1's T
    (default: the steps recorded, a full run)."""
    final = logits[:, -1]
    steps = final.shape[0]
    timesteps = steps if timesteps is None else timesteps
    return torch.stack(
        [
            step_state_features(final[t], final[t - 1].argmax(-1) if t else None, t + 1, timesteps, spike_rates[:, t])
            for t in range(steps)
        ]
    )


def _log_choice(step_logits: torch.Tensor, reaches_end: bool = True) -> torch.Tensor:
    """log q_t over (stop, continue, escalate) [t, N, 3]; continuing past T is impossible (the last
    row is step T unless ``reaches_end`` is False: a prefix of the steps, while serving)."""
    masked = step_logits.clone()
    if reaches_end:
        masked[-1, :, CONTINUE] = float("-inf")
    return F.log_softmax(masked, dim=-1)


def outcome_probabilities(step_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """P(stop at t), P(escalate at t), each [T, N], from ``step_logits`` [T, N, 3]; together they sum to 1 per input."""
    log_q = _log_choice(step_logits)
    go_on = log_q[..., CONTINUE]
    reached = torch.cat([torch.zeros_like(go_on[:1]), torch.cumsum(go_on[:-1], dim=0)])  # log Π_{j<t} q_j[continue]
    return (log_q[..., STOP] + reached).exp(), (log_q[..., ESCALATE] + reached).exp()


def decide(step_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Arg-max decisions step by step: (escalate [N] bool, timesteps run [N] in 1..T)."""
    choice = _log_choice(step_logits).argmax(-1)  # [T, N]
    leaves = choice != CONTINUE
    order = torch.arange(leaves.shape[0], 0, -1, device=leaves.device)[:, None]
    first = (leaves.long() * order).argmax(0)  # earliest leaving step (T − 1 always leaves)
    escalate = choice.gather(0, first[None]).squeeze(0) == ESCALATE
    return escalate, first + 1


class StepRouter(FeatureMLP):
    """MLP over :func:`step_router_features` [T, N, F] → logits [T, N, 3] over (stop, continue, escalate).
    Its :meth:`macs` are per step evaluated."""

    def __init__(
        self,
        n_features: int,
        timesteps: int,
        hidden: int = 32,
        target_share: float = 0.05,
        energy_budget_uj: float | None = None,
        target_distribution: list[float] | None = None,
    ) -> None:
        super().__init__(n_features, hidden, 3)
        self.timesteps, self.target_share = timesteps, target_share
        self.energy_budget_uj, self.target_distribution = energy_budget_uj, target_distribution
        self.register_buffer("step_bias", torch.zeros(timesteps, 3))
        with torch.no_grad():  # start by running on, rarely escalating: training then moves stops earlier
            self.net[-1].bias.copy_(torch.tensor(INITIAL_BIAS))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Raw logits [T, N, 3]."""
        return self.logits(features)

    def choose(self, features: torch.Tensor, t: int) -> torch.Tensor:
        """The choice after step ``t`` (1-based) [N]: STOP, CONTINUE or ESCALATE, for ``features`` [N, F]
        of :func:`step_state_features` (what a server calls step by step)."""
        with torch.no_grad():
            biased = self(features) + self.step_bias[t - 1]
            if t == self.timesteps:
                biased[:, CONTINUE] = float("-inf")
            return biased.argmax(-1)

    def route(self, features: torch.Tensor, last_exit: int) -> Routing:
        """Each input stops or escalates at the first step whose biased arg-max is not 'continue'."""
        with torch.no_grad():
            escalate, steps = decide(self(features) + self.step_bias[:, None])
        return Routing(
            escalate=escalate,
            timesteps=steps,
            exit_taken=torch.full_like(steps, last_exit),
            policy_macs=steps.float() * self.macs(),
        )

    def outcome_frequencies(self, features: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """Share of inputs per outcome [T + 1]: stopping at t = 1..T, then System 2."""
        with torch.no_grad():
            escalate, steps = decide(self(features) + (self.step_bias if bias is None else bias)[:, None])
        outcome = torch.where(escalate, torch.full_like(steps, self.timesteps), steps - 1)
        return torch.bincount(outcome, minlength=self.timesteps + 1).float() / len(steps)


def train_step_router(
    features: torch.Tensor,
    stop_losses: torch.Tensor,
    s2_losses: torch.Tensor,
    stop_energy: torch.Tensor,
    escalate_energy: torch.Tensor,
    target_share: float,
    *,
    target_distribution: torch.Tensor | None = None,
    energy_budget_uj: float | None = None,
    energy_weight: float = 0.1,
    kl_weight: float = 0.0,
    hidden: int = 32,
    epochs: int = 400,
    lr: float = 1e-2,
    seed: int = 0,
) -> StepRouter:
    """Train on one split (System 1 and 2 frozen, their outputs recorded).

    ``features`` [T, N, F]; ``stop_losses`` [T, N] the loss of System 1's answer after t steps (the
    pipeline passes the 0/1 error); ``s2_losses`` [N] System 2's; ``stop_energy`` /
    ``escalate_energy`` [T, N] µJ of stopping / escalating after t steps, the router's MACs included. Routing lands on ``target_distribution`` (T + 1 shares:
    stop at t = 1..T, then System 2) when given, else on ``energy_budget_uj`` (mean µJ per input)
    when given, else on ``target_share`` of System 2.
    """
    steps = features.shape[0]
    target_distribution, target_share = resolve_target(
        target_share,
        target_distribution,
        energy_budget_uj,
        steps + 1,
        f"stop at t = 1..{steps}, then System 2",
        float(stop_energy[0].mean()),
        float(escalate_energy[0].mean()),
    )
    torch.manual_seed(seed)
    features = features.float()
    router = StepRouter(
        features.shape[-1],
        steps,
        hidden,
        target_share,
        energy_budget_uj,
        None if target_distribution is None else [float(v) for v in target_distribution],
    )
    router.fit_standardisation(features)
    full_run = stop_energy[-1].mean().clamp_min(1e-12)
    stop_cost = stop_losses + energy_weight * stop_energy / full_run
    escalate_cost = s2_losses[None] + energy_weight * escalate_energy / full_run
    optimizer = torch.optim.Adam(router.parameters(), lr=lr, weight_decay=1e-4)
    for _ in range(epochs):
        p_stop, p_escalate = outcome_probabilities(router(features))
        kl = share_kl(p_escalate.sum(0).mean(), target_share)
        loss = (p_stop * stop_cost + p_escalate * escalate_cost).sum(0).mean() + kl_weight * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    router.eval()
    if target_distribution is not None:
        router.step_bias.copy_(_bias_for_distribution(router, features, target_distribution))
    elif energy_budget_uj is not None:
        router.step_bias.copy_(_bias_for_budget(router, features, stop_energy, escalate_energy, energy_budget_uj))
    else:
        router.step_bias.copy_(_bias_for_share(router, features, target_share))
    return router


def _bias_for_share(router: StepRouter, features: torch.Tensor, share: float) -> torch.Tensor:
    """A bias on every step's escalate logit that sends at most ``share`` of ``features`` to System 2."""
    unit = torch.zeros(router.timesteps, 3)
    unit[:, ESCALATE] = 1.0
    return largest_feasible(lambda x: float(router.outcome_frequencies(features, x * unit)[-1]) <= share + 1e-9) * unit


def _bias_for_budget(
    router: StepRouter, features: torch.Tensor, stop_energy: torch.Tensor, escalate_energy: torch.Tensor, budget_uj: float
) -> torch.Tensor:
    """The lowest price on the energy of continuing (one more step) and of escalating (System 2) whose
    routing spends at most ``budget_uj`` per input on ``features`` (a negative price buys more)."""
    full_run = stop_energy[-1].mean().clamp_min(1e-12)
    step_cost = torch.cat([stop_energy[1:] - stop_energy[:-1], torch.zeros_like(stop_energy[:1])]).mean(1) / full_run
    cost = torch.zeros(router.timesteps, 3)
    cost[:, CONTINUE] = step_cost
    cost[:, ESCALATE] = (escalate_energy - stop_energy).mean(1) / full_run
    with torch.no_grad():
        logits = router(features)
    rows = torch.arange(features.shape[1])

    def spent(bias: torch.Tensor) -> float:
        escalate, steps = decide(logits + bias[:, None])
        return float(torch.where(escalate, escalate_energy[steps - 1, rows], stop_energy[steps - 1, rows]).mean())

    # x = −price: spending grows with x.
    return largest_feasible(lambda x: spent(x * cost) <= budget_uj) * cost


def _bias_for_distribution(router: StepRouter, features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-outcome biases (on stop at each t, on escalate at every t) whose arg-max frequencies on
    ``features`` match ``target`` [T + 1]."""
    steps = router.timesteps

    def as_bias(outcome_bias: torch.Tensor) -> torch.Tensor:
        bias = torch.zeros(steps, 3)
        bias[:, STOP] = outcome_bias[:steps]
        bias[:, ESCALATE] = outcome_bias[steps]
        return bias

    return as_bias(fit_biases_to_frequencies(lambda b: router.outcome_frequencies(features, as_bias(b)), target))


def step_router_fit_tables(outputs: SystemOutputs, profile, policy_macs_per_step: float) -> dict[str, torch.Tensor]:
    """What a halting policy trains on, from a recorded split: per-step features [T, N, F], System 1's
    0/1 error after t steps [T, N] and System 2's [N], and the µJ [T, N] of stopping or escalating after t."""
    features = step_router_features(outputs.s1.logits, outputs.s1.spike_rates)
    stop_energy, escalate_energy = outputs.step_outcome_energies(profile, policy_macs_per_step)
    return {
        "features": features,
        "step_errors": (~outputs.s1_correct_by_step()).float(),
        "s2_errors": (~outputs.s2_correct()).float(),
        "stop_energy": stop_energy,
        "escalate_energy": escalate_energy,
    }


def halting_decision(
    leaves: torch.Tensor,
    escalates: torch.Tensor,
    timesteps: int,
    policy_macs_per_step: float,
    last_exit: int,
    escalate_unsure_at_end: torch.Tensor | None = None,
) -> Decision:
    """A per-step halting policy's decision over the t ≤ T steps recorded: ``leaves`` [t, N] where it
    chose to stop or escalate, ``escalates`` [t, N] where that choice is System 2. An input leaves at
    its first such step; at T every input leaves (escalating where ``escalate_unsure_at_end`` [N])."""
    recorded, n = leaves.shape
    first, any_leaves = first_true(leaves)
    at_end = recorded >= timesteps
    escalate = escalates.gather(0, first[None]).squeeze(0) & any_leaves
    if at_end and escalate_unsure_at_end is not None:
        escalate = escalate | (~any_leaves & escalate_unsure_at_end)
    steps = torch.where(any_leaves, first + 1, torch.full_like(first, recorded))
    routing = Routing(
        escalate=escalate,
        timesteps=steps,
        exit_taken=torch.full_like(steps, last_exit),
        policy_macs=steps.float() * policy_macs_per_step,
    )
    return Decision(any_leaves | at_end, routing)


@register_policy
class StepRouterPolicy(WholeSpaceRouter):
    """``router@steps,…``: after every step a learned :class:`StepRouter` stops, continues or escalates each input."""

    kind = "router_steps"
    rank = 80
    space = "steps"

    @classmethod
    def from_config(cls, config: dict, state: dict[str, torch.Tensor] | None = None) -> "StepRouterPolicy":
        module = StepRouter(
            int(config["n_features"]),
            int(config["timesteps"]),
            int(config["hidden"]),
            float(config["target_share"]),
            config.get("energy_budget_uj"),
            config.get("target_distribution"),
        )
        return cls(load_state(module, state), int(config.get("index", 0)))

    @classmethod
    def fit(cls, context: FitContext) -> list["StepRouterPolicy"]:
        rc, val = context.config.router, context.val
        n_features = step_router_features(val.s1.logits[:1], val.s1.spike_rates[:, :1]).shape[-1]
        tables = step_router_fit_tables(val, context.profile, FeatureMLP.macs_for(n_features, rc.hidden, 3))
        targets = [(share, None) for share in rc.step_shares] + [(0.0, budget) for budget in rc.step_energy_budgets_uj]
        return [
            cls(
                train_step_router(
                    tables["features"],
                    tables["step_errors"],
                    tables["s2_errors"],
                    tables["stop_energy"],
                    tables["escalate_energy"],
                    share,
                    energy_budget_uj=budget,
                    energy_weight=rc.step_energy_weight,
                    kl_weight=rc.step_kl_weight,
                    hidden=rc.hidden,
                    epochs=rc.step_epochs,
                    lr=rc.lr,
                    seed=context.seed,
                )
            )
            for share, budget in targets
        ]

    def decide(self, outputs: SystemOutputs) -> Decision:
        recorded = outputs.steps_run
        if recorded == 0:
            return Decision.undecided(len(outputs), outputs.policy_inputs.device)
        router = self.module
        with torch.no_grad():
            biased = (
                router(step_router_features(outputs.s1.logits, outputs.s1.spike_rates, outputs.timesteps))
                + router.step_bias[:recorded, None]
            )
            choice = _log_choice(biased, reaches_end=recorded >= outputs.timesteps).argmax(-1)  # [t, N], as route's
        return halting_decision(choice != CONTINUE, choice == ESCALATE, outputs.timesteps, router.macs(), outputs.last_exit)
