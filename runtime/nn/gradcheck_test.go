package nn

import (
	"math"
	"math/rand/v2"
	"testing"

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
