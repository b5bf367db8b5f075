#!/usr/bin/env bash
# The GPU checks of issue 22 in one run of under 8 minutes (never in CI): every recipe on the tiny pipelines in
# fp16 and bf16 on CUDA, then time and peak memory of the real SDXL architecture at 1024², 2048², 4096² against
# `hiresdiff plan`'s predictions. Writes benchmarks/results/gpu_check.md (and .json), also into $OUT if set.
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'"
python -c "import hiresdiff" 2>/dev/null || pip install -q --no-deps -e .
timeout 470 python benchmarks/gpu_check.py --minutes 6.5 "$@" || echo "gpu_check.py stopped (exit $?): see the partial results"
if [ -n "${OUT:-}" ]; then cp benchmarks/results/gpu_check.md benchmarks/results/gpu_check.json "$OUT"/ 2>/dev/null || true; fi
# issue 33: diffusers' context parallelism needs an accelerator per rank, so it is checked only where 2+ GPUs are lent
gpus=$(python -c "import torch; print(torch.cuda.device_count())")
if [ "$gpus" -ge 2 ]; then
  timeout 120 torchrun --nproc-per-node 2 benchmarks/context_parallel_check.py || echo "context_parallel_check.py stopped (exit $?)"
fi
