"""The whole-exit-space router: requested share of System 2 on held-out data; energy pushes exits earlier."""

import pytest
import torch

from fastslow.policies.exit_router import action_table, train_exit_router


def _problem(n: int, seed: int, exits: int = 2, steps: int = 4):
    g = torch.Generator().manual_seed(seed)
    difficulty = torch.rand(n, generator=g)
    features = torch.stack([difficulty + 0.1 * torch.randn(n, generator=g), torch.rand(n, generator=g)], dim=1)
    actions = action_table(exits, steps)
    losses = torch.zeros(n, len(actions))
    energy = torch.zeros(n, len(actions))
    for a, action in enumerate(actions):
        if action is None:
            losses[:, a], energy[:, a] = 0.05, 20.0
        else:
            e, t = action
            losses[:, a] = difficulty * 3.0 / (t * (e + 1))
            energy[:, a] = t * (e + 1)
    return features, losses, energy


@pytest.mark.parametrize("share", [0.1, 0.2, 0.3])
def test_held_out_share_of_system2_within_three_points(share):
    features, losses, energy = _problem(3000, 0)
    router = train_exit_router(features, losses, energy, 2, 4, share, energy_weight=0.05, epochs=200)
    held, _, _ = _problem(3000, 1)
    routing = router.route(held)
    assert abs(routing.escalate.float().mean().item() - share) <= 0.03
    # The hardest inputs are the ones escalated.
    assert held[routing.escalate, 0].mean() > held[~routing.escalate, 0].mean()


def test_energy_weight_moves_answers_to_cheaper_exits():
    features, losses, energy = _problem(2000, 0)
    cheap = train_exit_router(features, losses, energy, 2, 4, 0.1, energy_weight=2.0, epochs=200).route(features)
    costly = train_exit_router(features, losses, energy, 2, 4, 0.1, energy_weight=0.0, epochs=200).route(features)
    work = lambda r: (r.timesteps * (r.exit_taken + 1)).float()[~r.escalate].mean()  # noqa: E731
    assert work(cheap) < work(costly)


def test_held_out_action_distribution_lands_on_the_target_within_three_points():
    features, losses, energy = _problem(3000, 0)
    target = torch.zeros(len(action_table(2, 4)))
    target[0], target[3], target[5], target[-1] = 0.4, 0.25, 0.2, 0.15  # (exit 0, t1), (0, t4), (1, t2), System 2
    router = train_exit_router(features, losses, energy, 2, 4, 0.0, target_distribution=target, energy_weight=0.05, epochs=200)
    held, _, _ = _problem(3000, 1)
    routing = router.route(held)
    action = torch.where(routing.escalate, torch.tensor(len(target) - 1), routing.exit_taken * 4 + routing.timesteps - 1)
    shares = torch.bincount(action, minlength=len(target)).float() / len(action)
    assert (shares - target).abs().max() <= 0.03


def test_held_out_energy_lands_on_the_budget():
    features, losses, energy = _problem(3000, 0)
    held, held_losses, held_energy = _problem(3000, 1)
    for budget in (3.0, 6.0):
        router = train_exit_router(features, losses, energy, 2, 4, 0.0, energy_budget_uj=budget, energy_weight=0.05, epochs=200)
        actions = router.actions(held)
        spent = float(held_energy[torch.arange(len(held)), actions].mean())
        assert abs(spent - budget) <= 0.03 * budget
        assert router.energy_budget_uj == budget


def test_a_target_that_is_not_a_distribution_is_refused():
    features, losses, energy = _problem(100, 0)
    with pytest.raises(ValueError, match="summing to 1"):
        train_exit_router(features, losses, energy, 2, 4, 0.0, target_distribution=torch.full((9,), 0.5), epochs=1)
    with pytest.raises(ValueError, match="must be positive"):
        train_exit_router(features, losses, energy, 2, 4, 0.0, energy_budget_uj=0.0, epochs=1)
