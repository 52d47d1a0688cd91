"""Adaptive inference: same answers and energy as the evaluation, fewer steps really simulated."""

import pytest
import torch

from fastslow.energy import count_macs
from fastslow.evaluation.evaluate import collect_outputs, score_routing
from fastslow.pipeline import load_fit
from fastslow.policies import Seenn1, StepRouterPolicy
from fastslow.policies.dynamic import seenn1_routing
from fastslow.serving import FastSlow


def _assert_same_as_evaluated(answer, routing, expected, y):
    assert torch.equal(answer.timesteps.cpu(), routing.timesteps)
    assert torch.equal(answer.escalated.cpu(), routing.escalate)
    assert (answer.predictions.cpu() == y).float().mean().item() == expected.accuracy
    assert abs(answer.energy_uj.mean().item() - expected.energy_uj) < 1e-9 + 1e-6 * expected.energy_uj


@pytest.mark.parametrize("compaction", [True, False])
def test_predict_matches_evaluated_seenn1_with_escalation(fitted_folder, compaction):
    fit = load_fit(fitted_folder)
    x, y = fit.splits.x_test[:200], fit.splits.y_test[:200]
    s2_macs = sum(count_macs(fit.system2, tuple(x.shape[1:])).values())
    outputs = collect_outputs(fit.system1, fit.system2, x, y, s2_macs, batch_size=200, seed=7)
    for threshold in (0.5, 0.8, 0.95):
        routing = seenn1_routing(outputs.s1.logits, threshold, escalate_unconfident=True)
        expected = score_routing("seenn1", "seenn1+s2", routing, outputs, fit.profile)
        server = FastSlow(
            fit.system1,
            fit.system2,
            Seenn1(threshold, escalate=True),
            s2_macs=s2_macs,
            profile=fit.profile,
            compaction=compaction,
        )
        _assert_same_as_evaluated(server.predict(x, generator=torch.Generator().manual_seed(7)), routing, expected, y)


@pytest.mark.parametrize("compaction", [True, False])
def test_predict_with_the_sequential_router_matches_its_evaluation(fitted_folder, compaction):
    fit = load_fit(fitted_folder)
    x, y = fit.splits.x_test[:200], fit.splits.y_test[:200]
    s2_macs = sum(count_macs(fit.system2, tuple(x.shape[1:])).values())
    outputs = collect_outputs(fit.system1, fit.system2, x, y, s2_macs, batch_size=200, seed=7)
    step_routers = [p for p in fit.policies if p.kind == "router_steps"]
    assert len(step_routers) == 2
    for router in step_routers:
        routing = router.route(outputs)
        assert routing.escalate.any() and (routing.timesteps < fit.system1.spec.timesteps).any()  # a real mix of decisions
        expected = score_routing("router", "router_steps", routing, outputs, fit.profile)
        server = FastSlow(fit.system1, fit.system2, router, s2_macs=s2_macs, profile=fit.profile, compaction=compaction)
        _assert_same_as_evaluated(server.predict(x, generator=torch.Generator().manual_seed(7)), routing, expected, y)


def test_a_router_for_other_timesteps_is_refused(fitted_folder):
    from fastslow.policies.step_router import StepRouter

    fit = load_fit(fitted_folder)
    with pytest.raises(ValueError, match="timesteps"):
        FastSlow(fit.system1, fit.system2, StepRouterPolicy(StepRouter(10, fit.system1.spec.timesteps + 1)), s2_macs=1000)


def test_stopped_inputs_leave_the_batch(fitted_folder):
    fit = load_fit(fitted_folder)
    x = fit.splits.x_test[:64]
    server = FastSlow(fit.system1, fit.system2, Seenn1(0.0, escalate=True), s2_macs=1000)  # every input is confident at t = 1
    calls = []
    original = fit.system1.advance
    fit.system1.advance = lambda inp, state, constant, count, **kw: (
        calls.append(((constant if inp is None else inp[0]).shape[0], count)),
        original(inp, state, constant, count, **kw),
    )[1]
    answer = server.predict(x, generator=torch.Generator().manual_seed(0))
    assert calls == [(64, 1)] and (answer.timesteps == 1).all() and not answer.escalated.any()


