package hf

import (
	"fmt"
	"slices"

	"github.com/moec-dev/moec/compiler/program"
)

// Phi-3.5-MoE's checkpoints (transformers' PhimoeForCausalLM) name their tensors as
// Mixtral's do, which are moec's: block_sparse_moe.gate and experts.N.w1/w2/w3, with the
// biases of its LayerNorms (input_layernorm, post_attention_layernorm, model.norm), of its
// attention projections (attention_bias) and of its head (lm_head.bias) under the same
// names as moec's. transformers 5 fuses the experts on load and writes these names back on
// save, so a Phi-3.5-MoE folder imports and exports under moec's names unchanged.

// phimoeLayoutFor reports whether m is Phi-3.5-MoE as PhimoeForCausalLM computes it (a
// model routed by sparsemixer is one only as Phi-3.5-MoE), and when it is not, what it
// lacks.
func phimoeLayoutFor(m *program.Model) (candidate bool, unmet []string) {
	e, a := m.MoE, m.Attention
	if e == nil || e.Experts == 0 || e.SparsemixerEps == 0 {
		return false, nil
	}
	need := func(ok bool, what string) {
		if !ok {
			unmet = append(unmet, what)
		}
	}
	need(e.TopK == 2 && e.Score == program.Softmax && !e.Normalize && e.Router != program.RouteTokenEmbedding && !e.RouterBias && !e.ExpertBias &&
		!e.GateInput && e.RoutedScaleOrOne() == 1 && e.Groups == 0 && e.AuxFreeBias == 0 && e.SwigluLimit == 0,
		"sparsemixer's two experts from an unbiased router, gates not renormalised, unbiased experts")
	need(e.Every <= 1 && len(e.Layers) == 0 && e.FirstDense == 0 && e.SharedExperts == 0 && !e.ParallelDense && !e.ParallelAttention,
		"routed experts in every layer, no shared or parallel dense FFN")
	need(m.FFN.Activation == program.SwiGLU && (e.Activation == "" || e.Activation == program.SwiGLU), "swiglu experts")
	need(m.Norm == program.LayerNorm && !m.NormNoBias && (m.NormPlacement == "" || m.NormPlacement == program.PreNorm) && m.FinalNorm && m.Encoder == 0,
		"pre-norm LayerNorms with biases and a final norm")
	need(m.Position == program.Rotary && (m.RopeScaling == nil || m.RopeScaling.Type == program.RopeLongrope && m.RopeScaling.OriginalSeqLen > 0),
		"rotary positions, unscaled or longrope with rope_original_seq_len")
	need(m.MTPDepth == 0, "no multi-token prediction")
	d, _ := m.Dims()
	need(d.Dh*d.H == d.D, "head_dim = d_model / heads")
	need(a.BiasQKV == a.BiasOut && !a.QKNorm && !a.QKL2Norm && a.ClipQKV == 0, "attention biases on Q/K/V and the output or on none, no q/k norms or clipping")
	need(!a.MLA && !a.TalkingHeads && !a.SharesWeights() && a.ShareKV <= 1 && !a.Sinks && a.Window == 0 && a.NopeEvery == 0 && a.ChunkSize == 0 && a.NopeTemperature == 0,
		"plain grouped-query attention (no MLA, talking heads, sharing, sinks, windows, position-free or chunked layers)")
	return true, unmet
}

// phimoeNotes says where PhimoeForCausalLM computes differently from moec: transformers'
// PhimoeRotaryEmbedding rotates by longrope's short factors at every length, where moec
// (as Microsoft's original Phi-3.5-MoE code and transformers' Phi-3) takes the long ones
// for a sequence longer than the pretrained context.
func phimoeNotes(m *program.Model) []string {
	if rs := m.RopeScaling; rs != nil && m.SeqLen > rs.OriginalSeqLen && !phimoeShortIsLong(rs) {
		return []string{fmt.Sprintf("transformers' PhimoeForCausalLM rotates by longrope's short factors at every length; moec takes the long factors for sequences longer than %d tokens (rope_original_seq_len), so the two differ there", rs.OriginalSeqLen)}
	}
	return nil
}

// phimoeShortIsLong reports whether longrope's long factors are its short ones.
func phimoeShortIsLong(rs *program.RopeScaling) bool {
	return slices.Equal(rs.LongFactor, rs.ShortFactor)
}

// phimoeConfig sets PhimoeConfig's fields for m: sparsemixer's threshold is
// router_jitter_noise; longrope's factor on cos and sin is short_mscale = long_mscale.
func phimoeConfig(cfg map[string]any, m *program.Model) {
	a, e := m.Attention, m.MoE
	cfg["intermediate_size"] = e.ExpertHidden
	cfg["num_local_experts"] = e.Experts
	cfg["num_experts_per_tok"] = e.TopK
	cfg["router_aux_loss_coef"] = floatField(e.BalanceLoss)
	cfg["router_jitter_noise"] = floatField(e.SparsemixerEps)
	cfg["input_jitter_noise"] = floatField(0)
	cfg["attention_bias"] = a.BiasQKV
	cfg["lm_head_bias"] = m.HeadBias
	cfg["sliding_window"] = nil
	delete(cfg, "head_dim") // PhimoeAttention takes hidden_size / num_attention_heads
	if rs := m.RopeScaling; rs != nil && rs.Type == program.RopeLongrope {
		_, attention := m.RopeFrequencies(int(a.HeadDim), int(m.SeqLen))
		cfg["original_max_position_embeddings"] = rs.OriginalSeqLen
		cfg["rope_scaling"] = map[string]any{
			"rope_type": "longrope", "short_factor": rs.ShortFactor, "long_factor": rs.LongFactor,
			"short_mscale": floatField(attention), "long_mscale": floatField(attention),
			"original_max_position_embeddings": rs.OriginalSeqLen,
		}
	}
}
