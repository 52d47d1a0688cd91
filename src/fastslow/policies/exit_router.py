"""The learned router over the whole exit space: every (System 1 exit e, timestep t), or System 2.

It reads System 1's state after its first timestep at the shallowest exit (cumulative logits,
confidence statistics, the first layer's firing rate) and commits to one action. Trained with the
foundation router's loss extended to all actions (π_ia the probability of action a for input i):

    L = 1/N Σ_i Σ_a π_ia · (ℓ_ia + λ · E_ia / Ē)  +  β · KL( π̄ ‖ target )

ℓ_ia is the cross-entropy of the answer action a gives (exit e's cumulative logits at t, or
System 2's), E_ia its energy (µJ, what actually runs), Ē System 1's mean full-run energy, π̄ the
mean routing distribution. The target is either a full distribution over actions or, by default,
only the share ρ of System 2 (then π̄ is collapsed to Bern(share of System 2)). At inference the
arg-max action is taken after biases set on the router split so that held-out routing lands on
what was asked: a bias on the System 2 logit for a share ρ (exact on the router split) or for an
energy budget (bisection on the mean µJ per input), one bias per action for a distribution
(iterative proportional fitting of the arg-max frequencies).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fastslow.policies.base import (
    Decision,
    FeatureMLP,
    FitContext,
    Policy,
    Routing,
    SystemOutputs,
    WholeSpaceRouter,
    distribution_kl,
    fit_biases_to_frequencies,
    largest_feasible,
    load_state,
    register_policy,
    resolve_target,
    share_kl,
)
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

    def __init__(
        self,
        n_features: int,
        n_exits: int,
        timesteps: int,
        hidden: int = 32,
        target_share: float = 0.2,
        energy_budget_uj: float | None = None,
        target_distribution: list[float] | None = None,
    ) -> None:
        super().__init__(n_features, hidden, n_exits * timesteps + 1)
        self.n_exits, self.timesteps, self.target_share = n_exits, timesteps, target_share
        self.energy_budget_uj, self.target_distribution = energy_budget_uj, target_distribution
        self.register_buffer("s2_bias", torch.zeros(()))
        self.register_buffer("action_bias", torch.zeros(n_exits * timesteps + 1))
        # For an energy budget: each action's logit is lowered by price × its mean energy
        # (in units of a full System 1 run), a Lagrange multiplier set on the router split.
        self.register_buffer("energy_price", torch.zeros(()))
        self.register_buffer("action_cost", torch.zeros(n_exits * timesteps + 1))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints written before these buffers existed route as with zeros in them.
        for name in ("action_bias", "energy_price", "action_cost"):
            state_dict.setdefault(prefix + name, torch.zeros_like(getattr(self, name)))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.logits(features)

    def _biased(self, logits: torch.Tensor, energy_price: torch.Tensor | None = None) -> torch.Tensor:
        """``logits`` after the biases; ``energy_price`` replaces the stored one (while setting it)."""
        price = self.energy_price if energy_price is None else energy_price
        biased = logits + self.action_bias - price * self.action_cost
        biased[:, -1] += self.s2_bias
        return biased

    def actions(self, features: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self._biased(self(features)).argmax(1)

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


def train_exit_router(
    features: torch.Tensor,
    action_losses: torch.Tensor,
    action_energy: torch.Tensor,
    n_exits: int,
    timesteps: int,
    target_share: float,
    *,
    target_distribution: torch.Tensor | None = None,
    energy_budget_uj: float | None = None,
    energy_weight: float = 0.5,
    kl_weight: float = 10.0,
    hidden: int = 32,
    epochs: int = 400,
    lr: float = 1e-2,
    seed: int = 0,
) -> ExitRouter:
    """Train on one split; ``action_losses``/``action_energy`` [N, A] per input and action (A = E·T + 1,
    µJ). Routing lands on ``target_distribution`` (over :func:`action_table`) when given, else on
    ``energy_budget_uj`` (mean µJ per input) when given, else on ``target_share`` of System 2."""
    actions = n_exits * timesteps + 1
    target_distribution, target_share = resolve_target(
        target_share,
        target_distribution,
        energy_budget_uj,
        actions,
        "one per action of action_table",
        float(action_energy[:, :-1].min(1).values.mean()),
        float(action_energy[:, -1].mean()),
    )
    torch.manual_seed(seed)
    features = features.float()
    router = ExitRouter(
        features.shape[1],
        n_exits,
        timesteps,
        hidden,
        target_share,
        energy_budget_uj,
        None if target_distribution is None else [float(v) for v in target_distribution],
    )
    router.fit_standardisation(features)
    full_run = action_energy[:, n_exits * timesteps - 1].mean().clamp_min(1e-12)
    cost = action_losses + energy_weight * action_energy / full_run
    optimizer = torch.optim.Adam(router.parameters(), lr=lr, weight_decay=1e-4)
    for _ in range(epochs):
        probs = F.softmax(router(features), dim=1)
        mean_dist = probs.mean(0)
        kl = (
            distribution_kl(mean_dist, target_distribution)
            if target_distribution is not None
            else share_kl(mean_dist[-1], target_share)
        )
        loss = (probs * cost).sum(1).mean() + kl_weight * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    router.eval()
    if target_distribution is not None:
        router.action_bias.copy_(_calibrate_action_biases(router, features, target_distribution))
    elif energy_budget_uj is not None:
        router.action_cost.copy_(action_energy.mean(0) / full_run)
        router.energy_price.copy_(_calibrate_budget(router, features, action_energy, energy_budget_uj))
    else:
        router.s2_bias.copy_(_calibrate_s2_bias(router, features, target_share))
    return router


def _calibrate_action_biases(router: ExitRouter, features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-action biases that make the arg-max frequencies on ``features`` match ``target``."""
    with torch.no_grad():
        logits = router(features)
    return fit_biases_to_frequencies(
        lambda bias: torch.bincount((logits + bias).argmax(1), minlength=len(target)).float() / len(features), target
    )


