"""SEENN-II (Li et al. 2023): a policy network reads the input before System 1 runs and picks the
number of timesteps t ∈ {1..T}, or (fastslow's extension) System 2 straight away.

SEENN's public code leaves its reward "to be updated"; fastslow implements REINFORCE with a
baseline and the reward

    r(a) = correct(a) − β · E(a) / E_S1(T)

where E(a) is the energy of action a on that input (System 1 for t steps; System 2 alone for the
System 2 action) and E_S1(T) System 1's mean full-run energy, so for System 1 actions the penalty
is ≈ β·t/T. The policy learns on part of the router split and keeps the epoch whose greedy reward
is best on the rest (``holdout``): trained to convergence on a few hundred inputs it memorises
which of them System 1 gets right early, which does not carry to new inputs. Pre-training on
oracle labels (the first t from which System 1 stays right) is available (``pretrain_epochs``)
but off by default, for the same reason: most labels say "one step", and a policy that reads only
the input learns to stop after one step nearly everywhere (docs/policies.md, "SEENN-II").
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F

from fastslow.policies.base import Decision, FeatureMLP, FitContext, Policy, Routing, SystemOutputs, load_state, register_policy

POLICY_INPUT_SIDE = 7  # images are average-pooled to at most 7×7 per channel before the policy reads them


def policy_input(x: torch.Tensor) -> torch.Tensor:
    """What the policy reads: images [N, C, H, W] average-pooled to ≤ 7×7 per channel (event frames
    [N, T, C, H, W] first averaged over T), flat inputs as they are."""
    if x.dim() == 5:
        x = x.mean(1)
    if x.dim() == 4:
        side = (min(x.shape[2], POLICY_INPUT_SIDE), min(x.shape[3], POLICY_INPUT_SIDE))
        return F.adaptive_avg_pool2d(x, side).flatten(1)
    return x.flatten(1)


def pooling_adds(input_shape: tuple[int, ...]) -> int:
    """Additions the pooling (and a frame average) costs per input (counted as MACs): one per input element."""
    return math.prod(input_shape) if len(input_shape) in (3, 4) else 0


class TimestepPolicy(FeatureMLP):
    """MLP over :func:`policy_input`: logits for actions 0..T-1 (run t = a+1 steps) and T (System 2)."""

    def __init__(self, n_features: int, timesteps: int, hidden: int = 32, input_shape: tuple[int, ...] = ()) -> None:
        super().__init__(n_features, hidden, timesteps + 1)
        self.timesteps = timesteps
        self.input_shape = tuple(input_shape)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.logits(features)

    def macs(self) -> int:
        return super().macs() + pooling_adds(self.input_shape)

    def route(self, features: torch.Tensor, last_exit: int) -> Routing:
        """Greedy action per input: System 1 for a+1 steps, or System 2 without running System 1."""
        with torch.no_grad():
            action = self(features).argmax(1)
        to_s2 = action == self.timesteps
        return Routing(
            escalate=to_s2,
            timesteps=torch.where(to_s2, torch.zeros_like(action), action + 1),
            exit_taken=torch.full_like(action, last_exit),
            policy_macs=torch.full((len(action),), float(self.macs())),
        )


def action_rewards(s1_correct: torch.Tensor, s2_correct: torch.Tensor, action_energy: torch.Tensor, beta: float) -> torch.Tensor:
    """Reward table [N, T+1]: correctness minus β × energy normalised by System 1's mean full-run energy.

    ``s1_correct`` [T, N] (System 1 right after t steps), ``s2_correct`` [N], ``action_energy`` [N, T+1] µJ.
    """
    correct = torch.cat([s1_correct.T.float(), s2_correct.float()[:, None]], dim=1)
    full_run = action_energy[:, -2].mean().clamp_min(1e-12)
    return correct - beta * action_energy / full_run


def oracle_actions(s1_correct: torch.Tensor, s2_correct: torch.Tensor) -> torch.Tensor:
    """First t (as action t-1) from which System 1 stays right up to T; else System 2 if it is right; else T-1.

    "Stays right" rather than "first right": an answer that is right at t by luck and wrong after is
    not something a policy reading only the input can learn to predict.
    """
    steps = s1_correct.shape[0]
    stays_right = s1_correct.flip(0).long().cumprod(0).flip(0).bool()  # right at t and every later step
    any_right = stays_right.any(0)
    order = torch.arange(steps, 0, -1)[:, None]
    first = (stays_right.long() * order).argmax(0)
    fallback = torch.where(s2_correct.bool(), torch.full_like(first, steps), torch.full_like(first, steps - 1))
    return torch.where(any_right, first, fallback)


def train_seenn2(
    features: torch.Tensor,
    s1_correct: torch.Tensor,
    s2_correct: torch.Tensor,
    action_energy: torch.Tensor,
    beta: float,
    *,
    input_shape: tuple[int, ...] = (),
    hidden: int = 32,
    pretrain_epochs: int = 0,
    rl_epochs: int = 300,
    lr: float = 5e-3,
    entropy_weight: float = 0.01,
    holdout: float = 0.25,
    seed: int = 0,
) -> tuple[TimestepPolicy, list[float]]:
    """Optionally pre-train on oracle actions, then REINFORCE (full batch, moving-average baseline),
    on all but a ``holdout`` share of the inputs; the weights kept are those of the epoch (the
    untrained policy included) whose greedy mean reward on the held-out inputs is best.
    ``holdout`` 0 keeps the last epoch's weights.

    Returns the policy and the greedy mean reward on the training inputs before REINFORCE and after
    each of its epochs.
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    features = features.float()
    steps = s1_correct.shape[0]
    rewards = action_rewards(s1_correct, s2_correct, action_energy, beta)
    targets = oracle_actions(s1_correct, s2_correct)
    order = torch.randperm(len(features), generator=generator)
    # At least two inputs stay for training (standardisation needs a spread); else no held-out choice.
    n_held = min(int(round(holdout * len(features))), len(features) - 2) if holdout > 0 else 0
    held = order[: max(n_held, 0)]
    train = order[len(held) :]
    policy = TimestepPolicy(features.shape[1], steps, hidden, input_shape)
    policy.fit_standardisation(features[train])
    optimizer = torch.optim.Adam(policy.parameters(), lr=lr)

    def greedy_reward(index: torch.Tensor) -> float:
        with torch.no_grad():
            return float(rewards[index, policy(features[index]).argmax(1)].mean())

    best = (greedy_reward(held), copy.deepcopy(policy.state_dict())) if len(held) else None

    def keep_if_best() -> None:
        nonlocal best
        if best is not None and (score := greedy_reward(held)) > best[0]:
            best = (score, copy.deepcopy(policy.state_dict()))

    for _ in range(pretrain_epochs):
        loss = F.cross_entropy(policy(features[train]), targets[train])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        keep_if_best()
    baseline = None
    rows = torch.arange(len(train))
    history = [greedy_reward(train)]
    for _ in range(rl_epochs):
        log_probs = F.log_softmax(policy(features[train]), dim=1)
        actions = torch.multinomial(log_probs.exp(), 1, generator=generator).squeeze(1)
        reward = rewards[train][rows, actions]
        mean_reward = reward.mean().detach()
        baseline = mean_reward if baseline is None else 0.9 * baseline + 0.1 * mean_reward
        entropy = -(log_probs.exp() * log_probs).sum(1).mean()
        loss = -((reward - baseline) * log_probs[rows, actions]).mean() - entropy_weight * entropy
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        history.append(greedy_reward(train))
        keep_if_best()
    if best is not None:
        policy.load_state_dict(best[1])
    policy.eval()
    return policy, history


