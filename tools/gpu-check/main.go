// Command gpu-check prepares the GPU check of the generated CUDA kernels: for each check
// shape, the generated kernels, a host harness (moe_check.cu) and input/expected-output
// files from the Go reference kernels; for the bench shape, the kernels, a timing harness,
// its inputs and bench.json for the PyTorch comparison (scripts/gpu_check_torch.py).
// scripts/gpu-check-kernels.sh compiles everything with nvcc and runs it.
//
// Usage: go run ./tools/gpu-check -out DIR [-tokens N] [-bench-tokens N] [-reps N]
package main

import (
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"

	"github.com/moec-dev/moec/codegen"
	"github.com/moec-dev/moec/codegen/cuda"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/kernels"
)

// tolerance of the CUDA kernels against the Go references: the device exp/log are the
// hardware base-2 approximations (about 2 ulp), and sums run in another order.
const tolerance = 2e-3

// config is what main's flags set.
type config struct {
	out         string
	tokens      int64 // tokens of the check cases
	benchTokens int64
	reps        int
	bench       kernels.Shape
}

// benchShape is a mid-sized MoE layer: large enough that the GPU is busy, small enough
// that the whole check stays well under a minute.
func benchShape() kernels.Shape {
	return kernels.Shape{DModel: 1024, Experts: 64, TopK: 2, Hidden: 1024, Activation: program.GELU, RouterDim: 1024,
		Normalize: true, Vocab: 32000, Heads: 16, HeadDim: 64, NormEps: 1e-6}
}

func main() {
	cfg := config{bench: benchShape()}
	flag.StringVar(&cfg.out, "out", "", "output directory (required)")
	flag.Int64Var(&cfg.tokens, "tokens", 37, "tokens of each correctness case")
	flag.Int64Var(&cfg.benchTokens, "bench-tokens", 8192, "tokens of the timed MoE layer")
	flag.IntVar(&cfg.reps, "reps", 20, "timed repetitions")
	flag.Parse()
	if cfg.out == "" {
		fmt.Fprintln(os.Stderr, "gpu-check: -out is required")
		os.Exit(2)
	}
	if err := prepare(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "gpu-check:", err)
		os.Exit(1)
	}
}

// prepare writes DIR/check_<shape>/ for every small test shape and DIR/bench/.
func prepare(cfg config) error {
	shapes := kernels.SmallShapes()
	for _, name := range []string{"swiglu", "token", "gelu"} {
		if err := prepareCheck(filepath.Join(cfg.out, "check_"+name), name, shapes[name], cfg.tokens); err != nil {
			return fmt.Errorf("check %s: %w", name, err)
		}
	}
	return prepareBench(filepath.Join(cfg.out, "bench"), cfg)
}

func writeSources(dir, name string, sh kernels.Shape) ([]*kernels.Kernel, error) {
	files, err := codegen.Generate(codegen.Ident("gpu_check", name), sh)
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		if err := codegen.WriteFileAtomic(filepath.Join(dir, f.Path), []byte(f.Text)); err != nil {
			return nil, err
		}
	}
	return kernels.Set(sh)
}

func prepareCheck(dir, name string, sh kernels.Shape, tokens int64) error {
	ks, err := writeSources(dir, name, sh)
	if err != nil {
		return err
	}
	env, err := kernels.Fixture(ks, sh, tokens, 8, 11)
	if err != nil {
		return err
	}
	var cases []cuda.Case
	for _, k := range ks {
		c, err := cuda.NewCase(k, env, tolerance)
		if err != nil {
			return err
		}
		cases = append(cases, c)
		run := env.Clone()
		poison(k, run)
		if err := writeBuffers(filepath.Join(dir, "data", k.Name+".in"), k, run, func(kernels.Param) bool { return true }); err != nil {
			return err
		}
		if err := k.Ref(run); err != nil {
			return err
		}
		if err := writeBuffers(filepath.Join(dir, "data", k.Name+".want"), k, run,
			func(p kernels.Param) bool { return p.Access != kernels.In }); err != nil {
			return err
		}
	}
	src, err := cuda.Harness(cases, nil, 0)
	if err != nil {
		return err
	}
	return codegen.WriteFileAtomic(filepath.Join(dir, "moe_check.cu"), []byte(src))
}

