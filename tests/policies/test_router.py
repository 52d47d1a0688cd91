"""The learned router lands on the requested share of System 2 on held-out data."""

import pytest
import torch

from fastslow.policies import confidence_score, router_loss, share_for_energy_budget, train_router
from fastslow.policies.router import per_input_cross_entropy


def _routing_problem(n: int, seed: int):
    """System 1 is right on easy inputs and wrong on hard ones; System 2 is right almost always."""
    g = torch.Generator().manual_seed(seed)
    classes = 5
    labels = torch.randint(0, classes, (n,), generator=g)
    difficulty = torch.rand(n, generator=g) ** 2
    s1_logits = torch.randn(n, classes, generator=g) * difficulty[:, None] * 3
    s1_logits[torch.arange(n), labels] += 3 * (1 - difficulty)
    s2_logits = torch.randn(n, classes, generator=g) * 0.5
    s2_logits[torch.arange(n), labels] += 4
    features = torch.cat([s1_logits, confidence_score(s1_logits)[:, None], torch.rand(n, 2, generator=g)], dim=1)
    return features, per_input_cross_entropy(s1_logits, labels), per_input_cross_entropy(s2_logits, labels), s1_logits, labels


@pytest.mark.parametrize("share", [0.1, 0.2, 0.3, 0.5])
def test_held_out_share_within_three_points(share):
    features, l1, l2, _, _ = _routing_problem(3000, seed=0)
    router = train_router(features, l1, l2, share, epochs=200, seed=0)
    held_features, *_ = _routing_problem(3000, seed=1)
    routing = router.route(held_features, timesteps=4, last_exit=0)
    assert abs(routing.escalate.float().mean().item() - share) <= 0.03
    # The loss itself pulls the mean routing probability towards the target (no collapse).
    assert abs(router.soft_share - share) <= 0.05


def test_router_escalates_the_inputs_system1_gets_wrong():
    features, l1, l2, s1_logits, labels = _routing_problem(3000, seed=0)
    router = train_router(features, l1, l2, 0.3, epochs=200, seed=0)
    held_features, _, _, held_logits, held_labels = _routing_problem(3000, seed=1)
    escalate = router.route(held_features, 4, 0).escalate
    wrong = held_logits.argmax(1) != held_labels
    # Among escalated inputs, System 1's error rate is far above its overall error rate.
    assert wrong[escalate].float().mean() > 1.5 * wrong.float().mean()


def test_kl_term_pushes_towards_target_share():
    logit = torch.zeros(100, requires_grad=True)  # p = 0.5 everywhere; target 0.1
    loss = router_loss(logit, torch.zeros(100), torch.zeros(100), target_share=0.1, kl_weight=1.0)
    loss.backward()
    assert (logit.grad > 0).all()  # gradient descent lowers p


def test_energy_budget_converts_to_share():
    assert share_for_energy_budget(0.5, s1_energy_uj=0.2, s2_energy_uj=1.0, policy_energy_uj=0.0) == pytest.approx(0.3)
    assert share_for_energy_budget(0.1, 0.2, 1.0, 0.0) == 0.0
    assert share_for_energy_budget(5.0, 0.2, 1.0, 0.0) == 1.0
