#!/usr/bin/env bash
# .venv-bench: the one virtual environment with the current PyTorch from PyPI, shared by
# make bench (bench/cmd/moebench measures it beside Debian's torch 1.13) and make test
# (interop/hf's round trip through the current transformers' own model classes, which
# need torch >= 2). PyPI's only Linux x86_64 torch wheel is a CUDA build whose
# libtorch_python.so links cudart, cuBLAS, cuDNN, NCCL and the rest, so the wheel comes
# with its NVIDIA dependencies (about 4 GB to download, 5.3 GB installed, unused on the CPU).
#
# Built once: .venv-bench/installed-hf.stamp marks a venv where torch, transformers,
# tokenizers and safetensors import. A venv that make bench built before transformers was
# added (installed.stamp alone) keeps its torch and gains the rest. On failure a venv this
# run created is removed and the script exits non-zero; the tests that need it skip, saying
# why.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-bench
if [ -f "$venv/installed-hf.stamp" ]; then
	exit 0
fi
python=/usr/bin/python3
if [ ! -x "$python" ]; then
	python=python3
fi
fresh=0
if [ ! -f "$venv/installed.stamp" ]; then
	rm -rf "$venv"
	"$python" -m venv "$venv"
	fresh=1
fi
fail() { # a venv make bench built before keeps its torch
	echo "$venv: $1; the tests that need the current transformers skip" >&2
	if [ "$fresh" = 1 ]; then
		rm -rf "$venv"
	fi
	exit 1
}
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check torch numpy transformers tokenizers safetensors ||
	fail "pip could not install torch, numpy, transformers, tokenizers and safetensors"
"$venv/bin/python" -c '
import torch, transformers, tokenizers, safetensors
torch.mm(torch.ones(2, 2), torch.ones(2, 2))
print("torch", torch.__version__, "transformers", transformers.__version__)' ||
	fail "torch or transformers does not import"
touch "$venv/installed.stamp" "$venv/installed-hf.stamp"
