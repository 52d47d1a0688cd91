#!/usr/bin/env bash
# The GPU checks, in one go, on a CUDA machine without internet (its python3 holds a CUDA torch
# with Triton): fastslow's needs and the peers from wheels carried in .whl/ (see README), the deep
# networks' checks and training speed (bench/deep_gpu.py), the kernels' tests on the GPU, where an
# eager run's host time goes (bench/cuda_host_overhead.py), then bench/simulation_speed.py on the
# GPU. Results go to $OUT (default bench/results).
set -euo pipefail
OUT=${OUT:-bench/results}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/fastslow-site .whl/*.whl
export PYTHONPATH=$PWD/src:/tmp/fastslow-site PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
# The deep networks (ResNet-19/VGG-16 System 1, ResNet-18 System 2): checks and training images/s
# beside SpikingJelly, a few minutes. ONLY=deep runs this block alone.
python3 bench/deep_gpu.py --device cuda --json "$OUT/deep_gpu.json" 2>&1 | tee "$OUT/deep_gpu.txt" ||
    echo "bench/deep_gpu.py failed: see $OUT/deep_gpu.txt"
if [ "${ONLY:-}" = deep ]; then exit 0; fi
python3 -m pytest -q -x -p no:cacheprovider tests/spiking tests/systems 2>&1 | tail -5
python3 bench/cuda_host_overhead.py 2>&1 | tee "$OUT/cuda_host_overhead.txt"
# The serving block trains and serves on MNIST: carried as .whl/MNIST/raw (cp -r ../shared/data/MNIST .whl/)
# where ../shared is not on the machine; without it the block is skipped.
DATA=()
if [ -d .whl/MNIST/raw ]; then DATA=(--data "mnist:$PWD/.whl"); fi
python3 bench/simulation_speed.py --device cuda --peers-here --rounds "${ROUNDS:-10}" --json "$OUT/simulation_speed_cuda.json" \
    ${DATA[@]+"${DATA[@]}"} 2>&1 | tee "$OUT/simulation_speed_cuda.txt"
