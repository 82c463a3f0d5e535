package nn

import (
	"testing"
)

// TestParallelAttentionDecoderMatchesLogits: the decoder computes Arctic's layer as the
// full-sequence forward does, and the layer differs from parallel_dense alone (the experts
// read the layer's input, the dense FFN a norm of its own).
func TestParallelAttentionDecoderMatchesLogits(t *testing.T) {
	cfg := tinyMoE()
	cfg.MoE.ParallelDense, cfg.MoE.ParallelAttention, cfg.MoE.CapacityFactor = true, true, 0
	const B, T = 2, 6
	worst, want, m, b := perturbedDecodeGap(t, cfg, 0.1, B, T)
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
	diff := largestDifference(other, want)
	if diff < 1e-3 {
		t.Errorf("parallel_attention changed nothing (largest difference %g)", diff)
	}
}
