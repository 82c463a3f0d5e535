package features_test

import (
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/moec-dev/moec/codegen/cudastep"
	"github.com/moec-dev/moec/codegen/gogen"
	"github.com/moec-dev/moec/compiler/check"
	"github.com/moec-dev/moec/compiler/features"
	"github.com/moec-dev/moec/compiler/features/featuretest"
	"github.com/moec-dev/moec/compiler/plan"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/interop/megatron"
	"github.com/moec-dev/moec/runtime/nn"
)

// example is the featuretest model of one row, and whether the table refuses it on b
// (any feature the example uses counts: the shared gate's example has a shared expert).
func example(t *testing.T, key string, b features.Backend, l features.Layout) (*program.Model, []features.Gap) {
	t.Helper()
	m, err := featuretest.Example(key)
	if err != nil {
		t.Fatal(err)
	}
	return m, features.Refusals(m, b, l)
}

// TestRuntimeColumnAgreesWithNN: for every feature, nn.New refuses the one-feature model
// iff the table's runtime column says Refused, naming the feature it refuses.
func TestRuntimeColumnAgreesWithNN(t *testing.T) {
	for _, f := range features.Table() {
		m, gaps := example(t, f.Key, features.Runtime, features.Layout{})
		_, err := nn.New(m, 1)
		var ue *nn.UnsupportedError
		refused := errors.As(err, &ue)
		if err != nil && !refused {
			t.Errorf("%s: nn.New: %v", f.Key, err)
			continue
		}
		if refused != (len(gaps) > 0) {
			t.Errorf("%s: nn.New refuses: %v (%v); the table's refusals: %v", f.Key, refused, err, gaps)
		}
	}
}

// TestRuntimeComputesWhatItHonours: a feature the runtime column honours changes what the
// runtime computes. Every parameter gets values drawn from its name (so biases are not
// zero and talking-heads mixers not the identity, as at initialisation), and the loss of
// a few training-mode forwards on one batch must differ from the base model's. The
// examples that are Base itself (SwiGLU, renormalised gates, dropless routing) are skipped.
func TestRuntimeComputesWhatItHonours(t *testing.T) {
	const steps = 4 // attention-weight sharing rolls a die per step and layer
	r := rand.New(rand.NewPCG(1, 2))
	batch := nn.Batch{B: 2, T: 8, Tokens: make([]int32, 2*9)}
	for i := range batch.Tokens {
		batch.Tokens[i] = int32(r.IntN(256))
	}
	losses := func(m *program.Model) []float64 {
		t.Helper()
		model, err := nn.New(m, 1)
		if err != nil {
			t.Fatalf("%s: %v", m.Name, err)
		}
		for _, p := range model.Params() {
			h := fnv.New64a()
			h.Write([]byte(p.Name))
			pr := rand.New(rand.NewPCG(h.Sum64(), 7))
			for i := range p.W {
				p.W[i] = float32(pr.NormFloat64() * 0.5)
			}
		}
		var out []float64
		for step := range int64(steps) {
			st, err := model.Forward(batch, nn.StepOptions{Seed: 1, Step: step, Train: true})
			if err != nil {
				t.Fatalf("%s: %v", m.Name, err)
			}
			out = append(out, st.Loss)
		}
		return out
	}
	base := losses(featuretest.Base())
	if again := losses(featuretest.Base()); !slices.Equal(again, base) {
		t.Fatalf("the base model's losses are not reproducible: %v, then %v", base, again)
	}
	for _, f := range features.Table() {
		m, gaps := example(t, f.Key, features.Runtime, features.Layout{})
		if len(gaps) > 0 || f.Key == "swiglu" || f.Key == "normalize" || f.Key == "dropless" {
			continue
		}
		if got := losses(m); slices.Equal(got, base) {
			t.Errorf("%s: the runtime column honours it, but the losses are the base model's: %v", f.Key, got)
		}
	}
}

// TestGoColumnAgreesWithGogen: the generated Go program is written for the one-feature
// model iff the table's Go column refuses none of its features.
func TestGoColumnAgreesWithGogen(t *testing.T) {
	for _, f := range features.Table() {
		m, gaps := example(t, f.Key, features.GoProg, features.Layout{})
		cfg := gogen.Config{Name: "featuretest", Model: m, Optimizer: program.Optimizer{Kind: "adamw", LR: 1e-3},
			Data: "data/*.txt", Seed: 1, Steps: 1, SeqLen: 8, MicroBatch: 1, Accum: 1}
		_, err := gogen.MainSource(cfg)
		var ue *nn.UnsupportedError
		refused := errors.As(err, &ue)
		if err != nil && !refused {
			t.Errorf("%s: MainSource: %v", f.Key, err)
			continue
		}
		if refused != (len(gaps) > 0) {
			t.Errorf("%s: MainSource refuses: %v (%v); the table's refusals: %v", f.Key, refused, err, gaps)
		}
	}
}

