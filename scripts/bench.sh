#!/usr/bin/env bash
# make bench: every benchmark moec keeps, then moec against PyTorch on the issue's MoE
# (bench/cmd/moebench, whose Markdown table docs/performance.md carries).
#
# Environment: BENCH_COUNT (repetitions of the Go benchmarks, default 3), MOEBENCH_REPS
# (interleaved moec/PyTorch repetitions, default 3), MOEBENCH_SECONDS (seconds per
# measurement, default 4), MOEBENCH_CURVE_STEPS (steps of the float32 and bf16 loss curves,
# default 600, about 15 minutes on 2 cores; 0 leaves them out), MOEBENCH_OUT (also write the comparison's Markdown there),
# BENCH_ONLY=moebench (skip the Go benchmarks), BENCH_TORCH=0 (measure Debian's torch only,
# without building .venv-bench). OPENBLAS_CORETYPE, when set, is the only
# OpenBLAS setting measured; unset, moebench compares the default against SkylakeX on
# AVX-512 CPUs and against Haswell elsewhere (SkylakeX kernels die with SIGILL without
# AVX-512).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-<auto>}  cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)  load: $(cut -d' ' -f1-3 /proc/loadavg)"
out=$(mktemp)
bin=$(mktemp -d)
trap 'rm -rf "$out" "$bin"' EXIT

run() { # package, benchmark regexp
	go test "$1" -run '^$' -bench "$2" -benchmem -count "${BENCH_COUNT:-3}" 2>&1 | tee -a "$out" | grep -E '^(Benchmark|ok|FAIL|---)' || true
}

# The current PyTorch release from PyPI, measured beside Debian's 1.13 by compressbench and
# moebench, lives in .venv-bench, the venv make test also builds for transformers
# (scripts/venv-torch.sh, about 4 GB): built first, so that every peer meets both torches.
if [ "${BENCH_TORCH:-1}" != 0 ] && [ ! -f .venv-bench/installed.stamp ]; then
	echo "building .venv-bench with the current torch from PyPI (about 4 GB; BENCH_TORCH=0 skips it)"
	./scripts/venv-torch.sh || echo "the current torch did not install: measuring Debian's torch only"
fi

if [ "${BENCH_ONLY:-}" != moebench ]; then
	echo "== front end and counting"
	run ./compiler/report 'BenchmarkFrontEndHunyuan1T'
	echo "== planner"
	run ./compiler/plan 'BenchmarkSearchHunyuan1T2000GPUs'
	echo "== runtime"
	run ./runtime/nn 'Benchmark(TrainStep|Decode)$'
	run ./runtime/train 'Benchmark'
	echo "== step programs (executor) against the hand-written model, one rank"
	run ./runtime/exec 'BenchmarkStep'
	echo "== serving (load test on 127.0.0.1: requests/s, p50/p99 latency; slots=1 is the unbatched peer)"
	run ./runtime/serve 'BenchmarkServeLoad'
	echo "== kernels"
	run ./codegen/... 'Benchmark'
	run ./kernels/... 'Benchmark'
	echo "== products: bf16 (AVX512-BF16 where the CPU has it) against OpenBLAS fp32; threading"
	run ./runtime/blas 'Benchmark(GemmBF16|GemmThreading)'
	echo "== compression on the tiny HunYuan's eight-expert stage (after make run)"
	if [ -d out/hunyuan_tiny/eight/run ]; then
		go run ./bench/cmd/compressbench --reps "${COMPRESSBENCH_REPS:-5}"
	else
		echo "skipped: out/hunyuan_tiny/eight/run is missing (make run trains it)"
	fi
fi

echo "== moec vs PyTorch (bench/cmd/moebench)"
pythons=/usr/bin/python3
if [ ! -x "$pythons" ]; then
	pythons=python3
fi
if [ "${BENCH_TORCH:-1}" != 0 ] && [ -f .venv-bench/installed.stamp ]; then
	pythons="$pythons,.venv-bench/bin/python"
fi
coretypes=auto
if [ -n "${OPENBLAS_CORETYPE:-}" ]; then
	coretypes=$OPENBLAS_CORETYPE
fi
# The numbers only count if the math is right under every OpenBLAS setting measured: the
# gradient checks and the PyTorch peer check run under each first.
# runtime/blas and runtime/optim hold the products' own kernels and AdamW's fused update.
for ct in $(go run ./bench/cmd/moebench -list-coretypes -coretypes "$coretypes"); do
	if [ "$ct" = default ]; then
		env -u OPENBLAS_CORETYPE go test -count 1 -run 'Grad|Peer|SiLUFast|LinearSmall' ./runtime/nn/ >/dev/null
		env -u OPENBLAS_CORETYPE go test -count 1 ./runtime/blas/ ./runtime/optim/... >/dev/null
	else
		OPENBLAS_CORETYPE=$ct go test -count 1 -run 'Grad|Peer|SiLUFast|LinearSmall' ./runtime/nn/ >/dev/null
		OPENBLAS_CORETYPE=$ct go test -count 1 ./runtime/blas/ ./runtime/optim/... >/dev/null
	fi
	echo "correctness tests pass under OPENBLAS_CORETYPE=$ct"
done
go build -o "$bin/moebench" ./bench/cmd/moebench
"$bin/moebench" -python "$pythons" -coretypes "$coretypes" -reps "${MOEBENCH_REPS:-3}" -seconds "${MOEBENCH_SECONDS:-4}" -curve-steps "${MOEBENCH_CURVE_STEPS:-600}" |
	tee "${MOEBENCH_OUT:-/dev/null}"
