"""The ``events`` encoding: System 1 takes frame t of [B, T, ...] at step t; System 2 and the
SEENN-II policy read the frames averaged over T."""

import pytest
import torch

from fastslow.policies.seenn2 import policy_input, pooling_adds
from fastslow.spiking import encode_step
from fastslow.systems import System1, System1Spec, System2Spec, build_system2


def test_encode_step_gives_frame_t():
    frames = torch.rand(2, 5, 3)
    for t in range(5):
        assert torch.equal(encode_step(frames, t, 5, "events"), frames[:, t])


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_events_run_equals_the_latency_code_of_the_same_spikes(arch):
    # Reference: a latency code sends a spike at step 0 exactly where x = 1 and none where x = 0.
    # Frames holding that image at step 0 and nothing after must give the same run, bit for bit.
    steps, frame = 4, (2, 6, 6)
    common = dict(
        n_classes=3, arch=arch, hidden=(16,), conv_channels=(4,), timesteps=steps, exit_heads=(0,) if arch == "conv" else ()
    )
    torch.manual_seed(0)
    events = System1(System1Spec(input_shape=(steps, *frame), encoding="events", **common))
    latency = System1(System1Spec(input_shape=frame, encoding="latency", **common))
    latency.load_state_dict(events.state_dict())
    image = (torch.rand(5, *frame) < 0.4).float()
    frames = torch.zeros(5, steps, *frame)
    frames[:, 0] = image
    with torch.no_grad():
        a, b = events.run(frames), latency.run(image)
    for name in ("logits", "synaptic_ops", "dense_macs", "spike_rates"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_events_stepwise_equals_multistep_and_fewer_steps_are_a_prefix():
    torch.manual_seed(1)
    model = System1(System1Spec(input_shape=(6, 10), n_classes=2, hidden=(8, 8), timesteps=6, encoding="events", exit_heads=(0,)))
    frames = (torch.rand(3, 6, 10) < 0.3).float()
    multi, single = model.run(frames), model.run(frames, mode="stepwise")
    assert torch.allclose(multi.logits, single.logits) and torch.equal(multi.synaptic_ops, single.synaptic_ops)
    short = model.run(frames, timesteps=4)
    assert torch.equal(short.synaptic_ops, multi.synaptic_ops[:, :4])
    with pytest.raises(ValueError, match="at most 6 steps"):
        model.run(frames, timesteps=7)


def test_events_spec_needs_t_frames():
    with pytest.raises(ValueError, match="T = timesteps"):
        System1Spec(input_shape=(4, 2, 8, 8), n_classes=2, timesteps=5, encoding="events")
    spec = System1Spec(input_shape=(5, 2, 8, 8), n_classes=2, timesteps=5, encoding="events", arch="conv")
    assert spec.frame_shape == (2, 8, 8)
    assert System1(spec).layers[0].op.in_channels == 2


def test_system2_averages_the_frames_over_t():
    torch.manual_seed(2)
    spec = System2Spec(input_shape=(4, 2, 34, 34), n_classes=10, frames=True)
    assert spec.resolved_arch() == "lenet5"  # sized for one 2×34×34 frame
    model = build_system2(spec).eval()
    frames = (torch.rand(3, 4, 2, 34, 34) < 0.2).float()
    body = torch.nn.Sequential(*list(model)[1:])
    assert torch.equal(model(frames), body(frames.mean(1)))
    assert float(frames.mean(1).max()) <= 1.0


def test_seenn2_reads_the_pooled_frame_average():
    frames = torch.rand(2, 4, 2, 14, 14)
    assert torch.equal(policy_input(frames), policy_input(frames.mean(1)))
    assert policy_input(frames).shape == (2, 2 * 7 * 7)
    assert pooling_adds((4, 2, 14, 14)) == 4 * 2 * 14 * 14


@pytest.mark.parametrize("side", [34, 128])
def test_conv_system1_on_two_channel_event_frames(side):
    # N-MNIST's 2×34×34 and DVS Gesture's full 2×128×128 sensor: a conv System 1 builds and runs on them.
    spec = System1Spec(input_shape=(2, 2, side, side), n_classes=11, arch="conv", hidden=(16,), timesteps=2, encoding="events")
    model = System1(spec)
    assert model.layers[0].op.in_channels == 2 and model.layers[0].out_shape == (8, side, side)
    frames = (torch.rand(2, 2, 2, side, side, generator=torch.Generator().manual_seed(3)) < 0.01).float()
    with torch.no_grad():
        run = model.run(frames)
    assert run.final_logits.shape == (2, 11)
    # Layer 0's accumulates: every spike reaches at most 3×3 positions × 8 channels, and at least 2×2 × 8.
    spikes = frames.sum(dim=(2, 3, 4)).T  # [T, B]
    assert bool((run.synaptic_ops[0] <= spikes * 72).all()) and bool((run.synaptic_ops[0] >= spikes * 32).all())