def test_without_compaction_one_run_of_all_steps_answers(fitted_folder):
    """The GPU default: System 1 runs all T steps at once, never step by step; the stops are read after."""
    fit = load_fit(fitted_folder)
    x = fit.splits.x_test[:64]
    server = FastSlow(fit.system1, fit.system2, Seenn1(0.0, escalate=True), s2_macs=1000, compaction=False)
    runs = []
    original_run, original_step = fit.system1.run, fit.system1.step
    fit.system1.run = lambda inp, *args, **kwargs: (runs.append(inp.shape[0]), original_run(inp, *args, **kwargs))[1]
    fit.system1.step = lambda *args: pytest.fail("stepped")
    answer = server.predict(x, generator=torch.Generator().manual_seed(0))
    fit.system1.run, fit.system1.step = original_run, original_step
    assert runs == [64] and (answer.timesteps == 1).all() and not answer.escalated.any()


def _conv_direct_systems(timesteps=4):
    """An untrained conv System 1 (direct encoding) whose sharpened answers stop some inputs early, a System 2, data."""
    from fastslow.systems import System1, System1Spec, System2Spec, build_system2

    torch.manual_seed(0)
    system1 = System1(
        System1Spec(
            input_shape=(1, 10, 10),
            n_classes=5,
            arch="conv",
            conv_channels=(4, 6),
            hidden=(),
            timesteps=timesteps,
            encoding="direct",
        )
    ).eval()
    with torch.no_grad():
        system1.heads[-1].weight.mul_(30.0)
        system1.layers[0].op.weight.mul_(8.0)  # as inputs in [0, 8] would drive it (inputs outside [0, 1] are refused)
    system2 = build_system2(System2Spec(input_shape=(1, 10, 10), n_classes=5)).eval()
    return system1, system2, torch.rand(40, 1, 10, 10), torch.randint(0, 5, (40,))


def test_predict_matches_evaluation_for_a_conv_system1_with_direct_encoding():
    """Compaction of channels-last conv state and of the constant input current gives the
    evaluation's answers, timesteps and energy."""
    from fastslow.energy.profile import load_profile

    system1, system2, x, y = _conv_direct_systems()
    s2_macs = sum(count_macs(system2, (1, 10, 10)).values())
    profile = load_profile("cmos45nm")
    outputs = collect_outputs(system1, system2, x, y, s2_macs, batch_size=40, seed=0)
    for threshold in (0.45, 0.6):
        routing = seenn1_routing(outputs.s1.logits, threshold, escalate_unconfident=True)
        assert 0 < (routing.timesteps < 4).float().mean() < 1  # some inputs stop early, others run on
        expected = score_routing("seenn1", "seenn1+s2", routing, outputs, profile)
        for compaction in (True, False):
            server = FastSlow(
                system1, system2, Seenn1(threshold, escalate=True), s2_macs=s2_macs, profile=profile, compaction=compaction
            )
            _assert_same_as_evaluated(server.predict(x), routing, expected, y)


