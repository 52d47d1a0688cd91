"""BindsNET's side of bench/stdp_peer.py, run in BindsNET's own virtual environment.

BindsNET imports every subpackage at import time, including ones this benchmark never uses
(environments, dataset wrappers, conversion) whose dependencies (gymnasium, ale-py, OpenCV,
torchvision, tensorboardX) would replace the CPU torch build; those modules are stubbed with
empty placeholders. The model, nodes, learning rules, encoder and evaluation are BindsNET's own.

Reads one JSON line: {"neurons", "presentation_ms", "dt", "train": npz path, "seed"}; prints one
JSON line: training samples/s, accuracy, and the spike counts.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import json
import sys
import time
import types

STUBBED = ("gymnasium", "ale_py", "cv2", "torchvision", "tensorboardX", "skimage", "pandas", "tqdm")


class _AnyMeta(type):
    """A placeholder class: any attribute is another placeholder class (for subclassing or calling)."""

    def __getattr__(cls, attr: str):
        return _placeholder(attr)


def _placeholder(attr: str):
    if attr.startswith("__"):
        raise AttributeError(attr)
    return _AnyMeta(attr, (), {"__init__": lambda self, *a, **k: None})


class _Stub(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in STUBBED:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__path__ = []
        module.__getattr__ = _placeholder
        return module

    def exec_module(self, module):
        pass


def main() -> None:
    sys.meta_path.insert(0, _Stub())
    import numpy as np
    import torch

    torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
    from bindsnet.encoding import PoissonEncoder
    from bindsnet.evaluation import all_activity, assign_labels
    from bindsnet.models import DiehlAndCook2015
    from bindsnet.network.monitors import Monitor

    setup = json.loads(sys.stdin.readline())
    data = np.load(setup["train"])
    torch.manual_seed(setup["seed"])
    steps = int(setup["presentation_ms"] / setup["dt"])
    network = DiehlAndCook2015(
        n_inpt=784,
        n_neurons=setup["neurons"],
        exc=22.5,
        inh=120.0,
        dt=setup["dt"],
        norm=78.4,
        theta_plus=0.05,
        inpt_shape=(1, 28, 28),
    )
    monitor = Monitor(network.layers["Ae"], state_vars=["s"], time=steps)
    network.add_monitor(monitor, name="Ae_spikes")
    encoder = PoissonEncoder(time=setup["presentation_ms"], dt=setup["dt"])
    intensity = setup["intensity"]  # BindsNET's example scales pixels so white is this many Hz

    def present(image, learning: bool) -> torch.Tensor:
        network.train(learning)
        spikes = encoder(torch.as_tensor(image).float() * intensity).view(steps, 1, 1, 28, 28)
        network.run(inputs={"X": spikes}, time=setup["presentation_ms"])
        record = monitor.get("s").squeeze(1).sum(0).float()
        network.reset_state_variables()
        return record

    x_train, y_train, x_test, y_test = (torch.as_tensor(data[k]) for k in ("x_train", "y_train", "x_test", "y_test"))
    started = time.perf_counter()
    for image in x_train:
        present(image, learning=True)
    train_seconds = time.perf_counter() - started
    labelled = torch.stack([present(image, learning=False) for image in x_train])
    assignments, _, _ = assign_labels(labelled[:, None, :], y_train, 10)
    tested = torch.stack([present(image, learning=False) for image in x_test])
    predicted = all_activity(tested[:, None, :], assignments, 10)
    print(
        json.dumps(
            {
                "train_samples_per_s": len(x_train) / train_seconds,
                "accuracy": float((predicted == y_test).float().mean()),
                "spikes_per_input": float(tested.sum(1).mean()),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
