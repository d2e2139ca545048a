#!/usr/bin/env bash
# The GPU figures in one short run on a lent NVIDIA machine (the `device` tool; README, "GPU
# figures"): the MANO forward and the pose optimizer on CUDA, the optimizer at batch 2,048.
#
# That machine has Python 3.12 with CUDA torch, numpy, pandas, pyarrow and scipy, and no network;
# of what the optimizer imports only smplx is missing, so it travels as a wheel in .whl/ (make it
# here once: python3 -m pip download --no-deps smplx==0.1.28 -d .whl). Cycles on CUDA/OptiX cannot
# be measured there: bpy 5.0.1 needs Python 3.11 and is 821 MB installed, and a device call carries
# at most 64 MiB.
#
#   device run: command "bash benchmarks/gpu_check.sh", carry [".whl"], timeout_s 560
#
# Everything printed also goes to $OUT/gpu_check.log (.local/gpu_check/ when run here).
set -uo pipefail
out=${OUT:-.local/gpu_check}
mkdir -p "$out"
exec > >(tee "$out/gpu_check.log") 2>&1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HANDSYNTH_CACHE=/tmp/handsynth-cache
device=${GPU_CHECK_DEVICE:-cuda}
date -u
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
echo "== MANO forward (lbs_bench)"
timeout 90 python3 benchmarks/lbs_bench.py --device "$device" --batches 256 2048 --reps 20
echo "== optimizer, 256 drawn poses x 8 augmentations = 2,048 in one batch (optimize_bench)"
timeout 420 python3 benchmarks/optimize_bench.py --device "$device" --poses 256 --augmentations 8 --single 4 \
    --skip-previous ${GPU_CHECK_ARGS:-}
echo "== done $(date -u)"
