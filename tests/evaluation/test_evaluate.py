"""Strategy sweeps over recorded runs: every swept point keeps its own name."""

import torch

from fastslow.energy import load_profile
from fastslow.evaluation.evaluate import evaluate_strategies
from fastslow.policies import ConfidencePolicy, Seenn1, System1Alone, System2Alone, SystemOutputs
from fastslow.systems.records import S1Record


def _outputs(n: int = 50, steps: int = 4, classes: int = 3) -> SystemOutputs:
    g = torch.Generator().manual_seed(0)
    step_outputs = torch.randn(steps, 1, n, classes, generator=g) * 8
    record = S1Record.from_step_outputs(
        step_outputs,
        synaptic_ops=torch.rand(2, steps, n, generator=g) * 100,
        dense_macs=torch.zeros(2, steps, n),
        neuron_updates=torch.tensor([16.0, 3.0]),
        spike_rates=torch.rand(1, steps, n, generator=g),
        exit_layers=(0,),
    )
    return SystemOutputs(
        record,
        steps,
        torch.rand(n, 4, generator=g),
        s2_macs=1000,
        s2_logits=torch.randn(n, classes, generator=g),
        labels=torch.randint(0, classes, (n,), generator=g),
    )


def test_thresholds_that_differ_past_six_digits_keep_distinct_names():
    thresholds = (0.99999, 0.999999, 0.9999999)
    policies = [System1Alone(), System2Alone()] + [ConfidencePolicy(t) for t in thresholds]
    policies += [Seenn1(t, escalate) for escalate in (False, True) for t in thresholds]
    results = evaluate_strategies(_outputs(), load_profile("cmos45nm"), policies)
    names = [r.name for r in results]
    assert len(names) == len(set(names))
    assert {"confidence@0.9999999", "seenn1@0.999999", "seenn1@0.9999999+s2"} <= set(names)


def test_collect_outputs_refuses_bad_labels_batches_and_systems():
    import pytest
    from torch import nn

    from fastslow.errors import DataError
    from fastslow.evaluation.evaluate import collect_outputs
    from fastslow.systems import System1, System1Spec

    torch.manual_seed(0)
    s1 = System1(System1Spec(input_shape=(6,), n_classes=3, hidden=(8,), timesteps=2))
    s2 = nn.Linear(6, 3)
    x, y = torch.rand(5, 6), torch.tensor([0, 1, 2, 1, 0])
    assert collect_outputs(s1, s2, x, y, 18).s2_logits.shape == (5, 3)
    cases = [
        ((x, y + 3, 18), DataError, r"0\.\.2"),
        ((x, y - 1, 18), DataError, r"0\.\.2"),
        ((x, y[:4], 18), DataError, "4 labels for 5"),
        ((x, y.float(), 18), DataError, "integer"),
        ((x[:0], y[:0], 18), DataError, "empty"),
        ((x, y, -1), ValueError, "s2_macs"),
    ]
    for (xs, ys, macs), error, named in cases:
        with pytest.raises(error, match=named):
            collect_outputs(s1, s2, xs, ys, macs)
    with pytest.raises(ValueError, match=r"System 2 returns \[5, 7\]"):
        collect_outputs(s1, nn.Linear(6, 7), x, y, 18)
