package nn

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestParallelAttentionDecoderMatchesLogits: the decoder computes Arctic's layer as the
// full-sequence forward does, and the layer differs from parallel_dense alone (the experts
// read the layer's input, the dense FFN a norm of its own).
func TestParallelAttentionDecoderMatchesLogits(t *testing.T) {
	cfg := tinyMoE()
	cfg.MoE.ParallelDense, cfg.MoE.ParallelAttention, cfg.MoE.CapacityFactor = true, true, 0
	m, err := New(cfg, 2)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(5, 6))
	for _, p := range m.Params() {
		for i := range p.W {
			p.W[i] += float32(0.1 * r.NormFloat64())
		}
	}
	const B, T = 2, 6
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
		t.Errorf("decoder logits differ from Logits by %g", worst)
	}

	// The same weights without parallel_attention (its residual norms left out) compute
	// another function.
	plain := *cfg
	moe := *cfg.MoE
	moe.ParallelAttention = false
	plain.MoE = &moe
	p, err := New(&plain, 2)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string][]float32{}
	for _, q := range m.Params() {
		byName[q.Name] = q.W
	}
	for _, q := range p.Params() {
		copy(q.W, byName[q.Name])
	}
	other, err := p.Logits(b, StepOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var diff float64
	for i := range other {
		diff = math.Max(diff, math.Abs(float64(other[i]-want[i])))
	}
	if diff < 1e-3 {
		t.Errorf("parallel_attention changed nothing (largest difference %g)", diff)
	}
}
