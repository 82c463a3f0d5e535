#!/usr/bin/env bash
# GPU check of the generated CUDA step (one prepared script, a few minutes on one GPU):
#   1. examples/hunyuan_tiny.moe's dense stage and its four-expert stage (grown from the
#      dense one's checkpoint) train for STEPS steps through `moec run --device cuda`: the
#      generated host program and moec's kernels, PTX compiled by clang for the GPU,
#      loaded through the driver (no CUDA SDK);
#   2. the same stages train for the same steps on the CPU executor;
#   3. scripts/gpu_check_compare.py holds the losses together (1e-3 relative) and writes
#      the table of losses and tokens/s to docs/results/gpu.md.
# Needs: an NVIDIA driver, clang++ 16 or newer, Go (or a prebuilt bin/moec), python3.
# The older check of the kernel library alone (nvcc) is scripts/gpu-check-kernels.sh.
# Environment: STEPS (default 100), GPU_CHECK_OUT (work directory, default a temporary one),
# GPU_CHECK_DEVICE (default cuda; cuda-emulated rehearses the script on a machine without a
# GPU, slowly), MOEC (the moec binary, default bin/moec, built when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

STEPS=${STEPS:-100}
OUT=${GPU_CHECK_OUT:-$(mktemp -d -t moec-gpu-check.XXXXXX)}
MOEC=${MOEC:-bin/moec}
DEVICE=${GPU_CHECK_DEVICE:-cuda}

if [ "$DEVICE" = cuda ] && ! nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; then
  echo "gpu-check: no NVIDIA GPU or driver (nvidia-smi failed)" >&2
  exit 1
fi
if [ ! -x "$MOEC" ]; then
  go build -o "$MOEC" ./cmd/moec
fi
echo "gpu-check: working in $OUT ($STEPS steps a stage)"

status=0
cases=()
for stage in dense four; do
  from_cpu=() from_gpu=()
  if [ "$stage" = four ]; then
    from_cpu=(--from "$OUT/cpu/dense")
    from_gpu=(--from "$OUT/gpu/dense")
  fi
  "$MOEC" run --stage "$stage" --steps "$STEPS" --out "$OUT/cpu/$stage" "${from_cpu[@]}" examples/hunyuan_tiny.moe
  "$MOEC" run --stage "$stage" --steps "$STEPS" --out "$OUT/gpu/$stage" --device "$DEVICE" "${from_gpu[@]}" examples/hunyuan_tiny.moe || status=1
  cases+=("hunyuan_tiny $stage:$OUT/cpu/$stage:$OUT/gpu/$stage")
done
mkdir -p docs/results
python3 scripts/gpu_check_compare.py docs/results/gpu.md "${cases[@]}" || status=1
exit $status
