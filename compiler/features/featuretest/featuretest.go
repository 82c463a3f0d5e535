// Package featuretest builds the small models that hold the features table
// (compiler/features) to the backends: Base, a model every backend honours whole, and for
// every row of the table Example, Base changed to use that row's feature. The backends'
// agreement tests build each example and check that they refuse it exactly where the
// table says so.
package featuretest

import (
	"fmt"

	"github.com/moec-dev/moec/compiler/program"
)

// Base is a small decoder-only MoE model with nothing any backend refuses or
// approximates: RMSNorm, pre-norm with a final norm, rotary positions, SwiGLU experts and
// FFN, a softmax router renormalising its top 2 of 4 experts, dropless, no biases, no
// auxiliary losses. A Megatron launch and a Mixtral export hold it exactly.
func Base() *program.Model {
	return &program.Model{
		Name: "featuretest", Vocab: 256, VocabPadTo: 1, DModel: 16, Layers: 2, SeqLen: 8,
		Norm: program.RMSNorm, NormEps: 1e-5, NormPlacement: program.PreNorm, FinalNorm: true,
		Position: program.Rotary, RopeBase: 10000,
		Attention: program.Attention{Heads: 4, KVHeads: 4, HeadDim: 4, ShareWeights: 1, ShareKV: 1},
		FFN:       program.FFN{Hidden: 24, Activation: program.SwiGLU},
		MoE: &program.MoE{Experts: 4, TopK: 2, ExpertHidden: 8, Activation: program.SwiGLU, Every: 1,
			Router: program.RouteHidden, Score: program.Softmax, Normalize: true},
	}
}

