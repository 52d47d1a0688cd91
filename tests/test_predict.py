"""`fastslow predict` and `fastslow.load`: every deployable strategy of a fit answers new data, and on
the fit's own test split it reproduces that strategy's results.json entry."""

import json

import numpy as np
import pytest

import fastslow
from fastslow.cli import main
from fastslow.policies import POLICIES


def _results(folder):
    return {s["name"]: s for s in json.loads((folder / "results.json").read_text())["strategies"]}


def test_every_deployable_strategy_reproduces_results_json(fitted_folder):
    from fastslow.pipeline import load_fit

    deployment = fastslow.load(fitted_folder)
    results = _results(fitted_folder)
    test = load_fit(fitted_folder).splits
    kinds = {p.kind for p in deployment.policies if p.deployable}
    assert kinds == {kind for kind, cls in POLICIES.items() if cls.deployable}  # every registered family is in the fit
    assert set(deployment.strategies) <= set(results)
    for strategy in deployment.strategies:
        answer = deployment.predict(test.x_test, strategy)
        expected = results[strategy]
        assert float((answer.predictions == test.y_test).float().mean()) == pytest.approx(expected["accuracy"], abs=1e-9), (
            strategy
        )
        assert float(answer.escalated.float().mean()) == pytest.approx(expected["escalation_rate"], abs=1e-9), strategy
        assert float(answer.timesteps.float().mean()) == pytest.approx(expected["mean_timesteps"], abs=1e-9), strategy
        assert float(answer.energy_uj.mean()) == pytest.approx(expected["energy_uj"], rel=1e-5), strategy
        for term, value in expected["energy_terms_uj"].items():
            assert float(answer.energy_terms_uj[term].mean()) == pytest.approx(value, rel=1e-5, abs=1e-12), (strategy, term)
    for reference in ("oracle", "aet_oracle"):
        assert reference in results and reference not in deployment.strategies


def test_predict_writes_predictions_and_a_summary_equal_to_results_json(fitted_folder, tmp_path):
    out = tmp_path / "pred"
    assert main(["predict", str(fitted_folder), "--strategy", "seenn1@0.8+s2", "--out", str(out), "--quiet"]) == 0
    expected = _results(fitted_folder)["seenn1@0.8+s2"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["strategy"] == "seenn1@0.8+s2" and summary["inputs"] == 360 and summary["degraded"] == 0
    for key in ("accuracy", "escalation_rate", "mean_timesteps", "energy_uj"):
        assert summary[key] == pytest.approx(expected[key], rel=1e-6), key
    assert {"config", "versions", "seed", "profile"} <= set(summary)
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(360))
    for row in rows:
        assert set(row) == {"index", "answer", "system", "exit", "timesteps", "energy_uj", "degraded", "label", "correct"}
        assert (row["system"] == "system2") == (row["exit"] is None)
        assert row["correct"] == (row["answer"] == row["label"])
    assert sum(r["correct"] for r in rows) / 360 == pytest.approx(summary["accuracy"])
    assert np.mean([r["energy_uj"] for r in rows]) == pytest.approx(summary["energy_uj"], rel=1e-6)
    escalated = [r for r in rows if r["system"] == "system2"]
    assert len(escalated) / 360 == pytest.approx(summary["escalation_rate"])
    assert all(r["exit"] == 1 for r in rows if r["system"] == "system1")  # SEENN-I answers from the last exit


def test_predict_answers_new_data_without_labels(fitted_folder, tmp_path):
    from sklearn.datasets import load_digits

    images = load_digits().images[:37]
    data = tmp_path / "new.npz"
    np.savez(data, X=(images / 16.0).astype(np.float32))  # no y: labels are optional
    out = tmp_path / "pred"
    assert (
        main(
            [
                "predict",
                str(fitted_folder),
                "--strategy",
                "router@steps,share=0.1",
                "--data",
                str(data),
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["inputs"] == 37 and summary["accuracy"] is None and summary["energy_uj"] > 0
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 37 and all("label" not in r and "correct" not in r for r in rows)
    assert all(0 <= r["answer"] < 10 and 1 <= r["timesteps"] <= 3 for r in rows)
    # SEENN-II can send inputs straight to System 2, before System 1 runs.
    assert (
        main(["predict", str(fitted_folder), "--strategy", "seenn2@beta=0.05", "--data", str(data), "--out", str(out), "--quiet"])
        == 0
    )


@pytest.mark.parametrize(
    "args, named",
    [
        (["--strategy", "seenn1@0.123"], "unknown strategy 'seenn1@0.123': use one of system1, system2, "),
        (["--strategy", "oracle"], "reads the labels"),
        (["--strategy", "system1", "--data", "nowhere.npz"], "does not exist"),
    ],
)
def test_bad_predict_requests_are_one_line_errors(fitted_folder, tmp_path, capsys, args, named):
    out = tmp_path / "pred"
    assert main(["predict", str(fitted_folder), "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and named in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_predict_refuses_inputs_of_another_shape_or_range(fitted_folder, tmp_path, capsys):
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, X=np.random.rand(5, 10).astype(np.float32))
    assert main(["predict", str(fitted_folder), "--strategy", "system1", "--data", str(wrong), "--out", str(tmp_path / "o")]) == 2
    assert "checkpoints expect (1, 8, 8)" in capsys.readouterr().err
    scaled = tmp_path / "scaled.npz"
    np.savez(scaled, X=np.random.rand(5, 8, 8).astype(np.float32) * 16)
    assert (
        main(["predict", str(fitted_folder), "--strategy", "system1", "--data", str(scaled), "--out", str(tmp_path / "o")]) == 2
    )
    assert "outside [0, 1]" in capsys.readouterr().err
    for name, x in (("negated", -np.random.rand(5, 8, 8)), ("nan", np.where(np.eye(8) > 0, np.nan, 0.5)[None].repeat(5, 0))):
        path = tmp_path / f"{name}.npz"
        np.savez(path, X=x.astype(np.float32))
        out = tmp_path / name
        assert main(["predict", str(fitted_folder), "--strategy", "system1", "--data", str(path), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
        assert ("outside [0, 1]" if name == "negated" else "NaN/inf") in err and not out.exists()


def test_a_deployment_refuses_inputs_outside_the_unit_range_as_the_cli_does(fitted_folder):
    from fastslow.data import check_inputs
    from fastslow.errors import DataError
    from fastslow.pipeline import load_fit

    deployment = fastslow.load(fitted_folder)
    x = load_fit(fitted_folder).splits.x_test[:300]  # two batches: refused before the first runs
    assert deployment.predict(x, "system1").predictions.shape == (300,)
    nan = x.clone()
    nan[299, 0, 0, 0] = float("nan")
    for bad, named in ((-x, "outside [0, 1]"), (x * 16, "hold values in [0, 16]"), (nan, "1 NaN/inf values")):
        with pytest.raises(DataError) as caught:
            deployment.predict(bad, "seenn1@0.8+s2", on_batch=lambda: pytest.fail("a batch ran"))
        message = str(caught.value)
        assert named in message and "\n" not in message, message
        with pytest.raises(DataError) as same:  # the one check every way in calls, with the same words
            check_inputs(bad)
        assert str(same.value) == message
    check_inputs(x)  # in range: no error
    check_inputs(np.zeros((2, 3)), "zeros")
