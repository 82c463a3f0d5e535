package nn

import (
	"math/rand/v2"
	"testing"
)

// StepSlots must give each slot the logits a one-sequence decoder gives the same tokens,
// whatever the other slots are doing: sequences start at different steps and a slot is
// reused for a new sequence without clearing.
func TestStepSlotsMatchesOneSequence(t *testing.T) {
	for name, mk := range peerCases() {
		t.Run(name, func(t *testing.T) {
			cfg := mk()
			if cfg.MoE != nil {
				cfg.MoE.CapacityFactor = 0
			}
			m, err := New(cfg, 2)
			if err != nil {
				t.Fatal(err)
			}
			r := rand.New(rand.NewPCG(7, 8))
			const slots, T = 3, 6
			// Sequence s starts at step start[s] in slot s%slots.
			start := []int{0, 2, 3, T}
			seqs := make([][]int32, len(start))
			want := make([][][]float32, len(start))
			V := int(cfg.PaddedVocab())
			for s := range seqs {
				one := m.NewDecoder(1, T)
				for range T {
					tok := int32(r.IntN(int(cfg.Vocab)))
					seqs[s] = append(seqs[s], tok)
					lg, err := one.Step([]int32{tok})
					if err != nil {
						t.Fatal(err)
					}
					want[s] = append(want[s], append([]float32(nil), lg...))
				}
			}
			dec := m.NewDecoder(slots, T)
			owner := make([]int, slots) // sequence in each slot, -1 idle
			for i := range owner {
				owner[i] = -1
			}
			for step := 0; step < 2*T; step++ {
				toks, pos := make([]int32, slots), make([]int, slots)
				for s, st := range start {
					if step >= st && step < st+T {
						owner[s%slots] = s
					}
				}
				for i, s := range owner {
					if s >= 0 && step-start[s] < T {
						toks[i], pos[i] = seqs[s][step-start[s]], step-start[s]
					}
				}
				lg, err := dec.StepSlots(toks, pos)
				if err != nil {
					t.Fatal(err)
				}
				for i, s := range owner {
					if s < 0 || step-start[s] >= T {
						continue
					}
					p := step - start[s]
					got := lg[i*V : (i+1)*V]
					if d := maxAbsDiff(got, want[s][p]); d > 1e-5 {
						t.Fatalf("step %d slot %d (sequence %d position %d): logits differ by %g", step, i, s, p, d)
					}
				}
			}
			if _, err := dec.StepSlots(make([]int32, slots), []int{0, T, 0}); err == nil {
				t.Fatal("a position past maxLen was accepted")
			}
		})
	}
}

func maxAbsDiff(a, b []float32) float64 {
	var d float64
	for i := range a {
		d = max(d, float64(a[i]-b[i]), float64(b[i]-a[i]))
	}
	return d
}