def seenn2_action_energies(outputs: SystemOutputs, profile) -> torch.Tensor:
    """[N, T + 1] µJ: System 1 for t steps at its last exit, then System 2 alone (policy cost excluded: same for all)."""
    s1_steps, _ = outputs.step_outcome_energies(profile, 0.0)
    return torch.cat([s1_steps.T, outputs.energy_uj(Routing.system2_only(len(outputs)), profile)[:, None]], dim=1)


@register_policy
class Seenn2(Policy):
    """``seenn2@beta=β``: before System 1 runs, a :class:`TimestepPolicy` reads the (pooled) input and
    picks the steps to run, or System 2; β weighs energy against accuracy in its reward."""

    kind = "seenn2"
    rank = 40
    knob_order = ("beta", False)  # a larger β buys less energy: less safe
    decides_before_system1 = True

    def __init__(self, module: TimestepPolicy, beta: float) -> None:
        self.module, self.beta = module.eval(), float(beta)

    @property
    def name(self) -> str:
        return f"seenn2@beta={self.beta:g}"

    @property
    def knob(self) -> dict:
        return {"beta": self.beta}

    def to_config(self) -> dict:
        m = self.module
        return {
            "beta": self.beta,
            "n_features": m.net[0].in_features,
            "hidden": m.net[0].out_features,
            "timesteps": m.timesteps,
            "input_shape": list(m.input_shape),
        }

    @classmethod
    def from_config(cls, config: dict, state: dict[str, torch.Tensor] | None = None) -> Policy:
        module = TimestepPolicy(
            int(config["n_features"]), int(config["timesteps"]), int(config["hidden"]), tuple(config["input_shape"])
        )
        return cls(load_state(module, state), float(config["beta"]))

    @classmethod
    def fit(cls, context: FitContext) -> list[Policy]:
        sc, val = context.config.seenn2, context.val
        energy = seenn2_action_energies(val, context.profile)
        s1_correct, s2_correct = val.s1_correct_by_step(), val.s2_correct()
        return [
            cls(
                train_seenn2(
                    val.policy_inputs,
                    s1_correct,
                    s2_correct,
                    energy,
                    beta,
                    input_shape=context.input_shape,
                    hidden=sc.hidden,
                    pretrain_epochs=sc.pretrain_epochs,
                    rl_epochs=sc.rl_epochs,
                    lr=sc.lr,
                    holdout=sc.holdout,
                    seed=context.seed,
                )[0],
                beta,
            )
            for beta in sc.betas
        ]

    def decide(self, outputs: SystemOutputs) -> Decision:
        routing = self.module.route(outputs.policy_inputs, outputs.last_exit)
        return Decision(routing.escalate | (routing.timesteps <= outputs.steps_run), routing)
