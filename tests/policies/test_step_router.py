"""The sequential router: a decision after every step; held-out routing lands on the asked share,
budget or distribution; it stops easy inputs early and escalates the ones System 1 keeps getting wrong."""

import pytest
import torch

from fastslow.policies.step_router import CONTINUE, ESCALATE, STOP, decide, outcome_probabilities, train_step_router

STEPS = 4


def _problem(n: int, seed: int):
    """Inputs of three kinds: easy (System 1 right from step 1), slow (right from step 3) and hard
    (never right; System 2 right). The features show the answer's confidence, which rises with t on
    the slow inputs and stays low on the hard ones."""
    g = torch.Generator().manual_seed(seed)
    kind = torch.randint(0, 3, (n,), generator=g)  # 0 easy, 1 slow, 2 hard
    t = torch.arange(1, STEPS + 1, dtype=torch.float32)[:, None]
    right_from = torch.tensor([1.0, 3.0, 99.0])[kind]
    right = t >= right_from[None]  # [T, N]
    confidence = torch.where(right, 0.9, 0.3) + 0.05 * torch.randn(STEPS, n, generator=g)
    progress = (t / STEPS).expand(STEPS, n)
    features = torch.stack([confidence, progress, torch.randn(STEPS, n, generator=g)], dim=-1)
    stop_losses = (~right).float()
    s2_losses = torch.zeros(n)
    stop_energy = t.expand(STEPS, n).clone()  # 1 µJ per System 1 step
    escalate_energy = stop_energy + 10.0  # System 2 costs 10 µJ
    return features, stop_losses, s2_losses, stop_energy, escalate_energy, kind


def test_outcome_probabilities_form_a_distribution_matching_the_halting_process():
    logits = torch.randn(3, 5, 3)
    p_stop, p_escalate = outcome_probabilities(logits)
    assert torch.allclose(p_stop.sum(0) + p_escalate.sum(0), torch.ones(5), atol=1e-6)
    q = torch.softmax(logits, -1)
    q_last = torch.softmax(logits[-1][:, [STOP, ESCALATE]], -1)
    by_hand_stop_2 = q[0, :, CONTINUE] * q[1, :, STOP]
    by_hand_escalate_3 = q[0, :, CONTINUE] * q[1, :, CONTINUE] * q_last[:, 1]
    assert torch.allclose(p_stop[1], by_hand_stop_2, atol=1e-6)
    assert torch.allclose(p_escalate[2], by_hand_escalate_3, atol=1e-6)


def test_decide_leaves_at_the_first_step_not_continuing_and_never_continues_past_the_last():
    big = 5.0
    logits = torch.zeros(3, 3, 3)
    logits[:, 0, CONTINUE] = big
    logits[1, 0, ESCALATE] = 2 * big  # input 0: escalates after step 2
    logits[:, 1, STOP] = big  # input 1: stops after step 1
    logits[:, 2, CONTINUE] = big  # input 2: continues until forced to choose at T
    logits[2, 2, STOP] = 1.0
    escalate, steps = decide(logits)
    assert steps.tolist() == [2, 1, 3]
    assert escalate.tolist() == [True, False, False]


def test_router_stops_easy_inputs_early_waits_for_slow_ones_and_escalates_hard_ones():
    features, stop_losses, s2_losses, stop_energy, escalate_energy, _ = _problem(3000, 0)
    router = train_step_router(
        features, stop_losses, s2_losses, stop_energy, escalate_energy, 1 / 3, energy_weight=0.05, epochs=300
    )
    held, held_losses, *_, kind = _problem(3000, 1)
    routing = router.route(held, last_exit=0)
    assert routing.timesteps[kind == 0].float().mean() < 1.2
    slow = kind == 1
    assert (routing.timesteps[slow & ~routing.escalate] >= 3).float().mean() > 0.9
    assert routing.escalate[kind == 2].float().mean() > 0.9
    answered_wrong = held_losses[routing.timesteps - 1, torch.arange(len(kind))].bool() & ~routing.escalate
    assert answered_wrong.float().mean() < 0.05
    assert (routing.policy_macs == routing.timesteps * router.macs()).all()


@pytest.mark.parametrize("share", [0.1, 0.2, 0.3])
def test_held_out_share_of_system2_within_three_points(share):
    problem = _problem(3000, 0)
    router = train_step_router(*problem[:5], share, epochs=200)
    routing = router.route(_problem(3000, 1)[0], last_exit=0)
    assert abs(routing.escalate.float().mean().item() - share) <= 0.03


def test_held_out_energy_lands_on_the_budget():
    problem = _problem(3000, 0)
    held, _, _, held_stop, held_escalate, _ = _problem(3000, 1)
    for budget in (3.0, 5.0):
        router = train_step_router(*problem[:5], 0.0, energy_budget_uj=budget, epochs=200)
        routing = router.route(held, last_exit=0)
        rows = torch.arange(held.shape[1])
        spent = torch.where(routing.escalate, held_escalate[routing.timesteps - 1, rows], held_stop[routing.timesteps - 1, rows])
        assert abs(float(spent.mean()) - budget) <= 0.05 * budget
        assert router.energy_budget_uj == budget


def test_held_out_outcome_distribution_lands_on_the_target_within_three_points():
    problem = _problem(3000, 0)
    target = torch.tensor([0.3, 0.1, 0.3, 0.1, 0.2])  # stop at t = 1..4, then System 2
    router = train_step_router(*problem[:5], 0.0, target_distribution=target, epochs=200)
    held = _problem(3000, 1)[0]
    routing = router.route(held, last_exit=0)
    outcome = torch.where(routing.escalate, torch.tensor(STEPS), routing.timesteps - 1)
    shares = torch.bincount(outcome, minlength=STEPS + 1).float() / len(outcome)
    assert (shares - target).abs().max() <= 0.03
    assert torch.allclose(router.outcome_frequencies(held), shares)


def test_bad_targets_are_refused():
    problem = _problem(100, 0)
    with pytest.raises(ValueError, match="summing to 1"):
        train_step_router(*problem[:5], 0.0, target_distribution=torch.full((5,), 0.5), epochs=1)
    with pytest.raises(ValueError, match="must be positive"):
        train_step_router(*problem[:5], 0.0, energy_budget_uj=0.0, epochs=1)
    with pytest.raises(ValueError, match="outside"):
        train_step_router(*problem[:5], 1.5, epochs=1)
