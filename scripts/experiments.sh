#!/usr/bin/env bash
# make experiments: the seed's four claims (examples/seed-claims.moe) measured at CPU scale,
# three seeds per arm; about 22 minutes on two idle cores (docs/results.md). Writes out/experiments/results.md
# and its plots. Extra arguments go to `moec experiment` (a quicker, reduced run:
# `./scripts/experiments.sh --tokens 24576 --seeds 1,2`). An interrupted run continues where it
# stopped when started again; --fresh retrains everything.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${OPENBLAS_CORETYPE:-}" ] && grep -q avx512f /proc/cpuinfo; then
	export OPENBLAS_CORETYPE=SkylakeX # see the Makefile: only where the CPU has AVX-512
fi
[ -x bin/moec ] || go build -o bin/moec ./cmd/moec
start=$(date +%s)
./bin/moec experiment --out out/experiments "$@" examples/seed-claims.moe
echo "experiments took $(( $(date +%s) - start ))s; read out/experiments/results.md"
