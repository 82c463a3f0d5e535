package gogen_test

import (
	"context"
	"os/exec"
	"strconv"
	"testing"

	"github.com/moec-dev/moec/runtime/train"
)

// deepseekSource is a tiny DeepSeek-V3-style model: latent attention, sigmoid routing within
// groups on scores plus the selection bias that auxiliary-loss-free balancing moves, with
// two micro-batches a step so the loads are summed before the bias moves.
const deepseekSource = `model tiny {
  vocab = 256; d_model = 32; layers = 2; seq_len = 32
  attention { heads = 2; q_lora_rank = 16; kv_lora_rank = 8; qk_nope_head_dim = 8; qk_rope_head_dim = 4; v_head_dim = 8 }
  ffn { hidden = 64; activation = swiglu }
  moe {
    experts = 4; top_k = 2; expert_hidden = 16; shared_experts = 1; first_dense = 1
    score = sigmoid; normalize = true; capacity_factor = dropless; aux_free_bias = 0.01
    groups = 2; topk_groups = 1; routed_scale = 2.5
  }
}

cluster local { gpu = cpu; ranks = 1; host_memory = 8GiB }

train tiny on local {
  tokens_per_batch = 256
  micro_batch      = 4
  precision        = fp32
  optimizer        = adamw { lr = 3e-3; warmup = 2 }
  data             = "$GOROOT/src/strings/*.go"

  stage main { experts = 4; steps = 20 }
}
`

// TestProgramMovesRouterBias: the generated program of a model with auxiliary-loss-free
// balancing moves the selection bias after every step as train.Run does: the routing of
// every later step depends on it, so the losses are equal only if the updates are.
func TestProgramMovesRouterBias(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go is not on PATH: cannot build the generated program")
	}
	if testing.Short() {
		t.Skip("builds and runs a program; skipped with -short")
	}
	prog := loadSections(t, map[string][]byte{"input.moe": []byte(deepseekSource)})
	exe, _, _ := buildProgram(t, gobin, prog, "main")
	res, err := train.Run(context.Background(), train.Options{Program: prog, OutRoot: t.TempDir(), StageName: "main", Steps: stepsCompared, ValWindows: 4})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := runProgram(t, exe, "-steps", strconv.Itoa(stepsCompared), "-generate", "0")
	sameLosses(t, "deepseek", got, runLosses(t, res))
}
