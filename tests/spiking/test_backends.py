"""The backend selector: "auto" picks as documented, a named backend runs or raises, never falls back,
and every backend gives the pure reference's spikes."""

import pytest
import torch

from fastslow.spiking import LIFParams, LIFState, _cpu_kernels, lif_multistep
from fastslow.spiking.backends import (
    available_backends,
    fused_lif_multistep,
    fused_lif_multistep_pooled,
    select_backend,
)
from fastslow.systems import System1, System1Spec

NUMBA = _cpu_kernels.cpu_kernels_available()
needs_numba = pytest.mark.skipif(not NUMBA, reason="the numba backend needs numba (the cpu extra)")


def _without_numba(monkeypatch):
    monkeypatch.setattr(_cpu_kernels, "cpu_kernels_available", lambda: False)


def _refuse(monkeypatch, *names):
    """Make the compiled kernels ``names`` fail if anything calls them."""

    def refuse(*args, **kwargs):
        raise AssertionError("a compiled kernel ran where the torch backend was asked for")

    for name in names:
        monkeypatch.setattr(_cpu_kernels, name, refuse)


def _count_calls(monkeypatch, name):
    calls = []
    original = getattr(_cpu_kernels, name)
    monkeypatch.setattr(_cpu_kernels, name, lambda *args, **kwargs: calls.append(1) or original(*args, **kwargs))
    return calls


def test_auto_picks_as_documented(monkeypatch):
    """CPU float32 inference: numba where installed; gradients, another dtype or no numba: torch;
    CUDA float32: triton where installed (else torch); CUDA float64: torch."""
    assert select_backend("cpu", torch.float32, False) == ("numba" if NUMBA else "torch")
    assert select_backend("cpu", torch.float32, True) == "torch"
    for dtype in (torch.float64, torch.bfloat16, torch.float16):
        assert select_backend("cpu", dtype, False) == "torch"
    try:
        import triton  # noqa: F401

        has_triton = True
    except ImportError:
        has_triton = False
    assert select_backend("cuda", torch.float32, True) == ("triton" if has_triton else "torch")
    assert select_backend("cuda", torch.float32, False) == ("triton" if has_triton else "torch")
    assert select_backend("cuda", torch.float64, False) == "torch"
    _without_numba(monkeypatch)
    assert select_backend("cpu", torch.float32, False) == "torch"


def test_a_named_backend_that_cannot_run_raises_naming_the_available_ones(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match=r"backend 'triton' cannot run this call: it runs CUDA tensors.*Available here: 'torch'"):
        select_backend("cpu", torch.float32, True, "triton")
    with pytest.raises(ValueError, match=r"backend 'numba' cannot run this call: it runs inference only \(no gradients\)"):
        select_backend("cpu", torch.float32, True, "numba")
    with pytest.raises(ValueError, match=r"backend 'numba' cannot run this call: it runs CPU tensors, not cuda ones"):
        select_backend("cuda", torch.float32, False, "numba")
    with pytest.raises(ValueError, match=r"float32 tensors, not torch.float64"):
        select_backend("cpu", torch.float64, False, "numba")
    with pytest.raises(ValueError, match=r"unknown backend 'cupy'"):
        select_backend("cpu", torch.float32, False, "cupy")
    _without_numba(monkeypatch)
    with pytest.raises(ValueError, match=r"numba is not installed .*Available here: 'torch' \(or 'auto'"):
        select_backend("cpu", torch.float32, False, "numba")
    assert available_backends("cpu") == ["torch"]
    with torch.no_grad(), pytest.raises(ValueError, match="numba is not installed"):
        fused_lif_multistep(torch.rand(3, 2, 5), None, LIFParams(), backend="numba")


@needs_numba
def test_system1_runs_the_backend_it_is_told_and_says_which():
    spec = System1Spec(input_shape=(12,), n_classes=3, hidden=(16,), timesteps=3, encoding="direct")
    torch.manual_seed(0)
    model = System1(spec)
    x = torch.rand(4, 12)
    assert model.requested_backend == "auto"
    assert model.backend == "torch"  # gradients on (the parameters require them)
    with torch.no_grad():
        assert model.backend == "numba"
    assert model.resolve_backend(requires_grad=False) == "numba" and model.resolve_backend(requires_grad=True) == "torch"
    model.requested_backend = "torch"
    with torch.no_grad():
        assert model.backend == "torch"
    model.requested_backend = "numba"
    with pytest.raises(ValueError, match=r"backend 'numba' cannot run this call: it runs inference only"):
        model.run(x)  # training on numba: refused, not run on torch
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        model.requested_backend = "cuda"
    with pytest.raises(ValueError, match="unknown backend 'fast'"):
        System1Spec(input_shape=(12,), n_classes=3, backend="fast")
    assert System1(spec, backend="torch").requested_backend == "torch"


