"""System 2 exported to ONNX gives System 2's logits under onnxruntime (within 1e-5), for any batch size."""

import json

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from fastslow.energy import load_profile  # noqa: E402
from fastslow.errors import ConfigError  # noqa: E402
from fastslow.interop.onnx import export_system2  # noqa: E402
from fastslow.serving import Deployment  # noqa: E402
from fastslow.systems import System1, System1Spec, System2Spec, build_system2  # noqa: E402

TOLERANCE = 1e-5


def _deployment(input_shape, encoding="rate", frames=False, width=64) -> Deployment:
    torch.manual_seed(0)
    steps = input_shape[0] if encoding == "events" else 4
    s1 = System1(System1Spec(input_shape=input_shape, n_classes=5, hidden=(8,), timesteps=steps, encoding=encoding))
    s2 = build_system2(System2Spec(input_shape=input_shape, n_classes=5, frames=frames, width=width)).eval()
    return Deployment(s1, s2, [], load_profile("cmos45nm"), 0, system2_sha256="ab" * 32)


def _check(deployment: Deployment, path, binary=False) -> None:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (given,) = session.get_inputs()
    assert given.name == "inputs" and given.shape[1:] == list(deployment.system1.spec.input_shape)
    assert isinstance(given.shape[0], str)  # the batch axis is dynamic
    generator = torch.Generator().manual_seed(1)
    for batch in (1, 3, 17):
        x = torch.rand(batch, *deployment.system1.spec.input_shape, generator=generator)
        if binary:
            x = (x < 0.2).float()
        with torch.no_grad():
            expected = deployment.system2(x).numpy()
        (logits,) = session.run(["logits"], {"inputs": x.numpy()})
        assert logits.shape == expected.shape
        np.testing.assert_allclose(logits, expected, rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize(
    "input_shape, arch",
    [((20,), "mlp"), ((1, 8, 8), "cnn"), ((3, 28, 28), "lenet5"), ((3, 32, 32), "resnet18")],
)
def test_onnx_logits_equal_system2(tmp_path, input_shape, arch):
    deployment = _deployment(input_shape, width=8)  # (a narrow ResNet-18: the same graph, quicker)
    assert System2Spec(input_shape, 5).resolved_arch() == arch
    path = export_system2(deployment, tmp_path / "s2.onnx")
    assert path == tmp_path / "s2.onnx" and not list(tmp_path.glob(".*tmp"))  # written whole, nothing left over
    _check(deployment, path)
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(props["fastslow.input_shape"]) == list(input_shape)
    assert props["fastslow.n_classes"] == "5" and props["fastslow.system2_sha256"] == "ab" * 32


def test_onnx_of_an_event_system2_averages_the_frames(tmp_path):
    deployment = _deployment((4, 2, 34, 34), encoding="events", frames=True)
    path = export_system2(deployment, tmp_path / "events.onnx")
    _check(deployment, path, binary=True)
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert "averaged over T" in props["fastslow.inputs"]


def test_onnx_of_a_loaded_fit(fitted_folder, tmp_path):
    import fastslow

    deployment = fastslow.load(fitted_folder)
    path = export_system2(deployment, tmp_path / "nested" / "fit.onnx")  # parent folders are made
    _check(deployment, path)
    assert next(deployment.system2.parameters()).requires_grad  # the deployment's own module is untouched


def test_onnx_out_must_be_a_file(tmp_path):
    with pytest.raises(ConfigError, match="is a folder"):
        export_system2(_deployment((20,)), tmp_path)


def test_cli_export_onnx_writes_what_onnxruntime_runs(fitted_folder, tmp_path, capsys):
    import fastslow
    from fastslow.cli import main

    out = tmp_path / "s2.onnx"
    assert main(["export", str(fitted_folder), "--format", "onnx", "--out", str(out)]) == 0
    assert f"System 2 -> {out} (ONNX)" in capsys.readouterr().out
    _check(fastslow.load(fitted_folder), out)
    assert main(["export", str(fitted_folder), "--format", "onnx", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: --out ")
