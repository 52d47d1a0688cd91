"""The fused CUDA kernels (Triton) against the torch path: on a GPU where there is one, and on the CPU
in Triton's interpreter (in a subprocess: the interpreter is chosen when the kernels are defined)."""

from __future__ import annotations

import pytest
import torch

from fastslow.spiking import LIFParams, LIFState
from fastslow.spiking.backends import fused_lif_multistep, fused_lif_multistep_pooled, select_backend, unavailable_reason


def _forward_and_grads(fn, currents, v0, params, weights, backend):
    """The outputs of ``fn`` on ``backend`` and the gradients of a weighted sum of them w.r.t. currents and v0."""
    currents, v0 = currents.detach().requires_grad_(), v0.detach().requires_grad_()
    *outputs, state = fn(currents, LIFState(v0), params, backend=backend)
    differentiable = [outputs[0], state.v] if weights[1] is not None else [outputs[0]]
    loss = sum((out * w).sum() for out, w in zip(differentiable, weights))
    return [*outputs, state.v], torch.autograd.grad(loss, (currents, v0))


def check_kernels_match_torch_path(device: str) -> None:
    """Spikes, pooled spikes, counts and potentials equal the torch path bit for bit (infinities and
    NaN included); gradients equal it up to float rounding: both resets and surrogates, with and
    without a gradient on the last potential, odd map sizes, T = 1, a constant current over T."""
    generator = torch.Generator().manual_seed(3)
    rand = lambda *shape: torch.randn(*shape, generator=generator).to(device)  # noqa: E731
    for reset in ("zero", "subtract"):
        for surrogate in ("fast_sigmoid", "arctan"):
            params = LIFParams(beta=0.85, threshold=0.6, reset=reset, surrogate=surrogate, slope=5.0)
            cases = [
                (fused_lif_multistep, (6, 5, 37)),
                (fused_lif_multistep, (1, 3, 8)),
                (fused_lif_multistep_pooled, (4, 3, 6, 6, 5)),
                (fused_lif_multistep_pooled, (5, 2, 7, 5, 3)),
                (fused_lif_multistep_pooled, (1, 2, 4, 4, 2)),
            ]
            for fn, shape in cases:
                currents, v0 = rand(*shape) * 1.5 + 0.2, rand(*shape[1:])
                assert unavailable_reason("triton", currents.device, currents.dtype, True, currents.numel()) is None
                out_shape = fn(currents, LIFState(v0), params, backend="triton")[0].shape
                for weights in ((rand(*out_shape), rand(*shape[1:])), (rand(*out_shape), None)):
                    fused, fused_grads = _forward_and_grads(fn, currents, v0, params, weights, "triton")
                    reference, reference_grads = _forward_and_grads(fn, currents, v0, params, weights, "torch")
                    for a, b in zip(fused, reference):
                        assert torch.equal(a, b), (fn.__name__, shape, reset, surrogate)
                    for a, b in zip(fused_grads, reference_grads):
                        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
                # From rest (no state: the kernels start from zero without reading one), with each input's
                # spike count per step added into a buffer: in inference and in training.
                for grad in (False, True):
                    results = []
                    for backend in ("triton", "torch"):
                        with torch.set_grad_enabled(grad):
                            inputs = currents.detach().requires_grad_(grad)
                            counts, fanned = torch.ones(shape[:2], device=device), torch.ones(shape[:2], device=device)
                            extra = {"counts": counts, "backend": backend}
                            if fn is fused_lif_multistep_pooled:  # whole fan-outs per pooled position, added into fanned
                                fanout = torch.arange(1.0, (shape[2] // 2) * (shape[3] // 2) + 1, device=device)
                                extra["next_synaptic_ops"] = (fanout, fanned)
                            outputs = fn(inputs, None, params, **extra)
                            grads = torch.autograd.grad(outputs[0].sum(), inputs) if grad else ()
                            results.append([*outputs[:-1], outputs[-1].v, counts, fanned, *grads])
                    for a, b in zip(*results):
                        torch.testing.assert_close(a, b, rtol=1e-5 if grad else 0, atol=1e-5 if grad else 0)
                    if fn is fused_lif_multistep:
                        assert torch.equal(results[0][2], 1 + results[0][0].detach().flatten(2).sum(2))
                    else:
                        per_position = results[0][0].detach().sum(-1).flatten(2)
                        assert (
                            torch.equal(results[0][4], 1 + per_position @ fanout) and results[0][4].sum() > results[0][4].numel()
                        )
                # Inference (no potential record), with infinities and NaN, and a constant current over T.
                special = currents.clone()
                special.view(-1)[[1, 7, 11]] = torch.tensor([float("inf"), float("-inf"), float("nan")], device=device)
                for inputs in (special, currents[:1].expand_as(currents)):
                    with torch.no_grad():
                        fused = fn(inputs, LIFState(v0), params, backend="triton")
                        reference = fn(inputs, LIFState(v0), params, backend="torch")
                    for a, b in zip(fused[:-1] + (fused[-1].v,), reference[:-1] + (reference[-1].v,)):
                        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


def check_system1_matches_torch_path(device: str) -> None:
    """A conv System 1 trained and run with the kernels: the same logits and spike rates as the torch
    path, bit for bit, and the same parameter gradients up to float rounding."""
    from fastslow.spiking import LIFParams as Params
    from fastslow.systems import System1, System1Spec

    spec = System1Spec(
        input_shape=(1, 12, 12),
        n_classes=4,
        arch="conv",
        conv_channels=(4, 6),
        hidden=(16,),
        timesteps=3,
        encoding="direct",
        lif=Params(beta=0.9, threshold=0.5, reset="zero"),
    )
    torch.manual_seed(0)
    model = System1(spec).to(device)
    x, y = torch.rand(5, 1, 12, 12, device=device), torch.tensor([0, 1, 2, 3, 1], device=device)

    def run(backend):
        model.requested_backend = backend
        assert model.backend == backend  # training, gradients on
        model.zero_grad(set_to_none=True)
        out = model.run(x)
        torch.nn.functional.cross_entropy(out.final_logits, y).backward()
        return out, [p.grad.clone() for p in model.parameters()]

    fused, fused_grads = run("triton")
    reference, reference_grads = run("torch")
    for field in ("step_outputs", "spike_rates", "synaptic_ops", "dense_macs"):
        assert torch.equal(getattr(fused, field), getattr(reference, field)), field
    for a, b in zip(fused_grads, reference_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    if device == "cuda":  # what "auto" picks there, training and inference
        model.requested_backend = "auto"
        assert model.resolve_backend(requires_grad=True) == model.resolve_backend(requires_grad=False) == "triton"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_cuda_kernels_match_the_torch_path_on_gpu():
    check_kernels_match_torch_path("cuda")
    check_system1_matches_torch_path("cuda")


def test_cuda_kernels_match_the_torch_path_in_triton_interpreter(in_triton_interpreter):
    in_triton_interpreter(__file__, "check_kernels_match_torch_path('cpu')", "check_system1_matches_torch_path('cpu')")


def test_auto_never_picks_triton_where_it_does_not_apply(monkeypatch):
    """ "auto" picks Triton for CUDA float32 only: not for CPU tensors, even in Triton's interpreter
    (someone interpreting their own Triton code keeps fastslow's CPU backends), not for float64,
    not past 2^31 elements; asked for by name there, it raises."""
    pytest.importorskip("triton", reason="Triton is not installed (CUDA builds of torch ship it; the test extra adds it)")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert select_backend("cpu", torch.float32, True, "auto") == "torch"
    assert select_backend("cpu", torch.float32, False, "triton") == "triton"  # the interpreter, by name only
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(
        ValueError, match=r"backend 'triton' cannot run this call: it runs CUDA tensors .* Available here: 'torch'"
    ):
        select_backend("cpu", torch.float32, True, "triton")
    assert select_backend("cuda", torch.float64, True, "auto") == "torch"
    assert select_backend("cuda", torch.float32, True, "auto", numel=2**31) == "torch"
    assert select_backend("cuda", torch.float32, True, "auto") == "triton"
    with pytest.raises(ValueError, match="float32 tensors, not torch.float64"):
        select_backend("cuda", torch.float64, False, "triton")
