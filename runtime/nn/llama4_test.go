package nn

import (
	"testing"
)

// TestLlama4DecoderMatchesLogits: the decoder computes Llama 4's layers (a layer without
// rotary positions and with the query temperature, chunked attention with unscaled q/k
// norms, a sigmoid top-1 gate on the expert's input beside a shared expert) as the
// full-sequence forward does, and each feature changes the function.
func TestLlama4DecoderMatchesLogits(t *testing.T) {
	const B, T = 2, 7
	logits := func(edit func(a *llamaEdit)) []float32 {
		e := llamaEdit{nope: 2, chunk: 3, l2: true, temp: 0.5, gateInput: true}
		edit(&e)
		cfg := tinyMoE()
		a := &cfg.Attention
		a.NopeEvery, a.ChunkSize, a.QKL2Norm, a.NopeTemperature = e.nope, int64(e.chunk), e.l2, e.temp
		if e.temp > 0 {
			a.NopeTemperatureFloor = 2
		}
		cfg.MoE.Score, cfg.MoE.TopK, cfg.MoE.Normalize, cfg.MoE.GateInput = "sigmoid", 1, false, e.gateInput
		cfg.MoE.SharedExperts, cfg.MoE.SharedHidden, cfg.MoE.CapacityFactor = 1, 6, 0
		worst, want, _, _ := perturbedDecodeGap(t, cfg, 0.3, B, T)
		if worst > 1e-4 {
			t.Errorf("%+v: decoder logits differ from Logits by %g", e, worst)
		}
		return want
	}
	base := logits(func(*llamaEdit) {})
	for name, edit := range map[string]func(*llamaEdit){
		"every layer rotary": func(e *llamaEdit) { e.nope, e.temp = 0, 0 },
		"no chunks":          func(e *llamaEdit) { e.chunk = 0 },
		"no q/k norms":       func(e *llamaEdit) { e.l2 = false },
		"no temperature":     func(e *llamaEdit) { e.temp = 0 },
		"gate on the output": func(e *llamaEdit) { e.gateInput = false },
	} {
		if diff := largestDifference(logits(edit), base); diff < 1e-4 {
			t.Errorf("%s computes what Llama 4's layer does (largest difference %g)", name, diff)
		}
	}
}

type llamaEdit struct {
	nope, chunk   int
	l2, gateInput bool
	temp          float64
}
