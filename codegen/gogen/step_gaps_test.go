package gogen_test

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/runtime/train"
)

// gapsModel holds OLMoE's q/k norms over the whole projections and tied embeddings.
const gapsModel = `model gaps {
  vocab          = 256
  d_model        = 32
  layers         = 2
  seq_len        = 32
  tie_embeddings = true
  attention { heads = 4; kv_heads = 2; qk_norm = full }
  ffn { hidden = 64; activation = swiglu }
  moe { experts = 4; top_k = 2; capacity_factor = dropless; balance_loss = 0.01; every = 2 }
}

cluster local { gpu = cpu; ranks = 1; host_memory = 8GiB }

train gaps on local {
  tokens_per_batch = 256
  micro_batch      = 4
  precision        = fp32
  optimizer        = adamw { lr = 3e-3; warmup = 2 }
  data             = "$GOROOT/src/strings/*.go"

  stage moe { steps = 20 }
}
`

// TestStepProgramGapLayouts writes out the step programs of a model with whole-projection
// q/k norms and tied embeddings at tp 2 × pp 2 (the norms' statistics all-reduced over tp,
// the shared table's gradient over the embedding group), and holds the generated program's
// losses to moec run's on the same layout within 1e-6.
func TestStepProgramGapLayouts(t *testing.T) {
	layoutFormMatchesRun(t, needGoBuild(t), gapsModel, train.Sharding{Ranks: 4, TP: 2, PP: 2, EP: 1}, step.Layout{DP: 1, EP: 1, TP: 2, PP: 2},
		"k.QKNormSumSq(", "k.QKNormSpan(", "k.QKNormBwdDot(", "k.QKNormSpanBwd(")
}

// layoutFormMatchesRun trains src's stage moe through moec run on the layout sh and
// through the step program of its rank 0 at l written out as Go (which must call each of
// calls), and holds the generated program's losses to the run's within 1e-6.
func layoutFormMatchesRun(t *testing.T, gobin, src string, sh train.Sharding, l step.Layout, calls ...string) {
	t.Helper()
	prog := loadSections(t, map[string][]byte{"input.moe": []byte(src)})
	sh.Program = true
	res, err := train.Run(context.Background(), train.Options{Program: prog, StageName: "moe", OutRoot: t.TempDir(),
		Steps: stepSteps, ValWindows: 2, Layout: &sh})
	if err != nil {
		t.Fatal(err)
	}
	want := runLosses(t, res)
	_, cfg := stepProgramFor(t, prog, "moe")
	sp, err := step.LowerRank(cfg.Model, step.Batch{MicroBatch: cfg.MicroBatch / l.DP, SeqLen: cfg.SeqLen, Micro: cfg.Accum}, l, 0)
	if err != nil {
		t.Fatal(err)
	}
	sp.Stage = "moe"
	gen := emitProgram(t, cfg, sp)
	b, err := os.ReadFile(gen)
	if err != nil {
		t.Fatal(err)
	}
	for _, call := range calls {
		if !strings.Contains(string(b), call) {
			t.Errorf("the program has no %s", call)
		}
	}
	exe, err := buildStepSource(t, gobin, gen, nil)
	if err != nil {
		t.Fatalf("go build of the step program: %v", err)
	}
	got, _ := runProgram(t, exe, "-steps", strconv.Itoa(stepSteps))
	closeLosses(t, got, want, " on the same layout")
}
