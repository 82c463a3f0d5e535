package gogen_test

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/moec-dev/moec/runtime/train"
)

// attnVariantsModel has Llama 4's attention (a rotary layer with chunks and unscaled q/k
// norms, a layer without rotary positions with the query temperature) and gpt-oss's sinks.
const attnVariantsModel = `model variants {
  vocab    = 256
  d_model  = 32
  layers   = 2
  seq_len  = 32
  attention { heads = 4; kv_heads = 2; nope_every = 2; chunk = 8; qk_l2_norm = true; nope_temperature = 0.5; nope_temperature_floor = 4; sinks = true }
  ffn { hidden = 64; activation = swiglu }
  moe { experts = 4; top_k = 2; capacity_factor = dropless; balance_loss = 0.01; every = 2 }
}

cluster local { gpu = cpu; ranks = 1; host_memory = 8GiB }

train variants on local {
  tokens_per_batch = 128
  micro_batch      = 4
  precision        = fp32
  optimizer        = adamw { lr = 3e-3; warmup = 2 }
  data             = "$GOROOT/src/strings/*.go"

  stage moe { steps = 20 }
}
`

// TestStepProgramAttentionVariants writes out the step program of a model with the
// attention variants (the masked softmax with sinks and its backward with the sinks'
// gradient, the q/k norms and their backward, the query temperature), builds it, and holds
// its losses to moec run's through the executor within 1e-6 relative.
func TestStepProgramAttentionVariants(t *testing.T) {
	gobin := needGoBuild(t)
	prog := loadSections(t, map[string][]byte{"input.moe": []byte(attnVariantsModel)})
	res, err := train.Run(context.Background(), train.Options{Program: prog, StageName: "moe", OutRoot: t.TempDir(),
		Steps: stepSteps, ValWindows: 2, Layout: &train.Sharding{Ranks: 1, EP: 1, Program: true}})
	if err != nil {
		t.Fatal(err)
	}
	want := runLosses(t, res)
	src, _ := emitStep(t, prog, "moe")
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, call := range []string{"k.SoftmaxMasked(", "k.SoftmaxBwdSinks(", "k.QKL2Norm(", "exec.QKL2NormBwd(", "k.QueryScale("} {
		if !strings.Contains(string(b), call) {
			t.Errorf("the program has no %s", call)
		}
	}
	exe, err := buildStepSource(t, gobin, src, nil)
	if err != nil {
		t.Fatalf("go build of the step program: %v", err)
	}
	got, _ := runProgram(t, exe, "-steps", strconv.Itoa(stepSteps))
	closeLosses(t, got, want, "")
}