@needs_numba
@pytest.mark.parametrize(
    "spec",
    [
        System1Spec(input_shape=(12,), n_classes=3, hidden=(200, 16), timesteps=4, encoding="direct"),
        System1Spec(input_shape=(12,), n_classes=3, hidden=(200, 16), timesteps=4, encoding="rate", readout="spike_count"),
        # a 3×3 map is too small to pool: an unpooled conv layer (currents [T, B, H, W, C])
        System1Spec(
            input_shape=(2, 8, 8), n_classes=3, arch="conv", conv_channels=(4, 5), hidden=(), timesteps=3, encoding="direct"
        ),
        System1Spec(input_shape=(1, 3, 3), n_classes=3, arch="conv", conv_channels=(4,), hidden=(), timesteps=3, encoding="rate"),
    ],
    ids=["mlp-direct", "mlp-rate-count", "conv-pooled", "conv-unpooled"],
)
def test_the_torch_override_runs_no_compiled_kernel_and_records_what_numba_records(monkeypatch, spec):
    torch.manual_seed(0)
    model = System1(spec).eval()
    x = torch.rand(5, *spec.input_shape)
    calls = {
        name: _count_calls(monkeypatch, name)
        for name in ("lif_inference", "lif_pool_inference", "mlp_inference", "event_linear_inference")
    }
    with torch.no_grad():
        model.requested_backend = "numba"
        compiled = model.run(x, generator=torch.Generator().manual_seed(1))
        assert sum(len(c) for c in calls.values()) > 0
        _refuse(monkeypatch, *calls)
        model.requested_backend = "torch"
        reference = model.run(x, generator=torch.Generator().manual_seed(1))
    for field in ("synaptic_ops", "dense_macs", "spike_rates"):
        assert torch.equal(getattr(compiled, field), getattr(reference, field)), field
    torch.testing.assert_close(compiled.step_outputs, reference.step_outputs, rtol=0, atol=1e-5)


@pytest.mark.parametrize("shape", [(6, 5, 37), (1, 3, 8), (4, 3, 5, 3, 4)], ids=["flat", "one-step", "maps"])
@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_the_pure_lif_multistep_matches_every_backend(shape, reset):
    """lif_multistep (torch, no buffers) and the fused entry point on each backend that can run here:
    the same spikes and state bit for bit, from rest and from a state, a constant current included."""
    params = LIFParams(beta=0.85, threshold=0.6, reset=reset)
    generator = torch.Generator().manual_seed(7)
    varied = torch.randn(*shape, generator=generator) * 1.5 + 0.2
    constant = varied[:1].expand_as(varied)
    v0 = torch.randn(*shape[1:], generator=generator)
    backends = [b for b in available_backends("cpu", requires_grad=False) if b != "triton"]
    assert "torch" in backends
    for currents in (varied, constant):
        for state in (None, LIFState(v0)):
            with torch.no_grad():
                spikes, final = lif_multistep(currents, state, params)
                assert spikes.shape == currents.shape and final.v.shape == currents.shape[1:]
                for backend in backends:
                    counts = torch.zeros(shape[:2])
                    fused, fused_final = fused_lif_multistep(currents, state, params, backend=backend, counts=counts)
                    assert torch.equal(fused, spikes), backend
                    assert torch.equal(fused_final.v, final.v), backend
                    assert torch.equal(counts, spikes.flatten(2).sum(2)), backend
    # with gradients, the pure function and the torch backend are one autograd node: the same gradients
    leaf = varied.clone().requires_grad_()
    spikes, final = lif_multistep(leaf, LIFState(v0), params)
    grad = torch.autograd.grad(spikes.sum() + final.v.sum(), leaf)[0]
    fused, fused_final = fused_lif_multistep(leaf, LIFState(v0), params, backend="torch")
    assert torch.equal(torch.autograd.grad(fused.sum() + fused_final.v.sum(), leaf)[0], grad)


@needs_numba
def test_pooled_entry_point_respects_the_override(monkeypatch):
    currents = torch.rand(3, 2, 6, 6, 4) * 2
    with torch.no_grad():
        compiled = fused_lif_multistep_pooled(currents, None, LIFParams(), backend="numba")
        _refuse(monkeypatch, "lif_pool_inference")
        reference = fused_lif_multistep_pooled(currents, None, LIFParams(), backend="torch")
        with pytest.raises(AssertionError, match="a compiled kernel ran"):
            fused_lif_multistep_pooled(currents, None, LIFParams())  # "auto" picks numba here
    for a, b in zip(compiled[:2] + (compiled[2].v,), reference[:2] + (reference[2].v,)):
        assert torch.equal(a, b)


def test_specs_saved_without_a_backend_load_with_auto():
    spec = System1Spec(input_shape=(12,), n_classes=3, backend="torch")
    data = spec.to_dict()
    assert data["backend"] == "torch" and System1Spec.from_dict(data) == spec
    del data["backend"]  # a checkpoint from before the key
    assert System1Spec.from_dict(data).backend == "auto"
