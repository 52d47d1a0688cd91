"""System 1 inference replayed from CUDA graphs (GraphedSystem1): the eager run's bits."""

from __future__ import annotations

from dataclasses import fields

import pytest
import torch

from fastslow.spiking import LIFParams
from fastslow.systems import GraphedSystem1, S1Record, System1, System1Spec

SPECS = {
    "mlp": System1Spec(input_shape=(20,), n_classes=3, hidden=(16, 12), timesteps=4, encoding="direct", exit_heads=(0,)),
    "conv": System1Spec(
        input_shape=(1, 12, 12),
        n_classes=4,
        arch="conv",
        conv_channels=(4, 6),
        hidden=(16,),
        timesteps=3,
        encoding="direct",
        lif=LIFParams(beta=0.9, threshold=0.5, reset="zero"),
    ),
}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
@pytest.mark.parametrize("arch", sorted(SPECS))
def test_replayed_run_equals_the_eager_run(arch):
    torch.manual_seed(0)
    model = System1(SPECS[arch]).cuda().eval()
    graphed = GraphedSystem1(model, max_shapes=2)
    for batch in (5, 3, 5, 7):  # a new shape captures; a seen one replays; the oldest is dropped past max_shapes
        x = torch.rand(batch, *SPECS[arch].input_shape, device="cuda")
        replayed = graphed.run(x)
        with torch.no_grad():
            eager = model.run(x)
        assert replayed.exit_layers == eager.exit_layers
        for field in fields(S1Record):
            if field.name != "exit_layers":
                assert torch.equal(getattr(replayed, field.name), getattr(eager, field.name)), field.name
    assert len(graphed._graphs) == 2
    with torch.no_grad():  # a weight update in place is seen by the replay
        model.heads[-1].weight.mul_(2.0)
        assert torch.equal(graphed.run(x).step_outputs, model.run(x).step_outputs)


def test_graphs_refuse_cpu_inputs_and_random_encodings():
    with pytest.raises(ValueError, match="CUDA tensors"):
        GraphedSystem1(System1(SPECS["mlp"])).run(torch.rand(2, 20))
    rate = System1(System1Spec(input_shape=(20,), n_classes=3, hidden=(8,), timesteps=2, encoding="rate"))
    with pytest.raises(ValueError, match="deterministic encoding"):
        GraphedSystem1(rate)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
@pytest.mark.parametrize("arch", sorted(SPECS))
def test_replayed_training_step_equals_the_eager_one(arch):
    """Forward and backward replayed: the same records, and the parameters' gradients of two
    consecutive steps (an SGD update between them, seen by the replay) equal the eager ones."""
    torch.manual_seed(0)
    model = System1(SPECS[arch]).cuda()
    graphed = GraphedSystem1(model)
    x = torch.rand(6, *SPECS[arch].input_shape, device="cuda")
    y = torch.randint(0, SPECS[arch].n_classes, (6,), device="cuda")

    def step(run):
        model.zero_grad(set_to_none=True)
        out = run(x)
        torch.nn.functional.cross_entropy(out.final_logits, y).backward()
        return out.step_outputs.detach().clone(), out.spike_rates.clone(), [p.grad.clone() for p in model.parameters()]

    for _ in range(2):
        replayed = step(graphed.run)
        eager = step(model.run)
        assert torch.equal(replayed[0], eager[0]) and torch.equal(replayed[1], eager[1])
        for a, b in zip(replayed[2], eager[2]):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        with torch.no_grad():
            for p in model.parameters():
                p.sub_(0.1 * p.grad)
