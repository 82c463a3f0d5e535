package kernelsel_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moec-dev/moec/codegen"
	"github.com/moec-dev/moec/codegen/llvm"
	"github.com/moec-dev/moec/compiler/check"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/program/programtest"
	"github.com/moec-dev/moec/runtime/kernelsel"
	"github.com/moec-dev/moec/runtime/nn"
	"github.com/moec-dev/moec/runtime/optim"
	"github.com/moec-dev/moec/runtime/train"
)

func tinyModel() *program.Model {
	return programtest.MustModel("tiny", `vocab = 64; vocab_pad_to = 1; d_model = 32; layers = 3; seq_len = 16
attention { heads = 2; talking_heads = true; share_weights = 0.5 }
ffn { hidden = 64; activation = gelu }
moe { experts = 4; top_k = 2; expert_hidden = 32; every = 2; router = token_embedding; router_dim = 16; normalize = true; capacity_factor = 1.25; balance_loss = 0.01 }`)
}

// counting wraps Kernels and counts the calls, to show the compiled path ran.
type counting struct {
	k                nn.Kernels
	norm, xent, grad int
}

func (c *counting) RMSNorm(out, rstd, x, w []float32, rows int) error {
	c.norm++
	return c.k.RMSNorm(out, rstd, x, w, rows)
}

func (c *counting) CrossEntropy(loss, lse, logits []float32, targets []int32, rows int) error {
	c.xent++
	return c.k.CrossEntropy(loss, lse, logits, targets, rows)
}

func (c *counting) CrossEntropyGrad(d, logits, lse []float32, targets []int32, rows int, scale float32) error {
	c.grad++
	return c.k.CrossEntropyGrad(d, logits, lse, targets, rows, scale)
}

