"""Event-driven synapses: the same currents and gradients as a dense linear layer."""

import pytest
import torch
from torch import nn

from fastslow.spiking.synapses import conv_channels_last, spike_linear


def _needs_compiled_kernels():
    """Skip where the compiled CPU kernels cannot run (numba missing)."""
    from fastslow.spiking import _cpu_kernels

    if not _cpu_kernels.cpu_kernels_available():
        pytest.skip("the compiled CPU kernels need numba (the cpu extra)")


def _layer_and_spikes(density: float, rows: int = 64, seed: int = 0) -> tuple[nn.Linear, torch.Tensor]:
    torch.manual_seed(seed)
    return nn.Linear(200, 130), (torch.rand(rows, 200) < density).float()


def test_event_path_equals_dense_linear():
    layer, spikes = _layer_and_spikes(0.03)
    assert torch.allclose(spike_linear(spikes, layer), layer(spikes), atol=1e-6)


def test_mixed_batch_sparse_and_dense_rows():
    layer, spikes = _layer_and_spikes(0.03)
    spikes[::3] = (torch.rand(len(spikes[::3]), 200) < 0.5).float()  # every third row is dense
    assert torch.allclose(spike_linear(spikes, layer), layer(spikes), atol=1e-6)


def test_a_sparse_rows_result_does_not_depend_on_its_batch():
    # What lets a batch shrink as inputs stop early without changing anyone's spikes. (Dense rows
    # are a BLAS matmul's, whose rounding, as nn.Linear's, may depend on the batch size.)
    layer, spikes = _layer_and_spikes(0.05, rows=96)
    spikes[::4] = (torch.rand(len(spikes[::4]), 200) < 0.5).float()
    sparse = torch.ones(96, dtype=torch.bool)
    sparse[::4] = False
    full, part = spike_linear(spikes, layer), spike_linear(spikes[10:40], layer)
    assert torch.equal(full[10:40][sparse[10:40]], part[sparse[10:40]])
    assert torch.allclose(full[10:40], part, atol=1e-6)
    assert torch.equal(
        full.view(3, 32, 130)[sparse.view(3, 32)], spike_linear(spikes.view(3, 32, 200), layer)[sparse.view(3, 32)]
    )


@pytest.mark.parametrize("mixed", [False, True])
def test_gradients_equal_the_dense_layers(mixed):
    layer, spikes = _layer_and_spikes(0.03)
    if mixed:  # every third row dense: both parts in one node
        spikes[::3] = (torch.rand(len(spikes[::3]), 200) < 0.5).float()
    spikes.requires_grad_(True)
    weights = torch.randn(64, 130)
    (spike_linear(spikes, layer) * weights).sum().backward()
    event = (spikes.grad.clone(), layer.weight.grad.clone(), layer.bias.grad.clone())
    spikes.grad = None
    layer.zero_grad()
    (layer(spikes) * weights).sum().backward()
    for ours, reference in zip(event, (spikes.grad, layer.weight.grad, layer.bias.grad)):
        assert torch.allclose(ours, reference, atol=1e-5)


def test_density_zero_is_the_dense_layer_exactly():
    layer, spikes = _layer_and_spikes(0.03)
    assert torch.equal(spike_linear(spikes, layer, event_density=0.0), layer(spikes))


def test_graded_inputs_are_weighted():
    layer, spikes = _layer_and_spikes(0.03)
    graded = spikes * torch.rand_like(spikes) * 3
    assert torch.allclose(spike_linear(graded, layer), layer(graded), atol=1e-5)


def test_narrow_layers_stay_dense():
    # A 10-wide readout gains nothing from events: finding them costs more than the matmul.
    torch.manual_seed(0)
    layer, spikes = nn.Linear(200, 10), (torch.rand(64, 200) < 0.03).float()
    assert torch.equal(spike_linear(spikes, layer), layer(spikes))


def test_a_changed_weight_is_used_at_once():
    # The transposed weights the event path keeps must follow an optimiser's in-place update.
    layer, spikes = _layer_and_spikes(0.03)
    spike_linear(spikes, layer)
    with torch.no_grad():
        layer.weight.mul_(2.0)
    assert torch.allclose(spike_linear(spikes, layer), layer(spikes), atol=1e-6)


@pytest.mark.parametrize("in_channels", [1, 3])
def test_conv_channels_last_is_the_convolution_in_channels_last_memory(in_channels):
    """One-channel inputs take the im2col matmul on CPU; values and gradients are the convolution's."""
    torch.manual_seed(0)
    conv = nn.Conv2d(in_channels, 5, 3, padding=1)
    maps = torch.rand(4, in_channels, 9, 7, requires_grad=True)
    out = conv_channels_last(maps, conv)
    reference = conv(maps)
    assert out.shape == reference.shape and out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, reference)
    grads = torch.autograd.grad(out.square().sum(), (maps, conv.weight, conv.bias))
    torch.testing.assert_close(grads, torch.autograd.grad(reference.square().sum(), (maps, conv.weight, conv.bias)))


def test_compiled_inference_equals_the_autograd_event_path(monkeypatch):
    """Without gradients on CPU, the numba event sum gives the autograd path's currents: the same bits
    for spikes (sparse rows summed in the same order, dense rows the same matmul), and a sparse row's
    result still does not depend on its batch."""
    _needs_compiled_kernels()
    from fastslow.spiking import _cpu_kernels

    layer, spikes = _layer_and_spikes(0.05, rows=96)
    spikes[::4] = (torch.rand(len(spikes[::4]), 200) < 0.5).float()  # a quarter of the rows dense
    graded = spikes * torch.rand_like(spikes) * 3
    calls = []
    original = _cpu_kernels.event_linear_inference
    monkeypatch.setattr(_cpu_kernels, "event_linear_inference", lambda *args: (calls.append(1), original(*args))[1])
    with torch.no_grad():
        assert _cpu_kernels.cpu_kernels_available()
        compiled = [spike_linear(inputs, layer) for inputs in (spikes, graded, spikes[1::4], spikes[::4])]  # "auto": numba here
        part = spike_linear(spikes[10:40], layer, backend="numba")
        assert len(calls) == 5
        readout = nn.Linear(200, 10)  # narrow: dense in inference too, as in training (the same spikes)
        assert torch.equal(spike_linear(spikes, readout), readout(spikes)) and len(calls) == 5
        reference = [spike_linear(inputs, layer, backend="torch") for inputs in (spikes, graded, spikes[1::4], spikes[::4])]
        assert len(calls) == 5
    for index, (ours, theirs) in enumerate(zip(compiled, reference)):
        if index == 1:  # graded values: each event's product rounds as embedding_bag's may not
            torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-5)
        else:
            assert torch.equal(ours, theirs), index
    sparse = torch.ones(96, dtype=torch.bool)
    sparse[::4] = False
    assert torch.equal(compiled[0][10:40][sparse[10:40]], part[sparse[10:40]])
