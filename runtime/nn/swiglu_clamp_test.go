package nn

import (
	"math"
	"math/rand/v2"
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
		m, err := New(cfg, 2)
		if err != nil {
			t.Fatal(err)
		}
		r := rand.New(rand.NewPCG(5, 6))
		for _, p := range m.Params() {
			for i := range p.W {
				p.W[i] += float32(0.3 * r.NormFloat64())
			}
		}
		const B, T = 2, 7
		b := randBatch(r, cfg.Vocab, B, T)
		want, err := m.Logits(b, StepOptions{})
		if err != nil {
			t.Fatal(err)
		}
		V := int(cfg.PaddedVocab())
		dec := m.NewDecoder(B, T)
		var worst float64
		for pos := 0; pos < T; pos++ {
			step := make([]int32, B)
			for i := range step {
				step[i] = b.Tokens[i*(T+1)+pos]
			}
			got, err := dec.Step(step)
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < B; i++ {
				for v := 0; v < V; v++ {
					worst = math.Max(worst, math.Abs(float64(got[i*V+v]-want[(i*T+pos)*V+v])))
				}
			}
		}
		if worst > 1e-4 {
			t.Errorf("limit %v full_every %d: decoder logits differ from Logits by %g", limit, fullEvery, worst)
		}
		return append([]float32(nil), want...)
	}
	base := gptOss(0.5, 2)
	differs := func(a, b []float32) bool {
		for i := range a {
			if math.Abs(float64(a[i]-b[i])) > 1e-4 {
				return true
			}
		}
		return false
	}
	if !differs(base, gptOss(1e9, 2)) {
		t.Error("a clamp at 0.5 computes what no clamp does")
	}
	if !differs(base, gptOss(0.5, 0)) {
		t.Error("full attention in every other layer computes what a window in all does")
	}
}