// TestStepColumnAgreesWithLower: step.Lower refuses (E0510's Unsupported) exactly the
// features the step column refuses, on one rank and under tensor and pipeline parallelism.
func TestStepColumnAgreesWithLower(t *testing.T) {
	b := step.Batch{MicroBatch: 1, SeqLen: 8, Micro: 2}
	layouts := []step.Layout{{DP: 1, TP: 1, PP: 1}, {DP: 1, TP: 2, PP: 1}, {DP: 1, TP: 1, PP: 2}}
	for _, f := range features.Table() {
		for _, l := range layouts {
			m, gaps := example(t, f.Key, features.Step, features.Layout{TP: l.TP, PP: l.PP})
			_, err := step.Lower(m, b, l)
			var le *step.LayoutError
			if err != nil && !errors.As(err, &le) {
				t.Errorf("%s under %s: %v", f.Key, l, err)
				continue
			}
			var got []string
			if le != nil {
				if len(le.Problems) > 0 {
					t.Errorf("%s under %s: layout problems %v", f.Key, l, le.Problems)
				}
				for _, u := range le.Unsupported {
					got = append(got, u.Feature)
				}
			}
			var want []string
			for _, g := range gaps {
				want = append(want, g.Feature.Name)
			}
			if strings.Join(got, "; ") != strings.Join(want, "; ") {
				t.Errorf("%s under %s: Lower refuses [%s], the table [%s]", f.Key, l, strings.Join(got, "; "), strings.Join(want, "; "))
			}
		}
	}
}

// TestStepHonoursWhatItLowers: a feature the step column honours shows in the lowered
// program: the one-feature model's listing differs from the base model's (Base itself uses
// SwiGLU, renormalised gates and dropless routing, so those examples are Base).
func TestStepHonoursWhatItLowers(t *testing.T) {
	b := step.Batch{MicroBatch: 1, SeqLen: 8, Micro: 2}
	l := step.Layout{DP: 1, TP: 1, PP: 1}
	listing := func(m *program.Model) string {
		t.Helper()
		p, err := step.LowerRank(m, b, l, 0)
		if err != nil {
			t.Fatalf("%s: %v", m.Name, err)
		}
		p.Model = "featuretest"
		var buf strings.Builder
		if err := step.Format(&buf, p); err != nil {
			t.Fatal(err)
		}
		return buf.String()
	}
	base := listing(featuretest.Base())
	for _, f := range features.Table() {
		m, gaps := example(t, f.Key, features.Step, features.Layout{})
		if len(gaps) > 0 || f.Key == "swiglu" || f.Key == "normalize" || f.Key == "dropless" {
			continue
		}
		if listing(m) == base {
			t.Errorf("%s: the step column honours it, but the program is the base model's", f.Key)
		}
	}
}

// megatronSource is a train block for the one-feature models: one stage, AdamW and ZeRO-1
// on one 8-GPU node, so nothing in the launch but the model is unsupported.
const megatronSource = `model featuretest {
  vocab = 256; d_model = 16; layers = 2; seq_len = 8
  attention { heads = 4 }
  ffn { hidden = 24; activation = swiglu }
  moe { experts = 4; top_k = 2 }
}

cluster node {
  nodes = 1; gpus_per_node = 8; gpu = h100_80gb; host_memory = 1TB
}

train featuretest on node {
  tokens_per_batch = 64 * 8
  precision = bf16
  optimizer = adamw { lr = 1e-4 }
  memory = zero(1)
  data = "data/*.txt"
  stage main { tokens = 1M }
}
`

// TestMegatronColumnAgreesWithLaunch: the Megatron launch lists a feature it cannot
// express (Launch.Unsupported) iff the table's Megatron column refuses one the
// one-feature model uses.
func TestMegatronColumnAgreesWithLaunch(t *testing.T) {
	prog, _, ds := check.Load("featuretest.moe", func(path string) ([]byte, error) {
		if path == "featuretest.moe" {
			return []byte(megatronSource), nil
		}
		return nil, fmt.Errorf("%s: %w", path, os.ErrNotExist)
	})
	if ds.HasErrors() {
		t.Fatal(ds.Err())
	}
	tr := prog.Trains["featuretest"]
	st := tr.Stages[0]
	for _, f := range features.Table() {
		m, gaps := example(t, f.Key, features.Megatron, features.Layout{})
		m.Name = "featuretest"
		prog.Models["featuretest"] = m
		p, pd := plan.ForStage(prog, tr, st, plan.Options{})
		if pd.HasErrors() {
			t.Errorf("%s: %v", f.Key, pd.Err())
			continue
		}
		l, err := megatron.ForStage(prog, tr, st, p)
		if err != nil {
			t.Errorf("%s: %v", f.Key, err)
			continue
		}
		if (len(l.Unsupported) > 0) != (len(gaps) > 0) {
			t.Errorf("%s: the launch lists %q; the table refuses %v", f.Key, l.Unsupported, gaps)
		}
	}
}

// TestCUDAStepColumnAgreesWithLower: codegen/cudastep lowers a feature's one-rank step
// program iff the table's CUDA step column honours the feature (and, where it refuses,
// the step program lowered it: the column's other refusals are the step program's).
func TestCUDAStepColumnAgreesWithLower(t *testing.T) {
	b := step.Batch{MicroBatch: 1, SeqLen: 8, Micro: 2}
	l := step.Layout{DP: 1, EP: 1, TP: 1, PP: 1}
	for _, f := range features.Table() {
		m, gaps := example(t, f.Key, features.CUDAStep, features.Layout{})
		_, stepGaps := example(t, f.Key, features.Step, features.Layout{})
		p, err := step.LowerRank(m, b, l, 0)
		if err != nil {
			if len(stepGaps) == 0 {
				t.Errorf("%s: step.LowerRank: %v", f.Key, err)
			} else if len(gaps) == 0 {
				t.Errorf("%s: the step program refuses it, the CUDA step column honours it", f.Key)
			}
			continue
		}
		_, err = cudastep.Lower(p, m)
		if (err != nil) != (len(gaps) > 0) {
			t.Errorf("%s: cudastep.Lower: %v; the table's refusals: %v", f.Key, err, gaps)
		}
	}
}
