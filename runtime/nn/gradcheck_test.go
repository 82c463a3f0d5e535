package nn

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/moec-dev/moec/compiler/analysis"
	"github.com/moec-dev/moec/compiler/program"
)

// The whole-model checks run the float64 instantiation of the same kernels the float32
// Model uses and compare every gradient entry (or a sample of a large tensor) with a
// central difference of the loss. Discrete choices (top-k, capacity drops, sharing dice)
// are piecewise constant in the weights, so with a step of 1e-6 they stay fixed.

func TestGradCheckModels(t *testing.T) {
	cases := map[string]func() *program.Model{
		"dense_swiglu_rotary": tinyDense,
		"dense_layernorm_learned_gelu_tied_bias": func() *program.Model {
			m := tinyDense()
			m.Norm, m.Position, m.MaxPosition = program.LayerNorm, program.Learned, 8
			m.FFN.Activation, m.TieEmbeddings, m.FFN.Bias = program.GELU, true, true
			m.Attention.BiasQKV, m.Attention.BiasOut = true, true
			return m
		},
		"gqa_talking_heads_window_relu": func() *program.Model {
			m := tinyDense()
			m.Attention.Heads, m.Attention.KVHeads, m.Attention.HeadDim = 4, 2, 2
			m.Attention.TalkingHeads, m.Attention.Window = true, 3
			m.FFN.Activation = program.ReLU
			return m
		},
		"qk_norm_sinks_talking_heads_gqa": func() *program.Model {
			m := tinyDense()
			m.Attention.Heads, m.Attention.KVHeads, m.Attention.HeadDim = 4, 2, 4
			m.Attention.QKNorm, m.Attention.Sinks, m.Attention.TalkingHeads = true, true, true
			m.Attention.Window = 4
			return m
		},
		"share_kv_2_with_share_weights_qk_norm": func() *program.Model {
			m := tinyDense()
			m.Layers = 4
			m.Attention.ShareKV, m.Attention.ShareWeights, m.Attention.QKNorm = 2, 0.5, true
			return m
		},
		"qk_norm_full_gqa_share_kv_2": func() *program.Model {
			m := tinyDense()
			m.Layers = 3
			m.Attention.Heads, m.Attention.KVHeads, m.Attention.HeadDim = 4, 2, 2
			m.Attention.QKNorm, m.Attention.QKNormFull, m.Attention.ShareKV = true, true, 2
			return m
		},
		"clip_qkv_qk_norm_share_kv_2": func() *program.Model {
			// The clamp cuts about a third of the normed queries and keys.
			m := tinyDense()
			m.Layers = 4
			m.Attention.ClipQKV, m.Attention.QKNorm, m.Attention.ShareKV = 1, true, 2
			return m
		},
		"qk_norm_after_rope_share_kv_2": func() *program.Model {
			// HunYuan's: every layer norms its group's rotated keys with its own key norm.
			m := tinyDense()
			m.Layers = 4
			m.Attention.QKNorm, m.Attention.QKNormAfterRope, m.Attention.ShareKV = true, true, 2
			return m
		},
		"moe_shared_gate_two_shared_qk_norm_full": func() *program.Model {
			m := tinyMoE()
			m.Attention.QKNorm, m.Attention.QKNormFull = true, true
			m.MoE.SharedExperts, m.MoE.SharedHidden, m.MoE.SharedGate = 2, 5, true
			return m
		},
		"moe_sparsemixer_layernorm_no_bias_head_bias": func() *program.Model {
			// Phi-3.5-MoE's routing (sparsemixer.go) under DBRX's bias-free LayerNorms and
			// Phi's head bias; TestSparsemixerMasks checks the threshold masks experts here.
			m := tinyMoE()
			m.MoE.SparsemixerEps, m.MoE.Normalize = sparsemixerTestEps, false
			m.Norm, m.NormNoBias, m.HeadBias = program.LayerNorm, true, true
			return m
		},
		"share_kv_3": func() *program.Model {
			m := tinyDense()
			m.Layers = 3
			m.Attention.ShareKV, m.Attention.BiasQKV = 3, true
			return m
		},
		"share_weights_half": func() *program.Model {
			m := tinyDense()
			m.Layers = 4
			m.Attention.ShareWeights = 0.5
			m.Attention.TalkingHeads = true
			return m
		},
		"moe_softmax_top2": tinyMoE,
		"moe_routed_scale_normalized_yarn": func() *program.Model {
			m := tinyMoE()
			m.MoE.RoutedScale = 2.5
			m.RopeScaling = &program.RopeScaling{Type: program.RopeYarn, Factor: 4, OriginalSeqLen: 2, Mscale: 0.707, MscaleAllDim: 1}
			return m
		},
		"moe_routed_scale_sigmoid_unnormalized_llama3": func() *program.Model {
			m := tinyMoE()
			m.MoE.RoutedScale, m.MoE.Score, m.MoE.Normalize = 0.5, program.Sigmoid, false
			m.RopeScaling = &program.RopeScaling{Type: program.RopeLlama3, Factor: 8, OriginalSeqLen: 4, LowFreqFactor: 1, HighFreqFactor: 4}
			return m
		},
		"moe_group_routing": func() *program.Model {
			m := tinyMoE()
			m.MoE.Experts, m.MoE.Groups, m.MoE.TopKGroups = 6, 3, 2
			return m
		},
		"moe_sandwich_norm_layernorm": func() *program.Model {
			m := tinyMoE()
			m.NormPlacement, m.Norm = program.SandwichNorm, program.LayerNorm
			return m
		},
		"dense_post_norm_no_final_norm": func() *program.Model {
			m := tinyDense()
			m.NormPlacement, m.FinalNorm = program.PostNorm, false
			return m
		},
		"moe_sigmoid_token_embedding_shared_geglu": func() *program.Model {
			m := tinyMoE()
			m.MoE.Score, m.MoE.Router, m.MoE.RouterDim = program.Sigmoid, program.RouteTokenEmbedding, 5
			m.MoE.SharedExperts, m.MoE.Activation, m.MoE.RouterBias = 1, program.GeGLU, true
			m.MoE.ParallelDense, m.MoE.ExpertBias, m.FFN.Bias = true, true, true
			return m
		},
		"moe_parallel_attention_every2_layernorm": func() *program.Model {
			// Arctic's layer: experts beside attention, the dense FFN after it with its own norm.
			m := tinyMoE()
			m.MoE.ParallelDense, m.MoE.ParallelAttention, m.MoE.Every, m.Norm = true, true, 2, program.LayerNorm
			return m
		},
		"moe_gpt_oss_sinks_alternating_window_clamped_swiglu": func() *program.Model {
			// gpt-oss's layer: sinks, biases everywhere, a window in every other layer, the
			// clamped SwiGLU (a low limit so that some inputs clamp).
			m := tinyMoE()
			a := &m.Attention
			a.Sinks, a.BiasQKV, a.BiasOut, a.Window, a.FullEvery = true, true, true, 2, 2
			m.MoE.RouterBias, m.MoE.ExpertBias, m.MoE.SwigluLimit, m.MoE.SwigluAlpha = true, true, 0.4, 1.702
			return m
		},
		"moe_llama4_gate_input_sigmoid_shared": func() *program.Model {
			m := tinyMoE()
			m.MoE.Score, m.MoE.TopK, m.MoE.Normalize, m.MoE.GateInput = program.Sigmoid, 1, false, true
			m.MoE.SharedExperts, m.MoE.SharedHidden, m.MoE.CapacityFactor = 1, 6, 0
			return m
		},
		"moe_llama4_attention": func() *program.Model {
			// Llama 4's attention: every second layer without rotary positions and with the
			// query temperature, chunks of 2 and unscaled q/k norms in the rotary layers.
			m := tinyMoE()
			a := &m.Attention
			a.NopeEvery, a.ChunkSize, a.QKL2Norm, a.NopeTemperature, a.NopeTemperatureFloor = 2, 2, true, 0.5, 1
			return m
		},
		"mla_q_lora_yarn_mscale_bias_aux_free_groups": func() *program.Model {
			// DeepSeek-V3's layer: latent attention with a low-rank query, yarn with
			// mscale_all_dim, sigmoid routing on biased scores within groups, routed_scale.
			m := tinyMLA()
			m.Attention.BiasQKV, m.Attention.BiasOut = true, true
			m.RopeScaling = &program.RopeScaling{Type: program.RopeYarn, Factor: 4, OriginalSeqLen: 2, Mscale: 0.707, MscaleAllDim: 0.707}
			return m
		},
		"mla_full_rank_query_window_dense": func() *program.Model {
			m := tinyDense()
			m.Attention = program.Attention{Heads: 2, KVHeads: 2, HeadDim: 4, ShareWeights: 1, MLA: true,
				KVLoraRank: 5, QKNopeHeadDim: 3, QKRopeHeadDim: 4, VHeadDim: 2, Window: 3}
			return m
		},
		"moe_capacity_top1_unnormalised_silu_every2": func() *program.Model {
			m := tinyMoE()
			m.MoE.TopK, m.MoE.Normalize, m.MoE.CapacityFactor = 1, false, 0.5
			m.MoE.Activation, m.MoE.Every = program.SiLU, 2
			m.FinalNorm = false
			return m
		},
	}
	for name, mk := range cases {
		t.Run(name, func(t *testing.T) {
			cfg := mk()
			c, err := newCore[float64](cfg, 7)
			if err != nil {
				t.Fatal(err)
			}
			// Perturb norms, biases and talking heads away from their ones/zeros/identity
			// start so that their gradients are not special cases.
			r := rand.New(rand.NewPCG(3, 4))
			for _, p := range c.params {
				for i := range p.w {
					p.w[i] += 0.3 * r.NormFloat64()
				}
			}
			b := randBatch(r, cfg.Vocab, 2, 5)
			opts := StepOptions{Seed: 2, Step: 3, Train: true} // dice [t t f t]: a KV owner reuses weights, the next layer recomputes
			st, w, err := c.forward(b, opts)
			if err != nil {
				t.Fatal(err)
			}
			if name == "share_weights_half" && st.SharedLayers == 0 {
				t.Fatal("no layer shared its attention weights; pick a seed that exercises sharing")
			}
			if name == "moe_capacity_top1_unnormalised_silu_every2" && st.Dropped == 0 {
				t.Fatal("no token was dropped; the capacity path is not exercised")
			}
			c.zeroGrad()
			c.backward(b, w)
			loss := func() float64 {
				s, _, err := c.forward(b, opts)
				if err != nil {
					t.Fatal(err)
				}
				return s.Loss
			}
			checked := 0
			for _, p := range c.params {
				idx := sampleIndices(r, len(p.w), 24)
				for _, i := range idx {
					old := p.w[i]
					const h = 1e-6
					p.w[i] = old + h
					lp := loss()
					p.w[i] = old - h
					lm := loss()
					p.w[i] = old
					num := (lp - lm) / (2 * h)
					got := p.g[i]
					if math.Abs(num-got) > 1e-6+1e-4*math.Abs(num) {
						t.Errorf("%s[%d]: backward %.9g, finite difference %.9g", p.name, i, got, num)
					}
					checked++
				}
			}
			t.Logf("%d entries of %d tensors checked; loss %.6f, shared layers %d, dropped %d", checked, len(c.params), st.Loss, st.SharedLayers, st.Dropped)
		})
	}
}