// step drives one schedule, with kernels k or (nil) the Go kernels.
func step(t *testing.T, m *nn.Model, b nn.Batch, o nn.StepOptions, k nn.Kernels) float64 {
	t.Helper()
	s, err := m.BeginStepWith(b, o, k)
	if err != nil {
		t.Fatal(err)
	}
	for l := 0; l < s.Layers(); l++ {
		if err := s.LayerForward(l); err != nil {
			t.Fatal(err)
		}
	}
	st, err := s.HeadForward()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.HeadBackward(); err != nil {
		t.Fatal(err)
	}
	for l := s.Layers() - 1; l >= 0; l-- {
		if err := s.LayerBackward(l); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.EmbedBackward(); err != nil {
		t.Fatal(err)
	}
	return st.Loss
}

// stepper is what the training loop needs of an optimizer: optim.AdamW or the compiled one.
type stepper interface {
	Step(gradScale float64) (optim.StepInfo, error)
}

var adamConfig = optim.Config{LR: 3e-3, Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.1, TotalSteps: 100, Schedule: "constant", ClipNorm: 1}

func newTrainer(t *testing.T, cfg *program.Model, lib *kernelsel.LLVM) (*nn.Model, stepper) {
	t.Helper()
	m, err := nn.New(cfg, 5)
	if err != nil {
		t.Fatal(err)
	}
	var ps []optim.Param
	for _, p := range m.Params() {
		ps = append(ps, optim.Param{Name: p.Name, Shape: p.Shape, W: p.W, G: p.G})
	}
	if lib != nil {
		o, err := lib.NewAdamW(adamConfig, ps)
		if err != nil {
			t.Fatal(err)
		}
		return m, o
	}
	o, err := optim.NewAdamW(adamConfig, ps)
	if err != nil {
		t.Fatal(err)
	}
	return m, o
}

// Tolerances of the differential test. The compiled kernels sum in float32 where the Go
// kernels sum in float64; over a few steps of AdamW (which normalises gradients, so a
// relative gradient error moves weights by about lr times it) the losses stay within
// lossTol relative and the first step's gradients within gradTol relative (L2).
const (
	lossTol = 1e-6
	gradTol = 1e-5
	steps   = 8
)

// TestLLVMMatchesGo trains the same model from the same start on the same batches twice,
// once with the Go kernels and optim.AdamW, once with the compiled LLVM kernels for its
// shapes (norms, cross-entropy, AdamW).
func TestLLVMMatchesGo(t *testing.T) {
	clang := llvm.FindClang()
	if clang == "" {
		t.Skip("clang is not on PATH: no compiled kernels to compare")
	}
	cfg := tinyModel()
	dir := t.TempDir()
	res, err := codegen.Emit(dir, "tiny", "moe", cfg, codegen.Options{Clang: clang})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Compiled) != 2 {
		t.Fatalf("Emit compiled %v", res.Compiled)
	}
	lib, err := kernelsel.OpenStage(dir, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer lib.Close()
	k := &counting{k: lib}

	goModel, goOpt := newTrainer(t, cfg, nil)
	llModel, llOpt := newTrainer(t, cfg, lib)
	r := rand.New(rand.NewPCG(7, 8))
	const B, T = 2, 16
	for i := int64(0); i < steps; i++ {
		b := nn.Batch{B: B, T: T, Tokens: make([]int32, B*(T+1))}
		for j := range b.Tokens {
			b.Tokens[j] = int32(r.IntN(int(cfg.Vocab)))
		}
		o := nn.StepOptions{Seed: 3, Step: i, Train: true}
		goModel.ZeroGrad()
		llModel.ZeroGrad()
		want := step(t, goModel, b, o, nil)
		got := step(t, llModel, b, o, k)
		if d := math.Abs(got-want) / want; d > lossTol {
			t.Fatalf("step %d: loss %v with LLVM kernels, %v with Go kernels (relative difference %.2g > %g)", i+1, got, want, d, lossTol)
		}
		if i == 0 {
			var num, den float64
			for pi, p := range goModel.Params() {
				q := llModel.Params()[pi]
				for j := range p.G {
					e := float64(q.G[j] - p.G[j])
					num += e * e
					den += float64(p.G[j]) * float64(p.G[j])
				}
			}
			if rel := math.Sqrt(num / den); rel > gradTol || math.IsNaN(rel) {
				t.Fatalf("first step: gradients differ by %.2g relative (L2), more than %g", rel, gradTol)
			} else {
				t.Logf("first step: gradients agree to %.2g relative (L2)", rel)
			}
		}
		t.Logf("step %d: loss Go %.9f LLVM %.9f", i+1, want, got)
		if _, err := goOpt.Step(1); err != nil {
			t.Fatal(err)
		}
		if _, err := llOpt.Step(1); err != nil {
			t.Fatal(err)
		}
	}
	// Pre-norms of every layer (two each) and the final norm; the loss and its gradient.
	wantNorm := steps * (2*cfg.Layers + 1)
	if k.norm != wantNorm || k.xent != steps || k.grad != steps {
		t.Errorf("compiled kernels ran %d norms, %d cross-entropies, %d gradients; want %d, %d, %d", k.norm, k.xent, k.grad, wantNorm, steps, steps)
	}

	// A library compiled for other shapes is refused, not run on the wrong sizes.
	other := tinyModel()
	other.DModel, other.Attention.HeadDim = 64, 32
	if _, err := kernelsel.OpenStage(dir, other); err == nil || !strings.Contains(err.Error(), "other kernel shapes") {
		t.Errorf("a library for d_model 32 loaded for d_model 64: %v", err)
	}
	if err := lib.RMSNorm(make([]float32, 16), make([]float32, 1), make([]float32, 16), make([]float32, 16), 1); err == nil {
		t.Error("RMSNorm over 16 values accepted by a d_model 32 kernel")
	}
	if err := lib.CrossEntropy(make([]float32, 1), make([]float32, 1), make([]float32, 64), []int32{64}, 1); err == nil {
		t.Error("a target outside the vocabulary reached the compiled kernel")
	}
}

func TestOpenMissing(t *testing.T) {
	if _, err := kernelsel.OpenStage(t.TempDir(), tinyModel()); err == nil || !strings.Contains(err.Error(), "no compiled kernels") {
		t.Errorf("missing library: %v", err)
	}
}

// TestTrainRunWithLLVM: train.Run with NewNet trains on the compiled kernels and logs
// losses within lossTol of the run with Go kernels.
func TestTrainRunWithLLVM(t *testing.T) {
	clang := llvm.FindClang()
	if clang == "" {
		t.Skip("clang is not on PATH: no compiled kernels to compare")
	}
	src := []byte(`model tiny {
  vocab = 256; d_model = 32; layers = 2; seq_len = 16
  attention { heads = 2; share_weights = 0.5 }
  ffn { hidden = 64; activation = gelu }
  moe { experts = 4; top_k = 2; router = token_embedding; router_dim = 16; capacity_factor = 1.25 }
}
cluster local { gpu = cpu; ranks = 1; host_memory = 8GiB }
train tiny on local {
  tokens_per_batch = 64; micro_batch = 4; precision = fp32
  optimizer = adamw { lr = 3e-3 }
  data = "$GOROOT/src/strings/*.go"
  stage moe { steps = 6 }
}
`)
	prog, _, diags := check.Load("tiny.moe", func(string) ([]byte, error) { return src, nil })
	if diags.HasErrors() {
		t.Fatal(diags.Err())
	}
	m := program.StageModel(prog.Models["tiny"], prog.Trains["tiny"].Stages[0])
	dir := t.TempDir()
	if _, err := codegen.Emit(dir, "tiny", "moe", m, codegen.Options{Clang: clang}); err != nil {
		t.Fatal(err)
	}
	run := func(newNet train.NewNetFunc) []float64 {
		res, err := train.Run(context.Background(), train.Options{Program: prog, OutDir: t.TempDir(), ValWindows: 2, NewNet: newNet})
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(res.LogPath)
		if err != nil {
			t.Fatal(err)
		}
		var losses []float64
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			var r train.StepRecord
			if err := json.Unmarshal([]byte(line), &r); err != nil {
				t.Fatal(err)
			}
			losses = append(losses, r.Loss)
		}
		return losses
	}
	want := run(nil)
	got := run(kernelsel.NewNet(filepath.Join(dir, codegen.LLVMDir, codegen.LLVMLibrary)))
	if len(got) != 6 || len(want) != 6 {
		t.Fatalf("%d and %d steps logged", len(got), len(want))
	}
	for i := range got {
		if d := math.Abs(got[i]-want[i]) / want[i]; d > lossTol {
			t.Errorf("step %d: loss %v with LLVM kernels, %v with Go kernels", i+1, got[i], want[i])
		}
	}
	if _, err := kernelsel.NewNet(filepath.Join(t.TempDir(), "missing.so"))(m, 1); err == nil {
		t.Error("NewNet with a missing library built a model")
	}
}