// writeBuffers writes the selected buffer params of k, in Param order, little-endian.
func writeBuffers(path string, k *kernels.Kernel, env kernels.Env, keep func(kernels.Param) bool) error {
	var data []byte
	for _, p := range k.Params {
		if !p.Buffer || !keep(p) {
			continue
		}
		n, err := k.Size(p, env)
		if err != nil {
			return err
		}
		if p.Elem == kernels.I32 {
			for _, x := range env.I[p.Name][:n] {
				data = binary.LittleEndian.AppendUint32(data, uint32(x))
			}
			continue
		}
		for _, x := range env.F[p.Name][:n] {
			data = binary.LittleEndian.AppendUint32(data, math.Float32bits(x))
		}
	}
	return codegen.WriteFileAtomic(path, data)
}

// benchKernels is the MoE layer forward: the work the PyTorch script times too.
func benchKernels() []string {
	return []string{"router_logits", "router_fwd", "route_index", "permute_fwd", "expert_up_fwd", "expert_down_fwd", "unpermute_fwd"}
}

func prepareBench(dir string, cfg config) error {
	all, err := writeSources(dir, "bench", cfg.bench)
	if err != nil {
		return err
	}
	env := kernels.NewEnv()
	env.S["n"] = float64(cfg.benchTokens)
	var cases []cuda.Case
	var order []kernels.Param // first use of each buffer, the harness's bench.in order
	sizes := map[string]int64{}
	for _, name := range benchKernels() {
		k := kernels.Find(all, name)
		c, err := cuda.NewCase(k, env, tolerance)
		if err != nil {
			return err
		}
		cases = append(cases, c)
		for i, p := range k.Params {
			if !p.Buffer {
				continue
			}
			if _, seen := sizes[p.Name]; !seen {
				order = append(order, p)
			}
			sizes[p.Name] = max(sizes[p.Name], c.Sizes[i])
		}
	}
	// Inputs: activations of unit scale, weights scaled by 1/sqrt(fan-in) as at
	// initialisation; buffers the pipeline writes start as zeros.
	rng := rand.New(rand.NewPCG(1, 2))
	var data []byte
	for _, p := range order {
		for i := int64(0); i < sizes[p.Name]; i++ {
			var bits uint32
			switch p.Name {
			case "x":
				bits = math.Float32bits(float32(rng.NormFloat64()))
			case "router_w", "w1", "wg", "w2":
				bits = math.Float32bits(float32(rng.NormFloat64() / math.Sqrt(float64(cfg.bench.DModel))))
			case "ids":
				bits = uint32(rng.Int64N(cfg.bench.Vocab))
			}
			data = binary.LittleEndian.AppendUint32(data, bits)
		}
	}
	if err := codegen.WriteFileAtomic(filepath.Join(dir, "data", "bench.in"), data); err != nil {
		return err
	}
	src, err := cuda.Harness(nil, cases, cfg.reps)
	if err != nil {
		return err
	}
	if err := codegen.WriteFileAtomic(filepath.Join(dir, "moe_check.cu"), []byte(src)); err != nil {
		return err
	}
	spec, err := json.MarshalIndent(map[string]any{
		"tokens": cfg.benchTokens, "d_model": cfg.bench.DModel, "experts": cfg.bench.Experts, "top_k": cfg.bench.TopK,
		"expert_hidden": cfg.bench.Hidden, "activation": cfg.bench.Activation, "normalize": cfg.bench.Normalize,
		"sigmoid": cfg.bench.Score == program.Sigmoid, "reps": cfg.reps,
	}, "", "  ")
	if err != nil {
		return err
	}
	return codegen.WriteFileAtomic(filepath.Join(dir, "bench.json"), append(spec, '\n'))
}

// poison fills pure outputs with NaN (floats) or -7 (ints) so that an element a GPU
// kernel forgets to write fails the comparison instead of matching stale input.
func poison(k *kernels.Kernel, env kernels.Env) {
	for _, p := range k.Outputs() {
		if p.Access != kernels.Out {
			continue
		}
		for i := range env.I[p.Name] {
			env.I[p.Name][i] = -7
		}
		for i := range env.F[p.Name] {
			env.F[p.Name][i] = float32(math.NaN())
		}
	}
}
