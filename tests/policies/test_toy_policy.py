"""The registry's promise: a family defined outside the package (here, in this file) is fitted,
evaluated, checkpointed, reloaded and served without editing any module of fastslow."""

import json

import pytest
import torch
from torch import nn

import fastslow
from fastslow.cli import main
from fastslow.policies import POLICIES, Decision, Policy, Routing, SystemOutputs, register_policy


class _Cutoff(nn.Module):
    """The toy's trained state: a confidence cutoff, stored as a buffer (checkpointed as safetensors)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("cutoff", torch.zeros(()))


class StopAtStep(Policy):
    """Stop every input after ``step`` steps; escalate those whose max softmax is below the cutoff
    fitted on the router split (the quantile that escalates a share ``share``)."""

    kind = "toy_stop_at_step"
    knob_order = ("step", True)

    def __init__(self, step: int, share: float, module: _Cutoff | None = None) -> None:
        self.step, self.share, self.module = step, share, module or _Cutoff()

    @property
    def name(self) -> str:
        return f"toy@step={self.step}"

    @property
    def knob(self) -> dict:
        return {"step": self.step}

    def to_config(self) -> dict:
        return {"step": self.step, "share": self.share}

    @classmethod
    def from_config(cls, config, state=None):
        module = _Cutoff()
        module.load_state_dict(state)
        return cls(int(config["step"]), float(config["share"]), module)

    @classmethod
    def fit(cls, context):
        points = []
        for step in range(1, context.val.timesteps + 1):
            confidence = torch.softmax(context.val.s1.logits[step - 1, -1], -1).max(-1).values
            point = cls(step, 0.2)
            point.module.cutoff.fill_(float(torch.quantile(confidence, 0.2)))
            points.append(point)
        return points

    def decide(self, outputs: SystemOutputs) -> Decision:
        n = len(outputs)
        if outputs.steps_run < self.step:
            return Decision.undecided(n)
        confidence = torch.softmax(outputs.s1.logits[self.step - 1, -1], -1).max(-1).values
        steps = torch.full((n,), self.step, dtype=torch.long)
        routing = Routing(
            escalate=confidence < self.module.cutoff,
            timesteps=steps,
            exit_taken=torch.full((n,), outputs.last_exit, dtype=torch.long),
            policy_macs=torch.zeros(n),
        )
        return Decision.final(routing)


@pytest.fixture
def toy_registered():
    register_policy(StopAtStep)
    yield
    POLICIES.pop(StopAtStep.kind)


def test_a_policy_defined_outside_the_package_is_fitted_evaluated_checkpointed_reloaded_and_served(
    toy_registered, tiny_config, tmp_path
):
    text = tiny_config.read_text().replace("[system1]", 'policies = ["confidence", "toy_stop_at_step"]\n\n[system1]')
    tiny_config.write_text(text)
    out = tmp_path / "fit"
    assert main(["fit", "--data", "digits", "--out", str(out), "--config", str(tiny_config), "--device", "cpu", "--quiet"]) == 0
    results = json.loads((out / "results.json").read_text())
    by_name = {s["name"]: s for s in results["strategies"]}
    assert {"toy@step=1", "toy@step=2", "toy@step=3", "system1", "system2", "confidence@0.8"} <= set(by_name)
    assert not any(name.startswith(("seenn1", "router")) for name in by_name)  # only the families asked for
    assert by_name["toy@step=1"]["mean_timesteps"] == 1 and by_name["toy@step=1"]["family"] == "toy_stop_at_step"
    manifest = json.loads((out / "checkpoints" / "manifest.json").read_text())
    assert [e["kind"] for e in manifest["policies"]].count("toy_stop_at_step") == 3

    deployment = fastslow.load(out)  # reloaded through the registry
    toy = deployment.policy("toy@step=2")
    assert isinstance(toy, StopAtStep) and float(toy.module.cutoff) > 0
    predicted = tmp_path / "predicted"
    assert main(["predict", str(out), "--strategy", "toy@step=2", "--out", str(predicted), "--quiet"]) == 0
    summary = json.loads((predicted / "summary.json").read_text())
    for key in ("accuracy", "escalation_rate", "mean_timesteps", "energy_uj"):
        assert summary[key] == pytest.approx(by_name["toy@step=2"][key], rel=1e-5), key
    # Calibration orders its points by the knob the family declares.
    assert main(["calibrate", str(out), "--max-accuracy-drop", "0.2", "--quiet"]) == 0
    calibration = json.loads((out / "calibration.json").read_text())
    assert calibration["families"]["toy_stop_at_step"]["knobs_safest_first"] == ["toy@step=3", "toy@step=2", "toy@step=1"]


def test_a_kind_registered_twice_and_an_unregistered_checkpoint_are_refused(toy_registered, fitted_folder, tmp_path):
    class Other(StopAtStep):
        pass

    with pytest.raises(ValueError, match="already registered"):
        register_policy(Other)
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(fitted_folder, copy)
    manifest_path = copy / "checkpoints" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["policies"][0]["kind"] = "nobody_registered_this"
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(fastslow.FastslowError, match="not registered"):
        fastslow.load(copy)