// TestAdamWMatchesOptim: the compiled AdamW follows optim.AdamW (schedule with warmup,
// clipping, decay on matrices only) to float32 rounding over several steps.
func TestAdamWMatchesOptim(t *testing.T) {
	clang := llvm.FindClang()
	if clang == "" {
		t.Skip("clang is not on PATH: no compiled kernels to compare")
	}
	cfg := tinyModel()
	dir := t.TempDir()
	if _, err := codegen.Emit(dir, "tiny", "moe", cfg, codegen.Options{Clang: clang}); err != nil {
		t.Fatal(err)
	}
	lib, err := kernelsel.OpenStage(dir, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer lib.Close()
	r := rand.New(rand.NewPCG(1, 1))
	mk := func() []optim.Param {
		r := rand.New(rand.NewPCG(2, 2))
		var ps []optim.Param
		for _, shape := range [][]int{{8, 5}, {7}, {3, 4, 2}} {
			n := 1
			for _, s := range shape {
				n *= s
			}
			p := optim.Param{Name: fmt.Sprint(shape), Shape: shape, W: make([]float32, n), G: make([]float32, n)}
			for i := range p.W {
				p.W[i] = float32(r.NormFloat64())
			}
			ps = append(ps, p)
		}
		return ps
	}
	oc := adamConfig
	oc.Warmup, oc.Schedule, oc.TotalSteps, oc.MinLR = 2, "cosine", 6, 3e-4
	want, got := mk(), mk()
	ref, err := optim.NewAdamW(oc, want)
	if err != nil {
		t.Fatal(err)
	}
	comp, err := lib.NewAdamW(oc, got)
	if err != nil {
		t.Fatal(err)
	}
	clipped := false
	for step := 0; step < 6; step++ {
		for i := range want {
			for j := range want[i].G {
				g := float32(r.NormFloat64() * 0.5)
				want[i].G[j], got[i].G[j] = g, g
			}
		}
		a, err := ref.Step(0.5)
		if err != nil {
			t.Fatal(err)
		}
		b, err := comp.Step(0.5)
		if err != nil {
			t.Fatal(err)
		}
		if a != b {
			t.Fatalf("step %d: optim %+v, compiled %+v", step+1, a, b)
		}
		clipped = clipped || a.Clipped
		for i := range want {
			for j := range want[i].W {
				// One update moves a weight by about lr; float32 rounding of it is far below 1e-6.
				if d := math.Abs(float64(got[i].W[j] - want[i].W[j])); d > 1e-6 {
					t.Fatalf("step %d: %s[%d] = %v compiled, %v by optim", step+1, want[i].Name, j, got[i].W[j], want[i].W[j])
				}
			}
		}
	}
	if !clipped {
		t.Error("no step clipped: the test does not exercise clipping")
	}
	if comp.StepCount() != 6 {
		t.Errorf("StepCount %d", comp.StepCount())
	}
	// The compiled optimizer is optim's, so its moments are checkpointed and restored as
	// optim's are: the same names and shapes, values to float32 rounding.
	refState, compState := ref.State(), comp.State()
	if len(refState) != len(compState) {
		t.Fatalf("state: optim %d tensors, compiled %d", len(refState), len(compState))
	}
	for i := range refState {
		a, b := refState[i], compState[i]
		if a.Name != b.Name || fmt.Sprint(a.Shape) != fmt.Sprint(b.Shape) {
			t.Fatalf("state %d: optim %s %v, compiled %s %v", i, a.Name, a.Shape, b.Name, b.Shape)
		}
		for j := range a.Data {
			if d := math.Abs(float64(a.Data[j] - b.Data[j])); d > 1e-5*(1+math.Abs(float64(a.Data[j]))) {
				t.Fatalf("state %s[%d]: optim %v, compiled %v", a.Name, j, a.Data[j], b.Data[j])
			}
		}
	}
	resumed, err := lib.NewAdamW(oc, mk())
	if err != nil {
		t.Fatal(err)
	}
	if err := resumed.LoadState(compState, comp.StepCount()); err != nil {
		t.Fatalf("the compiled optimizer does not restore its own state: %v", err)
	}
	if resumed.StepCount() != 6 {
		t.Errorf("resumed StepCount %d, want 6", resumed.StepCount())
	}
	if _, err := lib.NewAdamW(optim.Config{LR: -1}, nil); err == nil {
		t.Error("a negative learning rate was accepted")
	}
}
