#!/usr/bin/env bash
# Installs what moec's build, tests and benchmarks need, only where it is missing:
# Go modules, and Debian's clang-16/llvm-16 (LLVM IR and CUDA-to-PTX), OpenBLAS (sgemm),
# python3-torch (the numeric and speed peer), OpenMPI, pkg-config and Chromium (headless
# browser test of report.html).
set -euo pipefail

missing=()
command -v clang-16 >/dev/null 2>&1 || missing+=(clang-16)
command -v llc-16 >/dev/null 2>&1 || missing+=(llvm-16)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
[ -e /usr/include/x86_64-linux-gnu/openblas-pthread/cblas.h ] || [ -e /usr/include/cblas.h ] || missing+=(libopenblas-dev)
/usr/bin/python3 -c 'import torch' >/dev/null 2>&1 || missing+=(python3-torch)
command -v mpirun >/dev/null 2>&1 || missing+=(openmpi-bin)
pkg-config --exists ompi-c 2>/dev/null || missing+=(libopenmpi-dev)
command -v chromium >/dev/null 2>&1 || missing+=(chromium) # report.html browser test

if [ ${#missing[@]} -gt 0 ]; then
	echo "deps: installing ${missing[*]}"
	sudo=""
	if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
	export DEBIAN_FRONTEND=noninteractive
	$sudo apt-get update -qq
	$sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

go mod download
