package nn

import (
	"math/rand/v2"
	"testing"
)

// The decoder must reproduce the full-sequence logits position by position.
func TestDecoderMatchesLogits(t *testing.T) {
	for name, mk := range peerCases() {
		t.Run(name, func(t *testing.T) {
			cfg := mk()
			if cfg.MoE != nil {
				cfg.MoE.CapacityFactor = 0 // the decoder routes dropless
			}
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
			const B, T = 3, 7
			b := randBatch(r, cfg.Vocab, B, T)
			want, err := m.Logits(b, StepOptions{})
			if err != nil {
				t.Fatal(err)
			}
			V := int(cfg.PaddedVocab())
			dec := m.NewDecoder(B, T)
			for pass := 0; pass < 2; pass++ { // the second pass checks Reset
				dec.Reset()
				worst := decodeGap(t, dec, b, want, V)
				if worst > 1e-4 {
					t.Errorf("pass %d: decoder logits differ from Logits by %g", pass, worst)
				}
			}
			if _, err := dec.Step(make([]int32, B)); err == nil {
				t.Error("a step past maxLen was accepted")
			}
		})
	}
}

func TestDecoderRejectsBadTokens(t *testing.T) {
	m, err := New(tinyDense(), 1)
	if err != nil {
		t.Fatal(err)
	}
	dec := m.NewDecoder(2, 4)
	if _, err := dec.Step([]int32{1}); err == nil {
		t.Error("one token for two sequences was accepted")
	}
	if _, err := dec.Step([]int32{1, 13}); err == nil {
		t.Error("a token outside the vocabulary was accepted")
	}
}
