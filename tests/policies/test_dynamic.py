"""Early stopping over timesteps and exits: decisions, and energy charged for exactly what ran."""

import torch

from fastslow.energy import s1_op_counts
from fastslow.policies.dynamic import cascade_routing, seenn1_confidence, seenn1_routing
from fastslow.policies.references import aet_oracle_routing
from fastslow.systems import System1, System1Spec


def _logits(per_step: list[list[float]]) -> torch.Tensor:
    """[T, E=1, N=1, C] cumulative means from per-step outputs."""
    outputs = torch.tensor(per_step)
    means = outputs.cumsum(0) / torch.arange(1, len(per_step) + 1)[:, None]
    return means[:, None, None, :]


def test_seenn1_stops_at_first_confident_step():
    logits = _logits([[0.0, 0.0], [3.0, 0.0], [3.0, 0.0], [3.0, 0.0]])
    conf = seenn1_confidence(logits[:, -1])[:, 0]
    # Cumulative sums: [0,0], [3,0], [6,0], [9,0] → softmax max 0.5, 0.953, 0.9975, ...
    assert conf[0] == 0.5 and 0.95 < conf[1] < 0.96
    routing = seenn1_routing(logits, threshold=0.99)
    assert routing.timesteps.tolist() == [3] and not routing.escalate.any()
    never = seenn1_routing(logits, threshold=0.99999999, escalate_unconfident=True)
    assert never.timesteps.tolist() == [4] and never.escalate.tolist() == [True]
    # A higher temperature flattens the softmax, so the same threshold needs more steps.
    assert seenn1_routing(logits, threshold=0.99, temperature=2.0).timesteps.item() == 4


def test_aet_oracle_stops_where_system1_is_first_right():
    logits = _logits([[1.0, 0.0], [0.0, 5.0], [0.0, 5.0]])
    assert aet_oracle_routing(logits, torch.tensor([1])).timesteps.tolist() == [2]
    assert aet_oracle_routing(logits, torch.tensor([0])).timesteps.tolist() == [1]


def test_energy_of_early_stop_equals_energy_of_a_shorter_run():
    torch.manual_seed(0)
    model = System1(System1Spec(input_shape=(16,), n_classes=3, hidden=(12, 8), timesteps=6, exit_heads=(0,), encoding="rate"))
    x = torch.rand(5, 16)
    full = model.run(x, generator=torch.Generator().manual_seed(3))
    for steps in (1, 3, 6):
        short = model.run(x, timesteps=steps, generator=torch.Generator().manual_seed(3))
        for exit_index in (0, 1):
            stopped = s1_op_counts(
                full.synaptic_ops,
                full.dense_macs,
                full.neuron_updates,
                model.exit_layers,
                torch.full((5,), steps),
                torch.full((5,), exit_index),
            )
            ran = s1_op_counts(
                short.synaptic_ops,
                short.dense_macs,
                short.neuron_updates,
                model.exit_layers,
                torch.full((5,), steps),
                torch.full((5,), exit_index),
            )
            for a, b in zip(stopped, ran):
                assert torch.equal(a, b)
        assert torch.allclose(short.logits[-1], full.logits[steps - 1])


def test_cascade_leaves_at_first_confident_head_and_pays_every_head_checked():
    torch.manual_seed(0)
    model = System1(System1Spec(input_shape=(16,), n_classes=3, hidden=(12, 8), timesteps=4, exit_heads=(0,)))
    run = model.run(torch.rand(6, 16))
    routing = cascade_routing(run.logits, threshold=0.0)  # every input is confident at the first head
    assert routing.exit_taken.tolist() == [0] * 6 and routing.cascade
    deep = cascade_routing(run.logits, threshold=1.01)  # nobody is: all reach the last head
    assert deep.exit_taken.tolist() == [1] * 6
    shallow_ops = s1_op_counts(
        run.synaptic_ops, run.dense_macs, run.neuron_updates, model.exit_layers, routing.timesteps, routing.exit_taken, True
    )
    deep_ops = s1_op_counts(
        run.synaptic_ops, run.dense_macs, run.neuron_updates, model.exit_layers, deep.timesteps, deep.exit_taken, True
    )
    plain_deep = s1_op_counts(
        run.synaptic_ops, run.dense_macs, run.neuron_updates, model.exit_layers, deep.timesteps, deep.exit_taken, False
    )
    assert (shallow_ops[2] < deep_ops[2]).all()  # fewer neurons updated when leaving early
    assert (deep_ops[2] > plain_deep[2]).all()  # the shallow head's integrators were charged too