def test_compaction_advances_in_doubling_chunks_of_the_inputs_still_running():
    """Chunks of 1, 1, 2, … steps, each over exactly the inputs that had not stopped before it."""
    from fastslow.systems.system1 import doubling_chunks

    assert doubling_chunks(8) == [1, 1, 2, 4] and doubling_chunks(6) == [1, 1, 2, 2] and doubling_chunks(1) == [1]
    system1, system2, x, y = _conv_direct_systems()
    outputs = collect_outputs(system1, system2, x, y, 1000, batch_size=40, seed=0)
    routing = seenn1_routing(outputs.s1.logits, 0.45, escalate_unconfident=True)
    calls = []
    original = system1.advance
    system1.advance = lambda inp, state, constant, count, **kw: (
        calls.append((constant.shape[0] if kw.get("rows") is None else len(kw["rows"]), count)),
        original(inp, state, constant, count, **kw),
    )[1]
    FastSlow(system1, system2, Seenn1(0.45, escalate=True), s2_macs=1000, compaction=True, chunking="doubling").predict(x)
    done, expected = 0, []
    for count in doubling_chunks(4):
        if (routing.timesteps > done).any():
            expected.append((int((routing.timesteps > done).sum()), count))
        done += count
    assert calls == expected and len(expected) == 3 and expected[0][0] > expected[-1][0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_on_a_gpu_predict_reads_the_stops_from_one_run_and_matches_the_evaluation(fitted_folder):
    """The GPU default (no compaction): the evaluation's answers, timesteps and energy on the same device."""
    fit = load_fit(fitted_folder)
    system1, system2 = fit.system1.cuda(), fit.system2.cuda()
    x, y = fit.splits.x_test[:200], fit.splits.y_test[:200]
    s2_macs = sum(count_macs(system2, tuple(x.shape[1:])).values())
    outputs = collect_outputs(system1, system2, x, y, s2_macs, batch_size=200, seed=7, device="cuda")
    routing = seenn1_routing(outputs.s1.logits, 0.8, escalate_unconfident=True)
    expected = score_routing("seenn1", "seenn1+s2", routing, outputs, fit.profile)
    server = FastSlow(system1, system2, Seenn1(0.8, escalate=True), s2_macs=s2_macs, profile=fit.profile)
    answer = server.predict(x.cuda(), generator=torch.Generator(device="cuda").manual_seed(7))
    assert server.compaction is None and answer.predictions.is_cuda
    _assert_same_as_evaluated(answer, routing, expected, y)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_on_a_gpu_the_run_replayed_from_a_cuda_graph_gives_the_evaluated_answers():
    from fastslow.energy.profile import load_profile

    system1, system2, x, y = _conv_direct_systems()
    system1, system2 = system1.cuda(), system2.cuda()
    s2_macs = sum(count_macs(system2, (1, 10, 10)).values())
    outputs = collect_outputs(system1, system2, x, y, s2_macs, batch_size=40, device="cuda")
    routing = seenn1_routing(outputs.s1.logits, 0.6, escalate_unconfident=True)
    expected = score_routing("seenn1", "seenn1+s2", routing, outputs, load_profile("cmos45nm"))
    server = FastSlow(system1, system2, Seenn1(0.6, escalate=True), s2_macs=s2_macs, cuda_graphs=True)
    for _ in range(2):  # captured, then replayed
        _assert_same_as_evaluated(server.predict(x.cuda()), routing, expected, y)


def test_cuda_graphs_refuse_a_rate_code():
    from fastslow.systems import System1, System1Spec

    system1 = System1(System1Spec(input_shape=(4,), n_classes=2, encoding="rate"))
    with pytest.raises(ValueError, match="deterministic encoding"):
        FastSlow(system1, torch.nn.Linear(4, 2), Seenn1(0.9, escalate=True), s2_macs=8, cuda_graphs=True)


@pytest.mark.parametrize("served", ["SEENN-I, rate-encoded MLP", "router, direct-encoded conv"])
def test_compaction_equals_the_records_when_inputs_stop_inside_a_chunk(served):
    """T = 6 advances in chunks of 1, 1, 2, 2 steps; inputs that stop after step 3 or 5 (inside a
    chunk) get the answers, escalations, timesteps and µJ read from one full run's records (which
    the tests above hold equal to the evaluation's): the stop is decided at the right step of the
    chunk, the router sees the previous answers of the right inputs, a rate code draws the same spikes."""
    from fastslow.policies.step_router import CONTINUE, ESCALATE, StepRouter
    from fastslow.systems import System1, System1Spec, System2Spec, build_system2

    if served.startswith("SEENN"):
        torch.manual_seed(1)
        system1 = System1(System1Spec(input_shape=(1, 10, 10), n_classes=5, hidden=(32,), timesteps=6, encoding="rate")).eval()
        with torch.no_grad():
            system1.heads[-1].weight.mul_(8.0)
        system2 = build_system2(System2Spec(input_shape=(1, 10, 10), n_classes=5)).eval()
        x = torch.rand(60, 1, 10, 10)
        policy = Seenn1(0.6, escalate=True)
    else:
        system1, system2, x, _ = _conv_direct_systems(timesteps=6)
        torch.manual_seed(2)
        router = StepRouter(5 + 5 + len(system1.layers), 6)
        with torch.no_grad():  # untrained, biased so that inputs stop after steps 2 to 6 and some escalate
            router.net[-1].bias.zero_()
            router.step_bias[:, CONTINUE] = 1.0
            router.step_bias[:, ESCALATE] = 0.5
        policy = StepRouterPolicy(router)
    answers = {}
    for compaction in (True, False):
        server = FastSlow(system1, system2, policy, s2_macs=1000, compaction=compaction)
        answers[compaction] = server.predict(x, generator=torch.Generator().manual_seed(3))
    inside = answers[True].timesteps
    assert ((inside == 3) | (inside == 5)).any() and len(inside.unique()) >= 3, inside
    assert served.startswith("SEENN") or answers[True].escalated.any()
    for field in ("predictions", "escalated", "timesteps"):
        assert torch.equal(getattr(answers[True], field), getattr(answers[False], field)), field
    torch.testing.assert_close(answers[True].energy_uj, answers[False].energy_uj, rtol=1e-6, atol=0)


def test_bad_settings_and_batches_are_refused_in_one_line(fitted_folder):
    from fastslow.errors import DataError
    from fastslow.policies import ExitRouterPolicy, Oracle, RouterPolicy
    from fastslow.policies.exit_router import ExitRouter
    from fastslow.policies.router import Router
    from fastslow.policies.step_router import StepRouter

    fit = load_fit(fitted_folder)
    s1, s2, x = fit.system1, fit.system2, fit.splits.x_test[:4]
    seenn1 = Seenn1(0.9, escalate=True)
    with pytest.raises(ValueError, match="temperature"):
        Seenn1(0.9, escalate=True, temperature=0.0)
    with pytest.raises(ValueError, match="s2_macs"):
        FastSlow(s1, s2, seenn1, s2_macs=-5)
    with pytest.raises(TypeError, match="fastslow.policies.Policy"):  # a bare network, not a policy
        FastSlow(s1, s2, StepRouter(10, s1.spec.timesteps), s2_macs=1000)
    with pytest.raises(ValueError, match="deployable"):  # a reference that reads the labels
        FastSlow(s1, s2, Oracle(), s2_macs=1000)
    for policy in (StepRouterPolicy(StepRouter(10, s1.spec.timesteps)), RouterPolicy(Router(12))):
        with pytest.raises(ValueError, match="features"):  # trained on another System 1 (other classes / layers)
            FastSlow(s1, s2, policy, s2_macs=1000)
    with pytest.raises(ValueError, match="exits"):  # trained on a System 1 with another exit head
        FastSlow(s1, s2, ExitRouterPolicy(ExitRouter(s1.spec.n_classes + 4, s1.n_exits + 1, s1.spec.timesteps)), s2_macs=1000)
    server = FastSlow(s1, s2, seenn1, s2_macs=1000)
    nan = x.clone()
    nan[1, 0] = float("nan")
    for batch, error, named in (
        (nan, DataError, "NaN/inf"),
        (-x, DataError, r"outside \[0, 1\]"),
        (x * 2 + 0.5, DataError, r"outside \[0, 1\]"),
        (x[:0], DataError, "empty"),
        (x.double(), TypeError, "float32"),
        (x.numpy(), TypeError, "torch.Tensor"),
    ):
        with pytest.raises(error, match=named):
            server.predict(batch)


def test_thresholds_on_a_confidence_value_decide_as_the_evaluation_does():
    # θ equal to an input's confidence at some step: the server must compare the evaluation's bits
    # (the mean of the outputs from the same cumulative sum), not a float32 running sum's.
    from fastslow.policies.dynamic import seenn1_confidence
    from fastslow.systems import System1, System1Spec, System2Spec, build_system2

    torch.manual_seed(1)
    s1 = System1(System1Spec(input_shape=(1, 12, 12), n_classes=5, hidden=(32,), timesteps=4, encoding="rate")).eval()
    with torch.no_grad():
        s1.heads[-1].weight.mul_(3.0)
    s2 = build_system2(System2Spec(input_shape=(1, 12, 12), n_classes=5)).eval()
    x, y = torch.rand(13, 1, 12, 12), torch.randint(0, 5, (13,))
    outputs = collect_outputs(s1, s2, x, y, 1000, batch_size=13, seed=7)
    for threshold in sorted(set(seenn1_confidence(outputs.s1.logits[:, -1])[:-1].flatten().tolist())):
        routing = seenn1_routing(outputs.s1.logits, threshold, escalate_unconfident=True)
        server = FastSlow(s1, s2, Seenn1(threshold, escalate=True), s2_macs=1000, compaction=True)
        answer = server.predict(x, generator=torch.Generator().manual_seed(7))
        assert torch.equal(answer.timesteps, routing.timesteps.long()) and torch.equal(answer.escalated, routing.escalate), (
            threshold
        )


@pytest.mark.parametrize("margin", ["default", "every step torch's"])
def test_a_direct_mlp_is_served_in_one_compiled_call_with_the_evaluations_answers(monkeypatch, margin):
    """SEENN-I over a direct-encoded MLP on a CPU runs each input until confident inside one compiled
    call (no chunks): the same stops, escalations, answers and µJ as the evaluation, also with θ equal
    to an input's confidence (torch's float32 confidence decides near θ; with a margin of 1 it decides
    every step, and every input is stepped again from where it was)."""
    import fastslow.serving.adaptive as adaptive
    from fastslow.energy.profile import load_profile
    from fastslow.policies.dynamic import seenn1_confidence
    from fastslow.spiking import _cpu_kernels
    from fastslow.systems import System1, System1Spec, System2Spec, build_system2

    if not _cpu_kernels.cpu_kernels_available():
        pytest.skip("the compiled CPU kernels are off (numba is not installed)")
    if margin != "default":
        monkeypatch.setattr(adaptive, "CONFIDENCE_MARGIN", 1.0)
    torch.manual_seed(1)
    s1 = System1(
        System1Spec(input_shape=(1, 12, 12), n_classes=5, hidden=(160, 48), timesteps=5, encoding="direct", exit_heads=(0,))
    ).eval()
    with torch.no_grad():
        s1.heads[-1].weight.mul_(3.0)
        s1.layers[0].op.weight.mul_(2.0)  # as inputs in [0, 2] would drive it (inputs outside [0, 1] are refused)
    s2 = build_system2(System2Spec(input_shape=(1, 12, 12), n_classes=5)).eval()
    x, y = torch.rand(23, 1, 12, 12), torch.randint(0, 5, (23,))
    s2_macs = sum(count_macs(s2, (1, 12, 12)).values())
    profile = load_profile("cmos45nm")
    outputs = collect_outputs(s1, s2, x, y, s2_macs, batch_size=23, seed=7)
    calls = []
    original = _cpu_kernels.mlp_until_confident
    monkeypatch.setattr(_cpu_kernels, "mlp_until_confident", lambda *args: (calls.append(len(args[3])), original(*args))[1])
    monkeypatch.setattr(s1, "advance", lambda *args, **kwargs: pytest.fail("advanced in chunks"))
    exact = sorted(set(seenn1_confidence(outputs.s1.logits[:, -1])[:-1].flatten().tolist()))
    thresholds = [0.3, 0.6, 0.9, 1.0] + exact[:: max(1, len(exact) // 12)]
    for threshold in thresholds:
        routing = seenn1_routing(outputs.s1.logits, threshold, escalate_unconfident=True)
        expected = score_routing("seenn1", "seenn1+s2", routing, outputs, profile)
        calls.clear()
        answer = FastSlow(s1, s2, Seenn1(threshold, escalate=True), s2_macs=s2_macs, profile=profile).predict(x)
        _assert_same_as_evaluated(answer, routing, expected, y)
        assert calls[0] == 23
        if margin == "default" and threshold in (0.3, 0.6, 0.9, 1.0):
            assert len(calls) == 1  # no confidence within 1e-4 of a round θ here: one call
        elif margin != "default" and threshold < 1.0 and bool((routing.timesteps > 1).any()):
            assert len(calls) > 1
    assert any(
        0 < (routing.timesteps < 5).float().mean() < 1
        for routing in [seenn1_routing(outputs.s1.logits, threshold) for threshold in thresholds]
    )  # some inputs stop early, others run on
