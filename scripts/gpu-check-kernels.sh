#!/usr/bin/env bash
# GPU check of the generated CUDA kernels (needs nvcc and a CUDA GPU; under 5 minutes):
#   1. tools/gpu-check writes, for three small model shapes, the generated kernels, a host
#      harness and input/expected-output files computed by the Go reference kernels, and
#      for a mid-sized MoE layer the kernels, a timing harness and its inputs;
#   2. nvcc compiles each harness with its kernels;
#   3. every kernel runs on the GPU and is compared with the Go reference (forward and
#      backward); the MoE layer (router, permute, expert FFN, un-permute) is timed;
#   4. the same layer is timed in PyTorch on the same GPU, when torch is importable.
# Exit status: non-zero when a kernel disagrees with its reference or a step fails.
# Environment: GPU_CHECK_OUT (work directory, default a temporary one), GPU_ARCH
# (nvcc -arch, default native), GO (default go), PYTHON (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
PYTHON=${PYTHON:-python3}
ARCH=${GPU_ARCH:-native}
OUT=${GPU_CHECK_OUT:-$(mktemp -d -t moec-gpu-check.XXXXXX)}

if ! command -v nvcc >/dev/null 2>&1; then
  echo "gpu-check: nvcc not found; this check needs the CUDA toolkit and a GPU" >&2
  exit 1
fi
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null || true

echo "gpu-check: preparing in $OUT"
"$GO" run ./tools/gpu-check -out "$OUT"

for dir in "$OUT"/check_* "$OUT"/bench; do
  echo "gpu-check: nvcc $(basename "$dir")"
  nvcc -O3 -arch="$ARCH" -std=c++17 -I "$dir/cuda" -o "$dir/moe_check" \
    "$dir/moe_check.cu" "$dir/cuda/moe_kernels.cu" "$dir/cuda/moe_host.cu"
done

status=0
for dir in "$OUT"/check_*; do
  echo "gpu-check: correctness $(basename "$dir")"
  "$dir/moe_check" "$dir/data" || status=1
done

echo "gpu-check: timing (ms per MoE layer forward; shapes in $OUT/bench/bench.json)"
cat "$OUT/bench/bench.json"
"$OUT/bench/moe_check" "$OUT/bench/data" || status=1
if "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  "$PYTHON" scripts/gpu_check_torch.py "$OUT/bench/bench.json" || status=1
else
  echo "gpu-check: PyTorch with CUDA not available; skipping the PyTorch comparison"
fi
exit $status
