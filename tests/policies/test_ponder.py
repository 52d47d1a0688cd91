"""PonderNet machinery: the halting distribution, the prior, the KL direction and its pull."""

import importlib.util
from pathlib import Path

import pytest
import torch

from fastslow.policies.ponder import (
    geometric_prior,
    halting_distribution,
    halting_step,
    kl_to_prior,
    ponder_loss,
    train_halting_head,
)


@pytest.fixture(autouse=True)
def _one_thread():
    """The heads here are tiny: one thread is fastest, and avoids thread thrashing on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_halting_distribution_sums_to_one_with_last_step_forced():
    lambdas = torch.rand(7, 50, generator=torch.Generator().manual_seed(0))
    p = halting_distribution(lambdas)
    assert torch.allclose(p.sum(0), torch.ones(50), atol=1e-6)
    assert (p >= 0).all()
    # By hand for one input: λ = [0.5, 0.5, x]: p = [0.5, 0.25, 0.25].
    assert torch.allclose(halting_distribution(torch.tensor([[0.5], [0.5], [0.9]]))[:, 0], torch.tensor([0.5, 0.25, 0.25]))
    # λ_T is forced to 1: whatever it was, p_T = ∏_{j<T}(1 − λ_j) and the rest is unchanged.
    changed = lambdas.clone()
    changed[-1] = torch.rand(50, generator=torch.Generator().manual_seed(1))
    assert torch.equal(halting_distribution(changed), p)
    assert torch.allclose(p[-1], (1 - lambdas[:-1]).prod(0))
    # Saturated λ (exactly 0 or 1) stays finite and normalised.
    edge = halting_distribution(torch.tensor([[0.0, 1.0], [1.0, 1.0], [0.0, 0.0]]))
    assert torch.equal(edge, torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 0.0]]))


def test_geometric_prior_sums_to_one_and_has_mean_one_over_lambda():
    prior = geometric_prior(0.25, 200)
    assert prior.sum().item() == pytest.approx(1.0)
    assert (prior * torch.arange(1, 201)).sum().item() == pytest.approx(4.0, rel=1e-3)
    short = geometric_prior(0.25, 5)  # truncated and renormalised: ratio (1 − λ_p) between steps kept
    assert short.sum().item() == pytest.approx(1.0)
    assert torch.allclose(short[1:] / short[:-1], torch.full((4,), 0.75))
    with pytest.raises(ValueError):
        geometric_prior(0.0, 5)


def test_kl_is_the_papers_direction():
    p = torch.tensor([[0.7], [0.2], [0.1]])
    q = geometric_prior(0.5, 3)[:, None]
    forward = (p * (p / q).log()).sum()
    reverse = (q * (q / p).log()).sum()
    assert kl_to_prior(p, 0.5).item() == pytest.approx(forward.item())
    assert abs(forward - reverse) > 1e-3  # the two directions really differ here
    # The KL part of ponder_loss itself (zero step losses, weight 1), from λ that give this p.
    lambdas = torch.tensor([[0.7], [0.2 / 0.3], [0.123]])
    kl_part = ponder_loss(lambdas, torch.zeros(3, 1), 0.5, kl_weight=1.0).item()
    assert kl_part == pytest.approx(forward.item(), rel=1e-5)
    assert abs(kl_part - reverse.item()) > 1e-3
    # Weighted and added to the task term; p_t = 0 steps contribute 0, not NaN.
    losses = torch.tensor([[1.0], [2.0], [3.0]])
    total = ponder_loss(lambdas, losses, 0.5, kl_weight=0.3).item()
    assert total == pytest.approx((p * losses).sum().item() + 0.3 * forward.item(), rel=1e-5)
    assert torch.isfinite(ponder_loss(torch.tensor([[1.0], [0.4], [0.4]]), torch.zeros(3, 1), 1.0, 1.0))


def _mean_step(head, features):
    p = halting_distribution(head(features))
    return (p * torch.arange(1, p.shape[0] + 1)[:, None]).sum(0).mean().item()


def test_kl_term_pulls_mean_halting_step_to_the_prior():
    steps, n = 12, 256
    features = torch.randn(steps, n, 3, generator=torch.Generator().manual_seed(0))
    prior = geometric_prior(0.25, steps)
    prior_mean = (prior * torch.arange(1, steps + 1)).sum().item()
    # Start far away: step losses that make halting at t = 1 free and later steps costly.
    early = torch.zeros(steps, n)
    early[1:] = 5.0
    head = train_halting_head(features, early, 0.25, kl_weight=0.0, epochs=100)
    assert abs(_mean_step(head, features) - prior_mean) > 1.5
    # Continue training the same head on the KL term alone (all step losses zero, weight 1).
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-2)
    zero = torch.zeros(steps, n)
    for _ in range(300):
        loss = ponder_loss(head(features), zero, 0.25, kl_weight=1.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert abs(_mean_step(head, features) - prior_mean) < 0.5
    # And from scratch through train_halting_head.
    fresh = train_halting_head(features, zero, 0.25, kl_weight=1.0, epochs=300)
    assert abs(_mean_step(fresh, features) - prior_mean) < 0.5


def test_head_learns_to_wait_until_answers_are_right():
    steps, n = 6, 256
    features = torch.stack([torch.full((n,), float(t)) for t in range(steps)])[..., None]
    features = features + 0.01 * torch.randn(steps, n, 1, generator=torch.Generator().manual_seed(0))
    losses = torch.zeros(steps, n)
    losses[:2] = 4.0  # wrong before t = 3
    head = train_halting_head(features, losses, 0.5, kl_weight=0.01, epochs=400)
    assert (halting_step(head(features)) >= 3).float().mean() > 0.95


def test_halting_step_rules():
    lambdas = torch.tensor([[0.1, 0.1], [0.7, 0.2], [0.2, 0.3]])
    assert halting_step(lambdas).tolist() == [2, 3]  # second input never exceeds 0.5 → T
    assert halting_step(lambdas, threshold=0.15).tolist() == [2, 2]
    assert halting_step(lambdas, threshold=0.7).tolist() == [3, 3]  # strictly above: 0.7 does not halt
    assert halting_step(lambdas).dtype == torch.long
    sampled = halting_step(lambdas, "sample", generator=torch.Generator().manual_seed(0))
    assert ((sampled >= 1) & (sampled <= 3)).all()
    # Sampling follows the halting distribution.
    many = torch.tensor([[0.5], [0.5], [0.5]]).expand(3, 20000)
    drawn = halting_step(many, "sample", generator=torch.Generator().manual_seed(0))
    frequencies = torch.bincount(drawn, minlength=4)[1:].float() / 20000
    assert torch.allclose(frequencies, torch.tensor([0.5, 0.25, 0.25]), atol=0.02)
    with pytest.raises(ValueError):
        halting_step(lambdas, "nope")


def test_ponder_loss_is_expected_step_loss_without_kl():
    lambdas = torch.tensor([[0.5], [0.5], [0.5]])
    losses = torch.tensor([[1.0], [2.0], [4.0]])
    assert ponder_loss(lambdas, losses, 0.3, kl_weight=0.0).item() == pytest.approx(0.5 * 1 + 0.25 * 2 + 0.25 * 4)


def test_parity_bench_runs_tiny():
    path = Path(__file__).resolve().parents[2] / "bench" / "parity.py"
    spec = importlib.util.spec_from_file_location("parity", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--tiny"]) == 0
