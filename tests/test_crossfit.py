"""The router's records out of fold ([router] data = "crossfit"), and fits that repeat bit for bit."""

import json

import numpy as np
import pytest
import torch
from conftest import TINY_CONFIG  # tests/conftest.py: the tiny fit's policy sections

from fastslow import load_config, pipeline
from fastslow.errors import DataError


def _tiny(tmp_path, router_lines: str = ""):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_CONFIG.replace("[router]\n", f"[router]\n{router_lines}"))
    return path


def test_crossfit_folds_partition_the_training_split_stratified():
    labels = np.repeat(np.arange(3), [6, 9, 12])
    held = pipeline.crossfit_folds(labels, 3, seed=0)
    assert sorted(np.concatenate(held).tolist()) == list(range(len(labels)))  # each input held out once
    for fold in held:
        assert np.bincount(labels[fold], minlength=3).tolist() == [2, 3, 4]
    assert [f.tolist() for f in pipeline.crossfit_folds(labels, 3, seed=0)] == [f.tolist() for f in held]
    with pytest.raises(DataError, match="cannot cross-fit 7 folds: a class has 6 training inputs"):
        pipeline.crossfit_folds(labels, 7, seed=0)


def test_crossfit_records_every_training_input_from_systems_that_never_saw_it(tmp_path, monkeypatch):
    trained: dict[int, torch.Tensor] = {}  # id(model) -> the inputs it trained on
    recorded: list[tuple[int, int, torch.Tensor, str]] = []  # (id System 1, id System 2, inputs, split)
    seen_by_policies = []
    alive = []  # every trained model, so that a freed fold's id is never reused by a later one
    train, outputs, fit_policies = pipeline._train, pipeline._outputs, pipeline.fit_policies

    def spy_train(progress, description, model, loss_fn, x, *args):
        alive.append(model)
        trained[id(model)] = x.clone()
        return train(progress, description, model, loss_fn, x, *args)

    def spy_outputs(system1, system2, s2_macs, x, y, config, device, *args, **kwargs):
        recorded.append((id(system1), id(system2), x.clone(), kwargs.get("split", args[-1] if args else "")))
        return outputs(system1, system2, s2_macs, x, y, config, device, *args, **kwargs)

    def spy_policies(config, val, *args):
        seen_by_policies.append(val)
        return fit_policies(config, val, *args)

    monkeypatch.setattr(pipeline, "_train", spy_train)
    monkeypatch.setattr(pipeline, "_outputs", spy_outputs)
    monkeypatch.setattr(pipeline, "fit_policies", spy_policies)
    config = load_config(_tiny(tmp_path, 'data = "crossfit"\nfolds = 3\n'), data="digits", device="cpu")
    config = config.model_copy(update={"policies": ["router"]})
    result = pipeline.fit(config, tmp_path / "run", progress=False, show_table=False)

    splits = pipeline.make_splits(config)
    x_train = splits.x_train
    assert len(splits.x_val) == 0 and result.payload["split"]["val"] == 0
    assert result.payload["router_data"]["source"] == "crossfit" and result.payload["router_data"]["folds"] == 3
    # The policies learn from every training input, in the training split's order, with its labels.
    (val,) = seen_by_policies
    assert len(val) == len(x_train) == result.payload["router_data"]["records"]
    assert torch.equal(val.labels, splits.y_train)
    held_out = [r for r in recorded if r[3] != "test"]
    assert len(held_out) == 3 and sum(len(r[2]) for r in held_out) == len(x_train)
    # Digits holds a few identical images; the check is on inputs whose image occurs once.
    rows = [row.numpy().tobytes() for row in x_train]
    unique = {row for row in rows if rows.count(row) == 1}
    for s1_id, s2_id, x, _ in held_out:
        evaluated = {row.numpy().tobytes() for row in x} & unique
        assert evaluated
        for model in (s1_id, s2_id):  # each fold's systems trained on the other folds only
            seen = {row.numpy().tobytes() for row in trained[model]}
            assert not evaluated & seen and len(seen) + len(x) == len(x_train)
    # The final systems trained on the whole training split and answer the test split.
    final = [r for r in recorded if r[3] == "test"]
    assert len(final) == 1 and torch.equal(trained[final[0][0]], trained[final[0][1]])
    assert len(trained[final[0][0]]) == len(x_train)
    assert id(result.system1) == final[0][0]


def test_crossfit_fit_evaluates_and_calibrates_on_the_test_split_only(tmp_path):
    from fastslow.cli import main

    out = tmp_path / "run"
    config = _tiny(tmp_path, 'data = "crossfit"\nfolds = 2\n')
    assert main(["fit", "--data", "digits", "--out", str(out), "--config", str(config), "--device", "cpu", "--quiet"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["split"] == {"train": 1437, "val": 0, "test": 360}
    assert results["router_data"]["records"] == 1437 and results["config"]["router"]["data"] == "crossfit"
    assert "trained on out-of-fold outputs of all 1437 training inputs (2 folds)" in (out / "report.md").read_text()
    assert main(["evaluate", str(out), "--quiet"]) == 0
    assert json.loads((out / "results.json").read_text())["strategies"] == results["strategies"]
    assert main(["calibrate", str(out), "--max-accuracy-drop", "0.05", "--quiet"]) == 0
    calibration = json.loads((out / "calibration.json").read_text())
    # Calibrated on part of the test split, which no system and no router learned from.
    assert calibration["calibration_size"] + calibration["held_out_size"] == results["split"]["test"]


def test_a_fit_repeats_bit_for_bit_with_the_same_seed(tmp_path):
    """Every strategy of results.json (accuracy, energy, exits) equal in two fits of one seed."""
    config = load_config(_tiny(tmp_path), data="digits", device="cpu", seed=3)
    first = pipeline.fit(config, tmp_path / "a", progress=False, show_table=False).payload
    second = pipeline.fit(config, tmp_path / "b", progress=False, show_table=False).payload
    assert first["strategies"] == second["strategies"]
    assert len(first["strategies"]) > 20  # every family ran, the learned ones included
    crossfit = load_config(_tiny(tmp_path, 'data = "crossfit"\nfolds = 2\n'), data="digits", device="cpu", seed=3)
    crossfit = crossfit.model_copy(update={"policies": ["router", "router_steps"]})
    runs = [pipeline.fit(crossfit, tmp_path / name, progress=False, show_table=False).payload for name in ("c", "d")]
    assert runs[0]["strategies"] == runs[1]["strategies"]