def _calibrate_budget(router: ExitRouter, features: torch.Tensor, action_energy: torch.Tensor, budget_uj: float) -> torch.Tensor:
    """The lowest energy price whose routing spends at most ``budget_uj`` per input on ``features``
    (bisection: a higher price moves every input to cheaper actions; a negative one buys System 2)."""
    with torch.no_grad():
        logits = router(features)
        rows = torch.arange(len(features))
        spent = lambda price: float(action_energy[rows, router._biased(logits, torch.tensor(price)).argmax(1)].mean())  # noqa: E731
        return torch.tensor(-largest_feasible(lambda x: spent(-x) <= budget_uj))  # x = −price: spending grows with x


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


def action_losses(outputs: SystemOutputs) -> torch.Tensor:
    """[N, E·T + 1] cross-entropy of every (exit, t) answer, then System 2's (see :func:`action_table`)."""
    steps, exits, n, classes = outputs.s1.logits.shape
    per_exit_step = F.cross_entropy(
        outputs.s1.logits.permute(1, 0, 2, 3).reshape(-1, classes).float(), outputs.labels.repeat(exits * steps), reduction="none"
    ).reshape(exits * steps, n)
    s2 = F.cross_entropy(outputs.s2_logits.float(), outputs.labels, reduction="none")
    return torch.cat([per_exit_step, s2[None]]).T


def action_energies(outputs: SystemOutputs, profile, policy_macs: float, s2_after_first_step: bool) -> torch.Tensor:
    """[N, E·T + 1] µJ of every (exit, t) action (cascade-charged), then System 2's: after System 1's
    first step at exit 0 when ``s2_after_first_step``, else System 2 alone."""
    n = len(outputs)
    columns = []
    for action in action_table(outputs.s1.logits.shape[1], outputs.timesteps):
        if action is None:
            steps = 1 if s2_after_first_step else 0
            routing = Routing(
                torch.ones(n, dtype=torch.bool),
                torch.full((n,), steps),
                torch.zeros(n, dtype=torch.long),
                torch.full((n,), float(policy_macs)),
                cascade=True,
            )
        else:
            exit_index, steps = action
            routing = Routing(
                torch.zeros(n, dtype=torch.bool),
                torch.full((n,), steps),
                torch.full((n,), exit_index),
                torch.full((n,), float(policy_macs)),
                cascade=True,
            )
        columns.append(outputs.energy_uj(routing, profile))
    return torch.stack(columns, dim=1)


@register_policy
class ExitRouterPolicy(WholeSpaceRouter):
    """``router@exits,…``: after System 1's first step, a learned :class:`ExitRouter` commits each
    input to one (exit, t) or to System 2."""

    kind = "router_exits"
    rank = 70
    space = "exits"

    def to_config(self) -> dict:
        return {**super().to_config(), "n_exits": self.module.n_exits}

    @classmethod
    def from_config(cls, config: dict, state: dict[str, torch.Tensor] | None = None) -> Policy:
        module = ExitRouter(
            int(config["n_features"]),
            int(config["n_exits"]),
            int(config["timesteps"]),
            int(config["hidden"]),
            float(config["target_share"]),
            config.get("energy_budget_uj"),
            config.get("target_distribution"),
        )
        return cls(load_state(module, state), int(config.get("index", 0)))

    @classmethod
    def fit(cls, context: FitContext) -> list[Policy]:
        rc, val = context.config.router, context.val
        features = exit_router_features(val.s1.logits, val.s1.spike_rates)
        n_exits = val.s1.logits.shape[1]
        macs = FeatureMLP.macs_for(features.shape[1], rc.hidden, n_exits * val.timesteps + 1)
        energy = action_energies(val, context.profile, macs, s2_after_first_step=True)
        losses = action_losses(val)
        targets = [(share, None) for share in rc.exit_shares] + [(0.0, budget) for budget in rc.exit_energy_budgets_uj]
        return [
            cls(
                train_exit_router(
                    features,
                    losses,
                    energy,
                    n_exits,
                    val.timesteps,
                    share,
                    energy_budget_uj=budget,
                    energy_weight=rc.exit_energy_weight,
                    kl_weight=rc.kl_weight,
                    hidden=rc.hidden,
                    epochs=rc.exit_epochs,
                    lr=rc.lr,
                    seed=context.seed,
                )
            )
            for share, budget in targets
        ]

    def decide(self, outputs: SystemOutputs) -> Decision:
        if outputs.steps_run == 0:
            return Decision.undecided(len(outputs), outputs.policy_inputs.device)
        routing = self.module.route(exit_router_features(outputs.s1.logits, outputs.s1.spike_rates))
        return Decision(routing.escalate | (routing.timesteps <= outputs.steps_run), routing)