// changes are the edits that make Base use one feature, keyed by the table's row key.
func changes() map[string]func(m *program.Model) {
	act := func(a program.Activation) func(m *program.Model) {
		return func(m *program.Model) { m.FFN.Activation, m.MoE.Activation = a, a }
	}
	return map[string]func(m *program.Model){
		"gqa": func(m *program.Model) { m.Attention.KVHeads = 2 },
		"mla": func(m *program.Model) {
			a := &m.Attention
			a.MLA, a.KVLoraRank, a.QKNopeHeadDim, a.QKRopeHeadDim, a.VHeadDim = true, 8, 4, 2, 4
		},
		"qk_norm":            func(m *program.Model) { m.Attention.QKNorm = true },
		"talking_heads":      func(m *program.Model) { m.Attention.TalkingHeads = true },
		"share_weights":      func(m *program.Model) { m.Attention.ShareWeights = 0.5 },
		"share_kv":           func(m *program.Model) { m.Attention.ShareKV = 2 },
		"sinks":              func(m *program.Model) { m.Attention.Sinks = true },
		"window":             func(m *program.Model) { m.Attention.Window = 4 },
		"attention_bias":     func(m *program.Model) { m.Attention.BiasQKV, m.Attention.BiasOut = true, true },
		"learned_positions":  func(m *program.Model) { m.Position, m.MaxPosition = program.Learned, m.SeqLen },
		"no_positions":       func(m *program.Model) { m.Position = program.NoPosition },
		"relative_positions": func(m *program.Model) { m.Position = program.Relative },
		"layernorm":          func(m *program.Model) { m.Norm = program.LayerNorm },
		"post_norm":          func(m *program.Model) { m.NormPlacement = program.PostNorm },
		"sandwich_norm":      func(m *program.Model) { m.NormPlacement = program.SandwichNorm },
		"no_final_norm":      func(m *program.Model) { m.FinalNorm = false },
		"tied_embeddings":    func(m *program.Model) { m.TieEmbeddings = true },
		"mtp":                func(m *program.Model) { m.MTPDepth = 1 },
		"encoder_decoder":    func(m *program.Model) { m.Encoder = 2 },
		"ffn_bias":           func(m *program.Model) { m.FFN.Bias, m.MoE.Every = true, 2 }, // layer 0 dense
		"relu":               act(program.ReLU),
		"gelu":               act(program.GELU),
		"silu":               act(program.SiLU),
		"swiglu":             act(program.SwiGLU),
		"geglu":              act(program.GeGLU),
		"expert_activation":  func(m *program.Model) { m.MoE.Activation = program.SiLU },
		"moe_layer_choice":   func(m *program.Model) { m.MoE.FirstDense = 1 },
		"token_routing":      func(m *program.Model) { m.MoE.Router, m.MoE.RouterDim = program.RouteTokenEmbedding, 8 },
		"sigmoid":            func(m *program.Model) { m.MoE.Score = program.Sigmoid },
		"normalize":          func(m *program.Model) { m.MoE.Normalize = true },
		"unnormalized":       func(m *program.Model) { m.MoE.Normalize = false },
		"router_bias":        func(m *program.Model) { m.MoE.RouterBias = true },
		"groups":             func(m *program.Model) { m.MoE.Groups, m.MoE.TopKGroups = 2, 1 },
		"capacity_factor":    func(m *program.Model) { m.MoE.CapacityFactor = 1.25 },
		"dropless":           func(m *program.Model) { m.MoE.CapacityFactor = 0 },
		"balance_loss":       func(m *program.Model) { m.MoE.BalanceLoss = 0.01 },
		"z_loss":             func(m *program.Model) { m.MoE.ZLoss = 0.001 },
		"aux_free_bias":      func(m *program.Model) { m.MoE.AuxFreeBias = 0.001 },
		"expert_bias":        func(m *program.Model) { m.MoE.ExpertBias = true },
		"shared_experts":     func(m *program.Model) { m.MoE.SharedExperts, m.MoE.SharedHidden = 1, 8 },
		"shared_gate": func(m *program.Model) {
			m.MoE.SharedExperts, m.MoE.SharedHidden, m.MoE.SharedGate = 1, 8, true
		},
		"parallel_dense":    func(m *program.Model) { m.MoE.ParallelDense = true },
		"nope_every":        func(m *program.Model) { m.Attention.NopeEvery = 2 },
		"chunked_attention": func(m *program.Model) { m.Attention.ChunkSize = 4 },
		"qk_l2_norm":        func(m *program.Model) { m.Attention.QKL2Norm = true },
		"nope_temperature": func(m *program.Model) {
			m.Attention.NopeEvery, m.Attention.NopeTemperature, m.Attention.NopeTemperatureFloor = 2, 0.1, 4
		},
		"gate_input":   func(m *program.Model) { m.MoE.GateInput = true },
		"full_every":   func(m *program.Model) { m.Attention.Window, m.Attention.FullEvery = 4, 2 },
		"swiglu_limit": func(m *program.Model) { m.MoE.SwigluLimit, m.MoE.SwigluAlpha = 7, 1.702 },
		"parallel_attention": func(m *program.Model) {
			// Arctic's residual MLP is d_model wide.
			m.MoE.ParallelDense, m.MoE.ParallelAttention, m.FFN.Hidden = true, true, m.DModel
		},
		"routed_scale": func(m *program.Model) { m.MoE.RoutedScale = 2.5 },
		"clip_qkv":     func(m *program.Model) { m.Attention.ClipQKV = 0.02 }, // cuts the small initial projections
		"norm_no_bias": func(m *program.Model) { m.Norm, m.NormNoBias = program.LayerNorm, true },
		"head_bias":    func(m *program.Model) { m.HeadBias = true },
		"sparsemixer":  func(m *program.Model) { m.MoE.SparsemixerEps, m.MoE.Normalize = 0.01, false },
		"qk_norm_after_rope": func(m *program.Model) {
			m.Attention.QKNorm, m.Attention.QKNormAfterRope = true, true
		},
		"rope_scaling": func(m *program.Model) {
			m.RopeScaling = &program.RopeScaling{Type: program.RopeYarn, Factor: 4, OriginalSeqLen: 2, BetaFast: 32, BetaSlow: 1}
		},
	}
}

// Keys lists the rows Example knows, in no particular order.
func Keys() []string {
	var out []string
	for k := range changes() {
		out = append(out, k)
	}
	return out
}

// Example is Base changed to use the feature of the table row key.
func Example(key string) (*program.Model, error) {
	change, ok := changes()[key]
	if !ok {
		return nil, fmt.Errorf("featuretest: no example model for feature %q", key)
	}
	m := Base()
	change(m)
	m.Name = "featuretest_" + key
	return m, nil
}
