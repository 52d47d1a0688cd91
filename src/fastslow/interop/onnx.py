"""System 2 as an ONNX model (``fastslow export DIR --format onnx``): torch's ONNX exporter
(``torch.onnx.export``, the ``torch.export``-based one), its batch axis dynamic.

The graph takes ``inputs`` float32 [N, *input_shape] in [0, 1], as System 2 does in fastslow (event
frames [N, T, C, H, W] are averaged over T inside the graph), and returns ``logits`` [N, classes].
The model's metadata names the input shape, the classes and the SHA-256 of the checkpoint it came from.
"""

from __future__ import annotations

import copy
import json
import logging
import warnings
from pathlib import Path

import torch

import fastslow
from fastslow import atomic
from fastslow.errors import ConfigError
from fastslow.serving.deploy import Deployment

INPUT_NAME, OUTPUT_NAME = "inputs", "logits"


def export_system2(deployment: Deployment, out: Path) -> Path:
    """Write ``deployment``'s System 2 to ``out`` as ONNX (atomically: all of it or nothing) and return
    ``out``. The batch axis is dynamic; weights are exported as float32 from a CPU copy (the deployment's
    own System 2 is left as it is). ConfigError without the ``onnx`` extra or where the exporter
    cannot express the module (a custom System 2)."""
    try:
        import onnx
        import onnxscript  # noqa: F401  (the exporter builds its graph with it)
    except ImportError:
        raise ConfigError("ONNX export needs the onnx extra: pip install 'fastslow[onnx]'") from None
    out = Path(out)
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder: pass a file path, e.g. {out / 'system2.onnx'}")
    spec = deployment.system1.spec
    model = copy.deepcopy(deployment.system2).to("cpu", torch.float32).eval()
    # Two inputs: torch.export specialises a batch of one to the constant 1.
    example = torch.zeros(2, *spec.input_shape)
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # (it warns about optional torchvision operators it skips)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model,
                (example,),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                dynamo=True,
                verbose=False,
            )
    except torch.onnx.OnnxExporterError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"System 2 cannot be exported to ONNX ({first}): export the default System 2 of a fit") from None
    finally:
        quiet.setLevel(level)
    proto = program.model_proto
    onnx.helper.set_model_props(
        proto,
        {
            "fastslow.version": fastslow.__version__,
            "fastslow.input_shape": json.dumps(list(spec.input_shape)),
            "fastslow.inputs": "float32 [N, *input_shape] in [0, 1]"
            + (" (event frames [N, T, C, H, W], averaged over T in the graph)" if spec.encoding == "events" else ""),
            "fastslow.n_classes": str(spec.n_classes),
            "fastslow.system2_sha256": deployment.system2_sha256 or "",
        },
    )
    onnx.checker.check_model(proto)
    return atomic.write_bytes(out, proto.SerializeToString())
