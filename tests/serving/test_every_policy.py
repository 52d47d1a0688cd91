"""Every registered deployable family, served: chunks with decided inputs leaving the batch (doubling,
adaptive and every other plan of the steps), one run's records and a Deployment give, input by input,
the answers, escalations, exits, timesteps and µJ of the policy's routing over a full recorded run
(what the evaluation scores)."""

import tomllib

import pytest
import torch
from conftest import TINY_CONFIG  # tests/conftest.py: the tiny fit's policy sections

from fastslow.config import FitConfig
from fastslow.data import load_dataset
from fastslow.energy import charge, count_macs, load_profile
from fastslow.evaluation.evaluate import collect_outputs, routing_predictions
from fastslow.policies import POLICIES, FitContext
from fastslow.serving import Deployment, FastSlow
from fastslow.systems import System1, System1Spec, System2Spec, build_system2
from fastslow.systems.training import ce_loss, system1_loss, train_classifier

SEED = 11


def _every_plan(left: int) -> list[list[int]]:
    """Every way to advance ``left`` steps in chunks: [1, 1, 1], [1, 2], [2, 1], [3] for 3."""
    return [[]] if left == 0 else [[first, *rest] for first in range(1, left + 1) for rest in _every_plan(left - first)]


@pytest.fixture(scope="module", params=["rate", "direct"])
def fitted(request):
    """A small System 1 (hidden (32, 16), an exit head on layer 0, T = 4) trained briefly on digits, a
    System 2, every registered family fitted on a router split (TINY_CONFIG's sections), test inputs.
    With direct encoding, SEENN-I is served in one compiled call where the CPU kernels are on."""
    data = load_dataset("digits", seed=0)
    x, y = torch.from_numpy(data.x_train).float(), torch.from_numpy(data.y_train).long()
    torch.manual_seed(0)
    s1 = System1(
        System1Spec(
            input_shape=data.input_shape, n_classes=10, hidden=(32, 16), timesteps=4, encoding=request.param, exit_heads=(0,)
        )
    )
    s2 = build_system2(System2Spec(input_shape=data.input_shape, n_classes=10))
    train_classifier(s1, x[:1000], y[:1000], system1_loss, epochs=8, lr=1e-2, batch_size=64, seed=0)
    train_classifier(s2, x[:1000], y[:1000], ce_loss, epochs=2, lr=1e-3, batch_size=64, seed=0)
    s1, s2 = s1.eval(), s2.eval()
    s2_macs = sum(count_macs(s2, data.input_shape).values())
    profile = load_profile("cmos45nm")
    val = collect_outputs(s1, s2, x[1000:], y[1000:], s2_macs, seed=1)
    context = FitContext(FitConfig(**tomllib.loads(TINY_CONFIG)), val, profile, data.input_shape, 0)
    policies = [point for family in POLICIES.values() for point in family.fit(context)]
    x_test, y_test = torch.from_numpy(data.x_test[:200]).float(), torch.from_numpy(data.y_test[:200]).long()
    return s1, s2, s2_macs, profile, policies, x_test, y_test


def _assert_same(answer, expected, what) -> None:
    for field in ("predictions", "escalated", "exits", "timesteps", "energy_uj"):
        assert torch.equal(getattr(answer, field), expected[field]), (what, field)
    for term, value in expected["energy_terms_uj"].items():
        assert torch.equal(answer.energy_terms_uj[term], value), (what, term)


def test_every_deployable_family_is_served_as_it_routes_a_full_run(fitted):
    s1, s2, s2_macs, profile, policies, x, y = fitted
    steps = s1.spec.timesteps
    policies = [p for p in policies if p.deployable]
    assert {p.kind for p in policies} == {kind for kind, family in POLICIES.items() if family.deployable}  # every registered one
    outputs = collect_outputs(s1, s2, x, y, s2_macs, batch_size=len(x), seed=SEED)
    deployment = Deployment(s1, s2, policies, profile, s2_macs, seed=SEED, batch_size=len(x))
    plans = _every_plan(steps)
    mixed = set()
    for policy in policies:
        routing = policy.route(outputs)
        charged = charge(outputs.s1, routing, outputs.s2_macs, profile)
        expected = {
            "predictions": routing_predictions(routing, outputs),
            "escalated": routing.escalate,
            "exits": torch.where(routing.escalate, -1, routing.exit_taken),
            "timesteps": routing.timesteps,
            "energy_uj": charged.total_uj,
            "energy_terms_uj": charged.terms_uj,
        }
        if len(set(zip(routing.escalate.tolist(), routing.timesteps.tolist(), routing.exit_taken.tolist()))) > 1:
            mixed.add(policy.kind)
        servers = {
            "records": FastSlow(s1, s2, policy, s2_macs=s2_macs, profile=profile, compaction=False),
            "doubling": FastSlow(s1, s2, policy, s2_macs=s2_macs, profile=profile, compaction=True, chunking="doubling"),
            "adaptive": FastSlow(s1, s2, policy, s2_macs=s2_macs, profile=profile, compaction=True),
        }
        for mode, server in servers.items():
            _assert_same(server.predict(x, generator=torch.Generator().manual_seed(SEED)), expected, (policy.name, mode))
        adaptive = servers["adaptive"]
        for plan in plans:  # every plan a planner may choose: inputs stop inside chunks of every length
            adaptive.planner.plan = lambda n, plan=plan: list(plan)
            _assert_same(adaptive.predict(x, generator=torch.Generator().manual_seed(SEED)), expected, (policy.name, plan))
        _assert_same(deployment.predict(x, policy.name), expected, (policy.name, "deployment"))
    # Each family (but the references that always answer alike) routed its inputs in more than one way.
    assert mixed >= {p.kind for p in policies} - {"system1", "system2"}, mixed
