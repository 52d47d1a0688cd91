"""The compiled CPU kernels' wrappers (numba): what a caller relies on beyond the kernels' arithmetic,
which tests/systems/test_multistep.py compares with the torch path bit for bit."""

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from fastslow.spiking import LIFParams, _cpu_kernels
from fastslow.spiking.backends import fused_lif_multistep


@pytest.fixture
def kernels():
    if not _cpu_kernels.cpu_kernels_available():
        pytest.skip("the compiled CPU kernels need numba (the cpu extra)")
    return _cpu_kernels._kernel()


def test_kernels_follow_torchs_thread_count_in_each_thread(kernels):
    """numba runs on as many threads as torch uses, after torch's count changes, and in a thread of
    its own (numba's count is per calling thread: one set in another thread must not stand)."""
    numba = kernels.numba
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba was started with a single thread")
    currents = torch.rand(3, 4, 16)
    before = torch.get_num_threads()
    seen = []

    def elsewhere():  # a fresh thread starts with numba's default count, whatever this one set
        torch.set_num_threads(1)
        with torch.no_grad():
            fused_lif_multistep(currents, None, LIFParams(), backend="numba")
        seen.append(numba.get_num_threads())

    try:
        with torch.no_grad():
            torch.set_num_threads(2)
            fused_lif_multistep(currents, None, LIFParams(), backend="numba")
            assert numba.get_num_threads() == 2
            torch.set_num_threads(1)
            fused_lif_multistep(currents, None, LIFParams(), backend="numba")
            assert numba.get_num_threads() == 1
            worker = threading.Thread(target=elsewhere)
            worker.start()
            worker.join()
            assert seen == [1]
    finally:
        torch.set_num_threads(before)


def test_starting_numba_leaves_torchs_thread_count_alone(kernels):
    """numba's first parallel call starts its OpenMP pool, which sets the OpenMP thread count to
    NUMBA_NUM_THREADS; where torch's OpenMP runtime answers that call, torch's count changed with it
    (one thread asked, two ran). In a fresh process: this one's pool may have started already."""
    code = (
        "import torch\n"
        "from fastslow.spiking import LIFParams\n"
        "from fastslow.spiking.backends import fused_lif_multistep\n"
        "x = torch.randn(256, 10, requires_grad=True)\n"
        "torch.log_softmax(x, 1).sum().backward()  # torch's pool started first, as in a fit\n"
        "torch.set_num_threads(1)\n"
        "with torch.no_grad():\n"
        "    fused_lif_multistep(torch.rand(3, 4, 16), None, LIFParams(), backend='numba')\n"
        "print(torch.get_num_threads())\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(Path(_cpu_kernels.__file__).parents[2]), env.get("PYTHONPATH"))))
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1"]


def test_kernels_hold_no_dispatcher_in_their_closure(kernels):
    """numba keys a kernel's disk cache on a hash of its closure; a dispatcher there hashes
    differently in every process, so the cache never hit and every process compiled afresh."""
    from numba.core.dispatcher import Dispatcher

    for name in ("lif_pool", "lif_dense", "event_linear", "mlp", "mlp_until_confident"):
        cells = getattr(kernels, name).py_func.__closure__ or ()
        assert not [c for c in cells if isinstance(c.cell_contents, Dispatcher)], name


def test_pooled_kernel_refuses_a_fan_out_without_its_sums(kernels):
    """The fan-out sums are added into ``next_ops``: a fan-out alone would send them nowhere (the
    compiled loop checks no bounds), so the wrapper refuses it."""
    currents = torch.rand(2, 3, 4, 4, 5)
    with pytest.raises(ValueError, match="next_fanout and next_ops go together"):
        _cpu_kernels.lif_pool_inference(currents, None, 0.9, 1.0, False, next_fanout=torch.ones(4))


def test_shared_stand_ins_are_never_written(kernels):
    """The arrays a call leaves out (no state, no rows, no bias, no fan-out) are shared by every call:
    no path may write into them, or one call's output would leak into the next's."""
    from fastslow.spiking.backends import fused_lif_multistep_pooled
    from fastslow.spiking.lif import LIFState
    from fastslow.spiking.synapses import spike_linear

    torch.manual_seed(0)
    numba = {"backend": "numba"}
    with torch.no_grad():
        fused_lif_multistep(torch.rand(3, 4, 16) * 3, None, LIFParams(), final_state=False, **numba)
        fused_lif_multistep(torch.rand(3, 4, 16) * 3, None, LIFParams(), **numba)
        state = LIFState(torch.rand(4, 16))
        fused_lif_multistep(torch.rand(3, 2, 16) * 3, state, LIFParams(), rows=torch.tensor([2, 0]), **numba)
        fused_lif_multistep_pooled(torch.rand(3, 2, 6, 6, 4) * 3, None, LIFParams(), final_state=False, **numba)
        fused_lif_multistep_pooled(
            torch.rand(3, 1, 6, 6, 4) * 3, LIFState(torch.rand(2, 6, 6, 4)), LIFParams(), rows=torch.tensor([1]), **numba
        )
        spike_linear((torch.rand(5, 200) > 0.95).float(), torch.nn.Linear(200, 300, bias=False), **numba)
    for stand_in in (_cpu_kernels._NO_ROWS, _cpu_kernels._NO_BIAS, _cpu_kernels._NO_FANOUT, *_cpu_kernels._UNUSED.values()):
        assert not stand_in.any()
