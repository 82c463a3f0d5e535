#!/usr/bin/env bash
# make bench: every benchmark moec keeps, printed as one table. Peers (PyTorch) are
# measured in the same run where a benchmark has one.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${OPENBLAS_CORETYPE:-}" ] && grep -q avx512f /proc/cpuinfo; then
	export OPENBLAS_CORETYPE=SkylakeX # see the Makefile: only where the CPU has AVX-512
fi
echo "OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-<auto>}  cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
out=$(mktemp)
trap 'rm -f "$out"' EXIT

run() { # package, benchmark regexp
	go test "$1" -run '^$' -bench "$2" -benchmem -count "${BENCH_COUNT:-3}" 2>&1 | tee -a "$out" | grep -E '^(Benchmark|ok|FAIL|---)' || true
}

echo "== front end and counting"
run ./compiler/report 'BenchmarkFrontEndHunyuan1T'
echo "== planner"
run ./compiler/plan 'BenchmarkSearchHunyuan1T2000GPUs'
echo "== runtime"
run ./runtime/nn 'Benchmark'
run ./runtime/train 'Benchmark'
echo "== kernels"
run ./codegen/... 'Benchmark'
run ./kernels/... 'Benchmark'
