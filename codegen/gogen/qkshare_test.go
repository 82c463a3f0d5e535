package gogen_test

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/moec-dev/moec/runtime/train"
)

// qkShareModel is a small MoE model whose attention block is attention's body, trained
// for a few steps on one rank.
const qkShareModel = `model qkshare {
  vocab    = 256
  d_model  = 32
  layers   = 2
  seq_len  = 32
  attention { heads = 4; kv_heads = 2; %s }
  ffn { hidden = 64; activation = swiglu }
  moe { experts = 4; top_k = 2; capacity_factor = dropless; balance_loss = 0.01; every = 2 }
}

cluster local { gpu = cpu; ranks = 1; host_memory = 8GiB }

train qkshare on local {
  tokens_per_batch = 128
  micro_batch      = 4
  precision        = fp32
  optimizer        = adamw { lr = 3e-3; warmup = 2 }
  data             = "$GOROOT/src/strings/*.go"

  stage moe { steps = 20 }
}
`

// TestStepProgramQKNormSharedKV writes out the step programs of models with q/k norms
// (Qwen3's before rotary positions, HunYuan's after), clipped projections and cross-layer
// K/V sharing (qk_norm, clip and their backward, a rotary op of the queries alone), builds
// them, and holds their losses to moec run's through the executor within 1e-6 relative.
func TestStepProgramQKNormSharedKV(t *testing.T) {
	gobin := needGoBuild(t)
	for _, c := range []struct {
		name, attention string
		calls           []string
	}{
		{"qwen3 share_kv", "qk_norm = true; share_kv = 2", []string{"k.QKNorm(", "k.QKNormBwd("}},
		{"hunyuan clip_qkv", "qk_norm = true; qk_norm_after_rope = true; share_kv = 2; clip_qkv = 0.1",
			[]string{"k.QKNorm(", "k.QKNormBwd(", "exec.Clip(", "exec.ClipBwd("}},
	} {
		t.Run(c.name, func(t *testing.T) { goFormMatchesRun(t, gobin, fmt.Sprintf(qkShareModel, c.attention), c.calls) })
	}
}

// goFormMatchesRun trains src's stage moe through moec run and through its step program
// written out as Go, which must call each of calls, and holds the losses together.
func goFormMatchesRun(t *testing.T, gobin, src string, calls []string) {
	t.Helper()
	prog := loadSections(t, map[string][]byte{"input.moe": []byte(src)})
	res, err := train.Run(context.Background(), train.Options{Program: prog, StageName: "moe", OutRoot: t.TempDir(),
		Steps: stepSteps, ValWindows: 2, Layout: &train.Sharding{Ranks: 1, EP: 1, Program: true}})
	if err != nil {
		t.Fatal(err)
	}
	want := runLosses(t, res)
	gen, _ := emitStep(t, prog, "moe")
	b, err := os.ReadFile(gen)
	if err != nil {
		t.Fatal(err)
	}
	for _, call := range calls {
		if !strings.Contains(string(b), call) {
			t.Errorf("the program has no %s", call)
		}
	}
	if !regexp.MustCompile(`k\.Rotary\([^,()]+, nil, (false|true)\)`).Match(b) {
		t.Error("the program has no rotary call of the queries alone")
	}
	exe, err := buildStepSource(t, gobin, gen, nil)
	if err != nil {
		t.Fatalf("go build of the step program: %v", err)
	}
	got, _ := runProgram(t, exe, "-steps", strconv.Itoa(stepSteps))
	closeLosses(t, got, want, "")
}
