package nn

import (
	"testing"

	"github.com/moec-dev/moec/compiler/program"
)

// feedVariantCases are models whose attention differs from layer to layer or from position
// to position, in the shapes of interop/hf's families: Llama 4 (layers without rotary
// positions and with the query temperature, chunked attention, unscaled q/k norms),
// gpt-oss (sinks, a window in every other layer, biases, clamped SwiGLU experts), Gemma 2's
// alternating window, Hunyuan-Large's cross-layer attention under alternating windows,
// Arctic's parallel attention, DeepSeek-V2's latent attention with alternating windows, and
// talking heads with shared attention weights, clamped projections and a window. Their
// sequences cross several chunk and window boundaries.
func feedVariantCases() map[string]func() *program.Model {
	llama4 := func() *program.Model {
		m := tinyMoE()
		m.Layers = 4
		a := &m.Attention
		a.NopeEvery, a.ChunkSize, a.QKL2Norm, a.NopeTemperature, a.NopeTemperatureFloor = 2, 8, true, 0.5, 4
		m.MoE.Score, m.MoE.TopK, m.MoE.Normalize, m.MoE.GateInput = program.Sigmoid, 1, false, true
		m.MoE.SharedExperts, m.MoE.SharedHidden = 1, 6
		return m
	}
	return map[string]func() *program.Model{
		"llama4_nope_chunk_l2_temperature": llama4,
		"llama4_chunk_every_layer_rotary": func() *program.Model {
			m := llama4()
			m.Attention.NopeEvery, m.Attention.NopeTemperature, m.Attention.NopeTemperatureFloor = 0, 0, 0
			m.Attention.ChunkSize = 5
			return m
		},
		"llama4_nope_without_chunks_or_norms": func() *program.Model {
			m := llama4()
			m.Attention.ChunkSize, m.Attention.QKL2Norm = 0, false
			return m
		},
		"gpt_oss_sinks_alternating_window_biases": func() *program.Model {
			m := tinyMoE()
			m.Layers = 4
			a := &m.Attention
			a.Heads, a.KVHeads, a.Sinks, a.Window, a.FullEvery, a.BiasQKV, a.BiasOut = 4, 2, true, 5, 2, true, true
			m.MoE.SwigluLimit, m.MoE.ExpertBias = 7, true
			return m
		},
		"gemma2_alternating_window_qk_norm": func() *program.Model {
			m := tinyDense()
			m.Layers = 3
			m.Attention.Window, m.Attention.FullEvery, m.Attention.QKNorm = 4, 3, true
			return m
		},
		"hunyuan_share_kv_qk_norm_after_rope_alternating_window": func() *program.Model {
			m := tinyMoE()
			m.Layers = 4
			a := &m.Attention
			a.ShareKV, a.QKNorm, a.QKNormAfterRope, a.Window, a.FullEvery = 2, true, true, 6, 3
			return m
		},
		"arctic_parallel_attention": func() *program.Model {
			m := tinyMoE()
			m.MoE.ParallelDense, m.MoE.ParallelAttention = true, true
			return m
		},
		"deepseek_v2_mla_alternating_window": func() *program.Model {
			m := tinyMLA()
			m.Attention.QLoraRank, m.Attention.Window, m.Attention.FullEvery = 0, 5, 2
			return m
		},
		"gqa_talking_heads_share_weights_clip_qkv_window": func() *program.Model {
			m := tinyDense()
			m.Layers = 3
			a := &m.Attention
			a.Heads, a.KVHeads, a.TalkingHeads, a.ShareWeights, a.ClipQKV, a.Window = 4, 2, true, 0.5, 0.4, 7
			return m
		},
	}
}

// TestFeedMatchesStepAttentionVariants: Feed computes, for every per-layer and
// per-position attention rule, what the one-token decoder Step computes (which
// interop/hf holds to transformers).
func TestFeedMatchesStepAttentionVariants(t *testing.T) {
	for name, mk := range feedVariantCases() {
		t.Run(name, func(t *testing.T) { checkFeedMatchesStep(t, mk(), 45) })
	}
}
