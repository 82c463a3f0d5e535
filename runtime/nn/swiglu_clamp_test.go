package nn

import (
	"testing"
)

// TestGptOssLayerDecoderMatchesLogits: the decoder computes gpt-oss's layer (sinks, a
// window in every other layer, the clamped SwiGLU) as the full-sequence forward does, and
// the clamp and the alternation each change the function.
func TestGptOssLayerDecoderMatchesLogits(t *testing.T) {
	gptOss := func(limit float64, fullEvery int) []float32 {
		cfg := tinyMoE()
		a := &cfg.Attention
		a.Sinks, a.BiasQKV, a.BiasOut, a.Window, a.FullEvery = true, true, true, 3, fullEvery
		cfg.MoE.RouterBias, cfg.MoE.ExpertBias, cfg.MoE.SwigluLimit, cfg.MoE.SwigluAlpha = true, true, limit, 1.702
		cfg.MoE.CapacityFactor = 0
		const B, T = 2, 7
		worst, want, _, _ := perturbedDecodeGap(t, cfg, 0.3, B, T)
		if worst > 1e-4 {
			t.Errorf("limit %v full_every %d: decoder logits differ from Logits by %g", limit, fullEvery, worst)
		}
		return want
	}
	base := gptOss(0.5, 2)
	differs := func(a, b []float32) bool { return largestDifference(a, b) > 1e-4 }
	if !differs(base, gptOss(1e9, 2)) {
		t.Error("a clamp at 0.5 computes what no clamp does")
	}
	if !differs(base, gptOss(0.5, 0)) {
		t.Error("full attention in every other layer computes what a window in all does")
	}
}
