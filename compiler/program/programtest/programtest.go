package programtest

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/moec-dev/moec/compiler/check"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/lang/parse"
)

// Model checks `model NAME { BODY }` and returns the resolved model.
func Model(t testing.TB, name, body string) *program.Model {
	t.Helper()
	m, err := resolve(name, body)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// MustModel is Model for helpers without a test at hand: it panics where the model does
// not check.
func MustModel(name, body string) *program.Model { return shared(name, body, nil) }

// resolve checks `model NAME { BODY }`.
func resolve(name, body string) (*program.Model, error) {
	src := fmt.Sprintf("model %s {\n%s\n}\n", name, body)
	f, ds := parse.File(name+".moe", []byte(src))
	prog, ds2 := check.Check(f)
	if ds = append(ds, ds2...); ds.HasErrors() {
		return nil, fmt.Errorf("programtest: model %s does not check: %w\n%s", name, ds.Err(), src)
	}
	return prog.Models[name], nil
}

// shared resolves one of the package's own models, which always check: a failure is this
// package's bug, not a test's, and panics.
func shared(name, body string, edits []func(*program.Model)) *program.Model {
	m, err := resolve(name, body)
	if err != nil {
		panic(err)
	}
	for _, e := range edits {
		e(m)
	}
	return m
}

// Tiny is a small dense model: two layers of width 8 over a 13-token vocabulary, rotary
// positions, SwiGLU, after the edits (applied in order to the resolved model).
func Tiny(edits ...func(*program.Model)) *program.Model {
	return shared("tiny", `vocab = 13; vocab_pad_to = 1; d_model = 8; layers = 2; seq_len = 6
attention { heads = 2; head_dim = 4 }
ffn { hidden = 12; activation = swiglu }`, edits)
}

// TinyMoE is a small MoE model: two layers of width 32 over 260 tokens (padded to a
// multiple of 8), four top-1 experts in every second layer behind a token-embedding
// router, as examples/hunyuan_tiny.moe routes, after the edits.
func TinyMoE(edits ...func(*program.Model)) *program.Model {
	return shared("tiny", `vocab = 260; vocab_pad_to = 8; d_model = 32; layers = 2; seq_len = 32
attention { heads = 2 }
ffn { hidden = 64; activation = swiglu }
moe { experts = 4; top_k = 1; every = 2; router = token_embedding; router_dim = 16; capacity_factor = 1.25; balance_loss = 0.01 }`, edits)
}

// HunyuanTiny is examples/hunyuan_tiny.moe's model at a stage of experts experts.
func HunyuanTiny(t testing.TB, experts int) *program.Model {
	t.Helper()
	_, here, _, _ := runtime.Caller(0)
	path := filepath.Join(filepath.Dir(here), "..", "..", "..", "examples", "hunyuan_tiny.moe")
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	prog, _, ds := check.Load("hunyuan_tiny.moe", func(string) ([]byte, error) { return src, nil })
	if ds.HasErrors() {
		t.Fatalf("programtest: %v", ds)
	}
	return program.StageModel(prog.Models["hunyuan_tiny"], &program.Stage{Experts: experts})
}
