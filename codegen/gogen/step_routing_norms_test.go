package gogen_test

import (
	"testing"

	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/runtime/train"
)

// postGroupsModel has post-norm LayerNorms and DeepSeek-V2's node-limited routing.
const postGroupsModel = `model post_groups {
  vocab          = 256
  d_model        = 32
  layers         = 2
  seq_len        = 32
  norm           = layernorm
  norm_placement = post
  attention { heads = 4 }
  ffn { hidden = 32; activation = swiglu }
  moe {
    experts = 8; top_k = 3; expert_hidden = 16; groups = 4; topk_groups = 2; normalize = false
    routed_scale = 2.5; capacity_factor = 1.25; balance_loss = 0.01; every = 2
  }
}

cluster local { gpu = cpu; ranks = 1; host_memory = 8GiB }

train post_groups on local {
  tokens_per_batch = 256
  micro_batch      = 4
  precision        = fp32
  optimizer        = adamw { lr = 3e-3; warmup = 2; weight_decay = 0.1 }
  data             = "$GOROOT/src/strings/*.go"

  stage moe { steps = 20 }
}
`

// TestStepProgramPostNormGroups writes out the step programs of a post-norm model with
// node-limited routing at tp 2 × dp 2 × ep 2 and holds the generated program's losses to
// moec run's on the same layout within 1e-6: the route kernel it calls chooses within the
// groups, and the post norms are the listing's norm, add and copy ops.
func TestStepProgramPostNormGroups(t *testing.T) {
	layoutFormMatchesRun(t, needGoBuild(t), postGroupsModel, train.Sharding{Ranks: 4, TP: 2, PP: 1, EP: 2}, step.Layout{DP: 2, EP: 2, TP: 2, PP: 1},
		"k.Route(")
}
