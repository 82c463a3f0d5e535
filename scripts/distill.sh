#!/usr/bin/env bash
# Eight experts distilled into a dense student with the same active parameters
# (examples/hunyuan_tiny_distill.moe): trains the tiny HunYuan curriculum, the distilled
# student and the same dense model on the labels alone, then prints each one's validation
# perplexity (the same held-out windows). An interrupted run continues where it stopped when
# started again. OUT sets the out root [out/distill]; extra arguments go to `moec run`.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${OPENBLAS_CORETYPE:-}" ] && grep -q avx512f /proc/cpuinfo; then
	export OPENBLAS_CORETYPE=SkylakeX # see the Makefile: only where the CPU has AVX-512
fi
[ -x bin/moec ] || go build -o bin/moec ./cmd/moec
out=${OUT:-out/distill}
start=$(date +%s)
./bin/moec run --all-stages --out-root "$out" "$@" examples/hunyuan_tiny_distill.moe
printf '\n%-14s %-44s %s\n' stage model "validation perplexity"
for s in eight:"8 experts, top-1 (the teacher)" dense_labels:"dense, labels only" dense_student:"dense, distilled from eight (T 2, 0.5/0.5)" \
	dense_warm:"the same, from the teacher's tensors"; do
	stage=${s%%:*}
	ppl=$(sed -n 's/.*"ValPPL": \([0-9.e+-]*\).*/\1/p' "$out/hunyuan_tiny/$stage/run/result.json")
	printf '%-14s %-44s %.3f\n' "$stage" "${s#*:}" "$ppl"
done
echo "took $(( $(date +%s) - start ))s"
