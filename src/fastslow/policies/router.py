"""Learned router: a small network that reads System 1's state and decides whether to escalate.

Training loss (per batch of N inputs, p_i = σ(z_i) the probability of escalating input i):

    L = 1/N Σ_i [(1 − p_i)·ℓ1_i + p_i·ℓ2_i]            expected task loss of the chosen system
      + λ · 1/N Σ_i p_i · e2                              expected extra energy (e2 = E_S2 / E_S1+S2)
      + β · KL( Bern(p̄) ‖ Bern(ρ) ),   p̄ = 1/N Σ_i p_i    pull the share of System 2 towards ρ

ℓ1, ℓ2 are System 1's and System 2's cross-entropies on the input (both systems frozen),
ρ the requested share of System 2. The KL term is what keeps the router from collapsing
to "always System 1" or "always System 2"; the task term decides *which* inputs escalate.
After training, the decision threshold on z is set to the (1 − ρ)-quantile of z on the
router's own split, so the share lands on ρ on held-out data up to sampling noise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fastslow.energy.accounting import link_energy_uj, mac_energy_uj
from fastslow.policies.base import (
    Decision,
    FeatureMLP,
    FitContext,
    Policy,
    Routing,
    SystemOutputs,
    at_last_step,
    load_state,
    register_policy,
    share_kl,
)
from fastslow.policies.confidence import confidence_score


def router_features(logits: torch.Tensor, spike_rates: torch.Tensor) -> torch.Tensor:
    """Router inputs per example [N, C + 4 + H].

    ``logits`` [T, N, C]: System 1's cumulative logits at every step of its final exit;
    ``spike_rates`` [H, T, N]: per-layer firing rates. Features: the final cumulative logits,
    max-softmax, margin and normalised negative entropy at T, max-softmax at T/2 (how settled
    the answer is), and each hidden layer's mean firing rate.
    """
    final = logits[-1]
    midway = logits[(logits.shape[0] - 1) // 2]
    stats = torch.stack(
        [
            confidence_score(final, "max_softmax"),
            confidence_score(final, "margin"),
            confidence_score(final, "neg_entropy"),
            confidence_score(midway, "max_softmax"),
        ],
        dim=1,
    )
    return torch.cat([final.float(), stats, spike_rates.float().mean(1).T], dim=1)


def share_for_energy_budget(budget_uj: float, s1_energy_uj: float, s2_energy_uj: float, policy_energy_uj: float) -> float:
    """The share of System 2 whose mean energy per input meets ``budget_uj`` (clipped to [0, 1])."""
    if s2_energy_uj <= 0:
        return 0.0
    share = (budget_uj - s1_energy_uj - policy_energy_uj) / s2_energy_uj
    return float(min(1.0, max(0.0, share)))


class Router(FeatureMLP):
    """MLP over standardised :func:`router_features`; escalates when its logit exceeds ``threshold``."""

    def __init__(self, n_features: int, hidden: int = 32, target_share: float = 0.2) -> None:
        super().__init__(n_features, hidden, 1)
        self.register_buffer("threshold", torch.zeros(()))
        self.target_share = target_share

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Escalation logit z per input [N]."""
        return self.logits(features).squeeze(-1)

    def route(self, features: torch.Tensor, timesteps: int, last_exit: int) -> Routing:
        with torch.no_grad():
            escalate = self(features) > self.threshold
        return Routing.full_system1(len(features), timesteps, last_exit, escalate, self.macs())


def router_loss(
    logit: torch.Tensor,
    s1_loss: torch.Tensor,
    s2_loss: torch.Tensor,
    target_share: float,
    kl_weight: float,
    energy_weight: float = 0.0,
    s2_energy_fraction: float = 1.0,
) -> torch.Tensor:
    """The loss in this module's docstring, differentiable through p = σ(logit)."""
    p = torch.sigmoid(logit)
    task = ((1 - p) * s1_loss + p * s2_loss).mean()
    energy = p.mean() * s2_energy_fraction
    return task + energy_weight * energy + kl_weight * share_kl(p.mean(), target_share)


