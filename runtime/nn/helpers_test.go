package nn

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/program/programtest"
)

// tinyDense is a small dense model the tests vary field by field.
func tinyDense() *program.Model { return programtest.Tiny() }

// tinyMoE adds a softmax top-2 MoE with balance and z losses to tinyDense.
func tinyMoE() *program.Model {
	m := tinyDense()
	m.MoE = &program.MoE{Experts: 4, TopK: 2, ExpertHidden: 6, Activation: program.SwiGLU,
		Router: program.RouteHidden, Score: program.Softmax, Normalize: true,
		BalanceLoss: 0.01, ZLoss: 0.001, Every: 1}
	return m
}

func randBatch(r *rand.Rand, vocab int64, B, T int) Batch {
	b := Batch{B: B, T: T, Tokens: make([]int32, B*(T+1))}
	for i := range b.Tokens {
		b.Tokens[i] = int32(r.IntN(int(vocab)))
	}
	return b
}

// perturbedDecodeGap perturbs cfg's model (New with seed 2, every weight plus noise·N(0, 1) from a
// fixed stream), reads a random batch of B sequences of T tokens, and decodes it position
// by position: it returns the largest difference between the decoder's logits and the
// full-sequence Logits, those Logits, the model and the batch.
func perturbedDecodeGap(t *testing.T, cfg *program.Model, noise float64, B, T int) (float64, []float32, *Model, Batch) {
	t.Helper()
	m, err := New(cfg, 2)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(5, 6))
	for _, p := range m.Params() {
		for i := range p.W {
			p.W[i] += float32(noise * r.NormFloat64())
		}
	}
	b := randBatch(r, cfg.Vocab, B, T)
	want, err := m.Logits(b, StepOptions{})
	if err != nil {
		t.Fatal(err)
	}
	worst := decodeGap(t, m.NewDecoder(B, T), b, want, int(cfg.PaddedVocab()))
	return worst, append([]float32(nil), want...), m, b
}

// decodeGap decodes batch b position by position with dec and returns the largest
// difference between its logits and want, the full-sequence logits ([B·T, V]).
func decodeGap(t *testing.T, dec *Decoder, b Batch, want []float32, V int) float64 {
	t.Helper()
	B, T := b.B, b.T
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
	return worst
}

// largestDifference is max |a[i] - b[i]|.
func largestDifference(a, b []float32) float64 {
	var d float64
	for i := range a {
		d = math.Max(d, math.Abs(float64(a[i]-b[i])))
	}
	return d
}
