"""LIF dynamics against hand-computed traces, surrogate gradients, and snnTorch."""

import math

import pytest
import torch

from fastslow.spiking import LIF, LIFParams, encode_step, lif_init, lif_multistep, lif_step


def test_subtract_reset_matches_hand_trace():
    # beta 0.5, threshold 1, constant current 0.8:
    # v1 = 0.8 (no spike); v2 = 0.4 + 0.8 = 1.2 > 1 → spike, v → 0.2;
    # v3 = 0.1 + 0.8 = 0.9 (no spike); v4 = 0.45 + 0.8 = 1.25 → spike, v → 0.25.
    params = LIFParams(beta=0.5, threshold=1.0, reset="subtract")
    spikes, state = lif_multistep(torch.full((4, 1), 0.8), None, params)
    assert spikes.flatten().tolist() == [0.0, 1.0, 0.0, 1.0]
    assert state.v.item() == pytest.approx(0.25)


def test_zero_reset_matches_hand_trace():
    # v1 = 0.8; v2 = 1.2 → spike, v → 0; v3 = 0.8; v4 = 1.2 → spike, v → 0.
    params = LIFParams(beta=0.5, threshold=1.0, reset="zero")
    spikes, state = lif_multistep(torch.full((4, 1), 0.8), None, params)
    assert spikes.flatten().tolist() == [0.0, 1.0, 0.0, 1.0]
    assert state.v.item() == pytest.approx(0.0)


def test_fires_only_strictly_above_threshold():
    spikes, _ = lif_step(torch.tensor([1.0, 1.0001]), lif_init(torch.zeros(2)), LIFParams(beta=1.0, threshold=1.0))
    assert spikes.tolist() == [0.0, 1.0]


def test_tau_gives_exponential_decay():
    params = LIFParams.from_tau(10.0)
    assert params.beta == pytest.approx(math.exp(-0.1))
    _, state = lif_step(torch.zeros(1), lif_init(torch.zeros(1)).__class__(v=torch.tensor([0.5])), params)
    assert state.v.item() == pytest.approx(0.5 * math.exp(-0.1))


@pytest.mark.parametrize("surrogate", ["fast_sigmoid", "arctan"])
def test_surrogate_gradient_flows_through_time(surrogate):
    weight = torch.tensor([0.7], requires_grad=True)
    params = LIFParams(beta=0.9, threshold=1.0, surrogate=surrogate, slope=5.0)
    spikes, _ = lif_multistep(weight * torch.ones(6, 1), None, params)
    spikes.sum().backward()
    assert weight.grad is not None and weight.grad.item() > 0  # more input → more spikes


def test_fast_sigmoid_gradient_value():
    x = torch.tensor([0.1], requires_grad=True)
    from fastslow.spiking import spike_fn

    spike_fn(x, "fast_sigmoid", slope=25.0).backward()
    assert x.grad.item() == pytest.approx(1.0 / (25.0 * 0.1 + 1.0) ** 2)


def test_module_wrapper_equals_functional_core():
    current = torch.randn(5, 3, 4)
    module = LIF(LIFParams(beta=0.8))
    state = None
    outs = []
    for c in current:
        s, state = module(c, state)
        outs.append(s)
    expected, _ = lif_multistep(current, None, LIFParams(beta=0.8))
    assert torch.equal(torch.stack(outs), expected)


def test_spikes_match_snntorch_with_zero_reset():
    snn = pytest.importorskip("snntorch", reason="snntorch is a test-only extra: pip install -e '.[test]'")
    torch.manual_seed(0)
    current = torch.rand(20, 16, 32) * 0.6
    ours, _ = lif_multistep(current, None, LIFParams(beta=0.85, threshold=1.0, reset="zero"))
    neuron = snn.Leaky(beta=0.85, threshold=1.0, reset_mechanism="zero")
    mem = neuron.init_leaky()
    theirs = []
    for c in current:
        spk, mem = neuron(c, mem)
        theirs.append(spk)
    assert ours.sum() > 0
    assert torch.equal(ours, torch.stack(theirs).detach())


def test_latency_encoding_fires_once_bright_first():
    x = torch.tensor([1.0, 0.5, 0.0])
    spikes = torch.stack([encode_step(x, t, 5, "latency") for t in range(5)])
    assert spikes.sum(0).tolist() == [1.0, 1.0, 0.0]
    assert spikes[:, 0].argmax() < spikes[:, 1].argmax()


def test_rate_encoding_is_seeded_and_matches_intensity():
    x = torch.full((20000,), 0.3)
    a = encode_step(x, 0, 8, "rate", torch.Generator().manual_seed(1))
    b = encode_step(x, 0, 8, "rate", torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert a.mean().item() == pytest.approx(0.3, abs=0.02)


@pytest.mark.parametrize(
    "params, named",
    [
        (LIFParams(beta=2.0), "beta"),
        (LIFParams(beta=0.0), "beta"),
        (LIFParams(beta=float("nan")), "beta"),
        (LIFParams(threshold=-1.0), "threshold"),
        (LIFParams(threshold=float("inf")), "threshold"),
        (LIFParams(reset="none"), "reset"),
        (LIFParams(surrogate="relu"), "surrogate"),
        (LIFParams(slope=0.0), "slope"),
    ],
)
def test_impossible_lif_constants_are_refused_by_name(params, named):
    with pytest.raises(ValueError, match=named):
        lif_step(torch.zeros(3), lif_init(torch.zeros(3)), params)
    with pytest.raises(ValueError, match=named):
        lif_multistep(torch.zeros(2, 3), None, params)


def test_a_misshapen_state_is_refused_not_broadcast():
    with pytest.raises(ValueError, match=r"shaped like one step's current, \[4, 3\], got \[3\]"):
        lif_step(torch.zeros(4, 3), lif_init(torch.zeros(3)), LIFParams())
