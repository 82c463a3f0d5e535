package gogen_test

import (
	"testing"

	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/runtime/train"
)

// auxFreeModel is DeepSeek-V3's shape: latent attention with a low-rank query, and routing
// by sigmoid scores within groups plus the selection bias that auxiliary-loss-free
// balancing moves.
const auxFreeModel = `model auxfree {
  vocab    = 256
  d_model  = 32
  layers   = 2
  seq_len  = 32
  attention { heads = 4; q_lora_rank = 16; kv_lora_rank = 8; qk_nope_head_dim = 8; qk_rope_head_dim = 4; v_head_dim = 8 }
  ffn { hidden = 32; activation = swiglu }
  moe {
    experts = 4; top_k = 2; expert_hidden = 16; shared_experts = 1
    score = sigmoid; normalize = true; capacity_factor = dropless; aux_free_bias = 0.05
    groups = 2; topk_groups = 1; routed_scale = 2.5
  }
}

cluster local { gpu = cpu; ranks = 1; host_memory = 8GiB }

train auxfree on local {
  tokens_per_batch = 256
  micro_batch      = 4
  precision        = fp32
  optimizer        = adamw { lr = 3e-3; warmup = 2 }
  data             = "$GOROOT/src/strings/*.go"

  stage moe { steps = 20 }
}
`

// TestStepProgramRoutingBias writes out the step programs of a DeepSeek-V3-shaped model at
// dp 2 × ep 2 with ZeRO-3 (latent attention's ops; the biased route, the loads summed over
// the replicas, the bias's update after AdamW in the rank's parameter shard) and holds the generated program's losses to moec run's
// on the same layout within 1e-6: the routing of every later step depends on the bias.
func TestStepProgramRoutingBias(t *testing.T) {
	layoutFormMatchesRun(t, needGoBuild(t), auxFreeModel, train.Sharding{Ranks: 2, TP: 1, PP: 1, EP: 2, ZeRO: 3}, step.Layout{DP: 2, EP: 2, TP: 1, PP: 1, ZeRO: 3},
		"k.RouteBiased(", "exec.ExpertLoad(", "exec.RouterBiasBwd(", "exec.RouterBiasUpdate(",
		"exec.LatentNorm(", "exec.MLASplit(", "exec.MLASplitBwd(", "k.MLAHeads(", "k.MLAHeadsBwd(", "k.MLAAttention(", "k.MLAAttentionBwd(")
}
