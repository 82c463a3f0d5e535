package gogen_test

import (
	"testing"

	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/runtime/train"
)

// variantsModel holds the MoE variants of public families (compiler/step's
// moe_variants.go) in one model: Llama 4's gated inputs, gpt-oss's clamped SwiGLU,
// Qwen2-MoE's gated shared expert, DeepSeek-V3's routed scale and Arctic's dense FFN
// beside experts that run beside attention.
const variantsModel = `model variants {
  vocab    = 256
  d_model  = 32
  layers   = 2
  seq_len  = 32
  attention { heads = 4 }
  ffn { hidden = 32; activation = swiglu }
  moe {
    experts = 4; top_k = 2; expert_hidden = 16; shared_experts = 1; shared_hidden = 16; shared_gate = true
    gate_input = true; swiglu_limit = 0.5; routed_scale = 2.5; parallel_dense = true; parallel_attention = true
    capacity_factor = 1.25; balance_loss = 0.01; every = 2
  }
}

cluster local { gpu = cpu; ranks = 1; host_memory = 8GiB }

train variants on local {
  tokens_per_batch = 256
  micro_batch      = 4
  precision        = fp32
  optimizer        = adamw { lr = 3e-3; warmup = 2; weight_decay = 0.1 }
  data             = "$GOROOT/src/strings/*.go"

  stage moe { steps = 20 }
}
`

// TestStepProgramMoEVariants writes out the step programs of the MoE variants' model at
// tp 2 × dp 2 × ep 2 with sequence parallelism (the clamped activation, the gated permute
// and unweighted combine, the shared gate, and the gates' gradient summed over tp), and
// holds the generated program's losses to moec run's on the same layout within 1e-6.
func TestStepProgramMoEVariants(t *testing.T) {
	layoutFormMatchesRun(t, needGoBuild(t), variantsModel, train.Sharding{Ranks: 4, TP: 2, PP: 1, EP: 2, SP: true}, step.Layout{DP: 2, EP: 2, TP: 2, PP: 1, SequenceParallel: true},
		"exec.ActClamped(", "exec.ActClampedBwd(", "k.PermuteGated(", "k.PermuteGatedBwd(",
		"k.CombineUngated(", "k.CombineUngatedBwd(", "exec.SigmoidGate(", "exec.SigmoidGateBwd(")
}
