"""Energy for event inputs: System 1's first layer, fed by the recorded spikes, is charged as
synaptic accumulates (events × fan-out), never as dense MACs — against hand counts."""

import pytest
import torch

from fastslow.energy import load_profile, s1_op_counts
from fastslow.energy.accounting import charge
from fastslow.policies import Routing
from fastslow.spiking import LIFParams
from fastslow.systems import System1, System1Spec


def test_mlp_first_layer_charges_each_event_times_its_fan_out():
    # 4 inputs per frame → 3 hidden LIF → 2 classes, T = 3 frames. Weights of 0.05 keep the hidden
    # layer silent (at most 4 · 0.05 · 3 = 0.6 < threshold 1), so only layer 0 accumulates.
    spec = System1Spec(
        input_shape=(3, 4), n_classes=2, hidden=(3,), timesteps=3, encoding="events", lif=LIFParams(beta=1.0, threshold=1.0)
    )
    model = System1(spec)
    with torch.no_grad():
        model.layers[0].op.weight.fill_(0.05)
        model.layers[0].op.bias.zero_()
    frames = torch.zeros(2, 3, 4)
    frames[0, 0, :2] = 1.0  # input A: 2 events at step 0, 1 at step 1, none at step 2
    frames[0, 1, 3] = 1.0
    frames[1, 2, :] = 1.0  # input B: 4 events at step 2
    run = model.run(frames)
    # Layer 0, per step: events × fan-out 3.
    assert run.synaptic_ops[0].T.tolist() == [[6.0, 3.0, 0.0], [0.0, 0.0, 12.0]]
    assert float(run.dense_macs.abs().sum()) == 0.0
    assert float(run.spike_rates.sum()) == 0.0  # (the hidden layer stayed silent, as designed)
    syn, dense, neurons = s1_op_counts(
        run.synaptic_ops, run.dense_macs, run.neuron_updates, model.exit_layers, torch.tensor([3, 3]), torch.tensor([0, 0])
    )
    assert syn.tolist() == [9.0, 12.0] and dense.tolist() == [0.0, 0.0] and neurons.tolist() == [15.0, 15.0]
    # Stopping after 2 steps charges the events of those steps only.
    syn2, _, _ = s1_op_counts(
        run.synaptic_ops, run.dense_macs, run.neuron_updates, model.exit_layers, torch.tensor([2, 2]), torch.tensor([0, 0])
    )
    assert syn2.tolist() == [9.0, 0.0]
    profile = load_profile("cmos45nm")
    charged = charge(run, Routing.full_system1(2, 3, 0), 0.0, profile)
    expected = torch.tensor([9.0, 12.0]) * profile.E_AC_pJ / 1e6
    assert torch.allclose(charged.terms_uj["s1_synaptic"], expected, rtol=1e-6, atol=0)
    assert charged.terms_uj["s1_dense"].tolist() == [0.0, 0.0]


def test_direct_encoding_of_the_same_frame_would_charge_dense_macs():
    # The contrast: an analog input into the same layer is 4 × 3 MACs every step, events or not.
    spec = System1Spec(input_shape=(4,), n_classes=2, hidden=(3,), timesteps=3, encoding="direct")
    run = System1(spec).run(torch.zeros(1, 4))
    assert run.dense_macs[0, :, 0].tolist() == [12.0, 12.0, 12.0]


@pytest.mark.parametrize("grad", [False, True])
def test_conv_first_layer_counts_border_fan_out_per_event(grad):
    # 2-channel 4×4 frames through a 3×3, padding-1 conv with 2 output channels: an event in a corner
    # reaches 2×2 positions × 2 channels = 8 synapses, in the centre 3×3 × 2 = 18, on an edge 2×3 × 2 = 12,
    # whatever its polarity channel.
    spec = System1Spec(
        input_shape=(3, 2, 4, 4), n_classes=2, arch="conv", conv_channels=(2,), hidden=(), timesteps=3, encoding="events"
    )
    model = System1(spec)
    frames = torch.zeros(1, 3, 2, 4, 4)
    frames[0, 0, 0, 0, 0] = 1.0  # corner, ON
    frames[0, 1, 1, 1, 2] = 1.0  # centre, OFF
    frames[0, 2, 0, 0, 0] = 1.0  # corner and edge at step 2
    frames[0, 2, 1, 0, 2] = 1.0
    with torch.set_grad_enabled(grad):
        run = model.run(frames)
    assert run.synaptic_ops[0, :, 0].tolist() == [8.0, 18.0, 8.0 + 12.0]
    assert float(run.dense_macs.abs().sum()) == 0.0
