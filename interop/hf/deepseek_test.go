package hf

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moec-dev/moec/compiler/check"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/lang/parse"
	"github.com/moec-dev/moec/runtime/nn"
)

// deepseekModels are tiny DeepSeek-V3-shaped models: latent attention with a low-rank query
// and yarn's mscale, sigmoid routing within groups on biased scores; and DeepSeek-V2-Lite's
// full-rank query with two shared experts and no groups; and DeepSeek-V2's softmax router
// without a selection bias (DeepseekV2ForCausalLM's checkpoints, which moec imports); and
// DeepSeek-MoE's (DeepseekForCausalLM): standard attention, a dense first layer, two shared
// experts and a plain top-2; GQA with biases, MoE every other layer from layer 2, one shared
// expert, a renormalised top-3 and linear rope scaling; and DeepSeek-MoE without shared
// experts (n_shared_experts: null).
const deepseekModels = `
model tiny_deepseek_v3 {
  vocab = 300; d_model = 32; layers = 3; seq_len = 16; norm_eps = 1e-6
  rope_scaling = yarn; rope_factor = 4; rope_original_seq_len = 4; rope_mscale = 1; rope_mscale_all_dim = 0.8
  attention { heads = 4; q_lora_rank = 12; kv_lora_rank = 8; qk_nope_head_dim = 6; qk_rope_head_dim = 4; v_head_dim = 5 }
  ffn { hidden = 40; activation = swiglu }
  moe {
    experts = 8; top_k = 2; expert_hidden = 12; shared_experts = 1; shared_hidden = 12; first_dense = 1
    score = sigmoid; normalize = true; capacity_factor = dropless; aux_free_bias = 0.001
    groups = 4; topk_groups = 2; routed_scale = 2.5
  }
}
model tiny_deepseek_v2_lite {
  vocab = 300; d_model = 32; layers = 2; seq_len = 16; norm_eps = 1e-6
  attention { heads = 4; kv_lora_rank = 8; qk_nope_head_dim = 4; qk_rope_head_dim = 6; v_head_dim = 4 }
  ffn { hidden = 40; activation = swiglu }
  moe {
    experts = 4; top_k = 2; expert_hidden = 12; shared_experts = 2; first_dense = 1
    score = sigmoid; normalize = false; capacity_factor = dropless; aux_free_bias = 0.001
  }
}
model tiny_deepseek_v2 {
  vocab = 300; d_model = 32; layers = 3; seq_len = 16; norm_eps = 1e-6
  attention { heads = 4; q_lora_rank = 10; kv_lora_rank = 8; qk_nope_head_dim = 4; qk_rope_head_dim = 6; v_head_dim = 4 }
  ffn { hidden = 40; activation = swiglu }
  moe { experts = 4; top_k = 2; expert_hidden = 12; shared_experts = 2; first_dense = 1; normalize = false; capacity_factor = dropless }
}
model tiny_deepseek_moe {
  vocab = 300; d_model = 32; layers = 3; seq_len = 16; norm_eps = 1e-6
  attention { heads = 4; kv_heads = 4 }
  ffn { hidden = 40; activation = swiglu }
  moe { experts = 6; top_k = 2; expert_hidden = 12; shared_experts = 2; first_dense = 1; normalize = false; capacity_factor = dropless; balance_loss = 0.001 }
}
model tiny_deepseek_moe_norm {
  vocab = 300; d_model = 32; layers = 5; seq_len = 16; norm_eps = 1e-6; rope_scaling = linear; rope_factor = 2
  attention { heads = 4; kv_heads = 2; qkv_bias = true; out_bias = true }
  ffn { hidden = 40; activation = swiglu }
  moe { experts = 4; top_k = 3; expert_hidden = 8; shared_experts = 1; first_dense = 1; every = 2; normalize = true; capacity_factor = dropless; balance_loss = 0.01 }
}
model tiny_deepseek_moe_unshared {
  vocab = 300; d_model = 32; layers = 3; seq_len = 16; norm_eps = 1e-6
  attention { heads = 4; kv_heads = 4 }
  ffn { hidden = 40; activation = swiglu }
  moe { experts = 6; top_k = 2; expert_hidden = 12; first_dense = 1; normalize = false; capacity_factor = dropless; balance_loss = 0.001 }
}
`

func deepseekModel(t *testing.T, name string) *program.Model {
	t.Helper()
	f, ds := parse.File("deepseek.moe", []byte(deepseekModels))
	prog, ds2 := check.Check(f)
	if ds = append(ds, ds2...); ds.HasErrors() {
		t.Fatal(ds.Err())
	}
	return prog.Models[name]
}

// TestDeepSeekComputesAsTransformers: tiny DeepSeek models' logits from moec's runtime equal
// those of an independent torch forward written from transformers' modeling_deepseek_v3.py
// (testdata/deepseek_forward.py) on the same weights, exported as DeepseekV3ForCausalLM's
// checkpoint (config.json, the checkpoints' names, interleaved rope rows; the selection
// biases, zeros at initialisation, get random values as every constant tensor does in
// tinyNet). The script also runs the rotate-half rope on the rope rows permuted back and
// checks that it computes the same.
func TestDeepSeekComputesAsTransformers(t *testing.T) {
	py := torchPython(t)
	ids := []int32{5, 17, 250, 3, 99, 42, 7, 128, 11, 64}
	text := make([]string, len(ids))
	for i, id := range ids {
		text[i] = fmt.Sprint(id)
	}
	for _, name := range []string{"tiny_deepseek_v3", "tiny_deepseek_v2_lite"} {
		t.Run(name, func(t *testing.T) {
			m := deepseekModel(t, name)
			dir, _ := saveCheckpoint(t, m)
			out := filepath.Join(t.TempDir(), "export")
			man, err := Export(dir, out)
			if err != nil {
				t.Fatal(err)
			}
			if man.Layout != LayoutDeepSeek {
				t.Fatalf("exported as %s (%v), want DeepSeek's layout", man.Layout, man.Unsupported)
			}
			want, err := tinyNet(t, m).Logits(nn.Batch{B: 1, T: len(ids), Tokens: append(append([]int32(nil), ids...), 0)}, nn.StepOptions{})
			if err != nil {
				t.Fatal(err)
			}
			compareLogits(t, py, "deepseek_forward.py", out, strings.Join(text, ","), want)
		})
	}
}