def train_router(
    features: torch.Tensor,
    s1_loss: torch.Tensor,
    s2_loss: torch.Tensor,
    target_share: float,
    *,
    hidden: int = 32,
    epochs: int = 300,
    lr: float = 1e-2,
    kl_weight: float = 10.0,
    energy_weight: float = 0.0,
    s2_energy_fraction: float = 1.0,
    seed: int = 0,
) -> Router:
    """Train a router on one split (full batch, Adam) and calibrate its threshold to ``target_share``."""
    if not 0.0 <= target_share <= 1.0:
        raise ValueError(f"target share {target_share} is outside [0, 1]")
    torch.manual_seed(seed)
    features = features.float()
    router = Router(features.shape[1], hidden, target_share)
    router.fit_standardisation(features)
    optimizer = torch.optim.Adam(router.parameters(), lr=lr, weight_decay=1e-4)
    for _ in range(epochs):
        loss = router_loss(router(features), s1_loss, s2_loss, target_share, kl_weight, energy_weight, s2_energy_fraction)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    router.eval()
    with torch.no_grad():
        logits = router(features)
        router.soft_share = float(torch.sigmoid(logits).mean())
        router.threshold.copy_(_quantile_threshold(logits, target_share))
    return router


def _quantile_threshold(logits: torch.Tensor, share: float) -> torch.Tensor:
    """A threshold such that a fraction ``share`` of ``logits`` lies strictly above it."""
    ordered = logits.sort(descending=True).values
    k = round(share * len(ordered))
    if k <= 0:
        return ordered[0] + 1.0
    if k >= len(ordered):
        return ordered[-1] - 1.0
    return (ordered[k - 1] + ordered[k]) / 2


def per_input_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), labels, reduction="none")


def router_shares(context: FitContext, policy_macs: int) -> list[float]:
    """The requested shares plus the shares that meet each requested energy budget on the router split."""
    rc, val, profile = context.config.router, context.val, context.profile
    shares = list(rc.shares)
    if rc.energy_budgets_uj:
        n = len(val)
        s1 = float(val.energy_uj(Routing.full_system1(n, val.timesteps, val.last_exit), profile).mean())
        # An escalation costs System 2's MACs and, where the profile prices it, the link.
        s2 = mac_energy_uj(val.s2_macs, profile) + link_energy_uj(val.link_bytes, profile)
        policy = mac_energy_uj(policy_macs, profile)
        shares += [round(share_for_energy_budget(b, s1, s2, policy), 4) for b in rc.energy_budgets_uj]
    return sorted(set(shares))


@register_policy
class RouterPolicy(Policy):
    """``router@share=ρ``: after System 1's T steps, a learned :class:`Router` escalates a share ρ."""

    kind = "router"
    rank = 60
    knob_order = ("target_share", True)

    def __init__(self, module: Router) -> None:
        self.module = module.eval()

    @property
    def name(self) -> str:
        return f"router@share={self.module.target_share:g}"

    @property
    def knob(self) -> dict:
        return {"target_share": self.module.target_share}

    def to_config(self) -> dict:
        m = self.module
        return {
            "target_share": m.target_share,
            "n_features": m.net[0].in_features,
            "hidden": m.net[0].out_features,
            "soft_share": getattr(m, "soft_share", None),
        }

    @classmethod
    def from_config(cls, config: dict, state: dict[str, torch.Tensor] | None = None) -> Policy:
        module = Router(int(config["n_features"]), int(config["hidden"]), float(config["target_share"]))
        module.soft_share = config.get("soft_share")
        return cls(load_state(module, state))

    @classmethod
    def fit(cls, context: FitContext) -> list[Policy]:
        rc, val = context.config.router, context.val
        features = router_features(val.s1.logits[:, -1], val.s1.spike_rates)
        s1_loss = per_input_cross_entropy(val.s1_final_logits(), val.labels)
        s2_loss = per_input_cross_entropy(val.s2_logits, val.labels)
        shares = router_shares(context, FeatureMLP.macs_for(features.shape[1], rc.hidden, 1))
        return [
            cls(
                train_router(
                    features,
                    s1_loss,
                    s2_loss,
                    share,
                    hidden=rc.hidden,
                    epochs=rc.epochs,
                    lr=rc.lr,
                    kl_weight=rc.kl_weight,
                    energy_weight=rc.energy_weight,
                    seed=context.seed,
                )
            )
            for share in shares
        ]

    def decide(self, outputs: SystemOutputs) -> Decision:
        return at_last_step(
            outputs,
            lambda: self.module.route(
                router_features(outputs.s1.logits[:, -1], outputs.s1.spike_rates), outputs.timesteps, outputs.last_exit
            ),
        )