func sampleIndices(r *rand.Rand, n, k int) []int {
	if n <= k {
		idx := make([]int, n)
		for i := range idx {
			idx[i] = i
		}
		return idx
	}
	return r.Perm(n)[:k]
}

// TestQKNormFullAndSharedGateTensors holds the tensors of qk_norm = full (OLMoE) and
// moe.shared_gate (Qwen2-MoE) to their Hugging Face widths, ParamList to New, and the
// runtime's parameter count to the compiler's.
func TestQKNormFullAndSharedGateTensors(t *testing.T) {
	cfg := tinyMoE()
	cfg.Layers = 3
	cfg.Attention.Heads, cfg.Attention.KVHeads, cfg.Attention.HeadDim = 4, 2, 4
	cfg.Attention.QKNorm, cfg.Attention.QKNormFull, cfg.Attention.ShareKV = true, true, 2
	cfg.MoE.SharedExperts, cfg.MoE.SharedGate, cfg.MoE.Every = 1, true, 2
	m, err := New(cfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	shapes := map[string][]int{}
	var n int64
	for _, p := range m.Params() {
		shapes[p.Name] = p.Shape
		n += int64(len(p.W))
	}
	for name, want := range map[string][]int{
		"model.layers.0.self_attn.q_norm.weight":                    {16}, // heads·head_dim
		"model.layers.0.self_attn.k_norm.weight":                    {8},  // kv_heads·head_dim
		"model.layers.1.self_attn.q_norm.weight":                    {16},
		"model.layers.1.block_sparse_moe.shared_expert_gate.weight": {1, 8},
	} {
		if !slices.Equal(shapes[name], want) {
			t.Errorf("%s: shape %v, want %v", name, shapes[name], want)
		}
	}
	for _, absent := range []string{"model.layers.1.self_attn.k_norm.weight", "model.layers.0.block_sparse_moe.shared_expert_gate.weight"} {
		if _, ok := shapes[absent]; ok {
			t.Errorf("%s exists: a K/V-sharing layer has no key norm, a dense layer no shared gate", absent)
		}
	}
	lay, err := ParamList(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(lay) != len(m.Params()) {
		t.Fatalf("Layout has %d parameters, New %d", len(lay), len(m.Params()))
	}
	for i, p := range m.Params() {
		if lay[i].Name != p.Name || !slices.Equal(lay[i].Shape, p.Shape) {
			t.Errorf("parameter %d: Layout %s %v, New %s %v", i, lay[i].Name, lay[i].Shape, p.Name, p.Shape)
		}
	}
	if c := analysis.Count(cfg); c.TotalAll != n {
		t.Errorf("runtime holds %d parameters, compiler/analysis counts %d", n, c.TotalAll)
	}
}
