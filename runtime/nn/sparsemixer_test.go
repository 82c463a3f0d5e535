package nn

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/moec-dev/moec/compiler/program"
)

// sparsemixerTestEps is the threshold of the gradient-check model: wide enough that some
// tokens keep several experts in a gate's softmax and narrow enough that others keep one.
const sparsemixerTestEps = 0.3

// TestSparsemixerRoute holds one token's routing to transformers' sparsemixer worked by
// hand: logits [2, 1.5, -1, 1.9] with eps 0.1 (threshold 0.2, relative to max(|zⱼ|, best)).
func TestSparsemixerRoute(t *testing.T) {
	z := []float64{2, 1.5, -1, 1.9}
	idx, gate := make([]int32, 2), make([]float64, 2)
	sparsemixerRoute(z, 0.1, idx, gate)
	// First: best 2 (expert 0); (2-1.5)/2 = 0.25 > 0.2 masked, (2+1)/2 = 1.5 masked,
	// (2-1.9)/2 = 0.05 kept: softmax over {0, 3}.
	g1 := 1 / (1 + math.Exp(1.9-2))
	// Second: best 1.9 (expert 3) with expert 0 out; (1.9-1.5)/1.9 = 0.21 masked, expert 2
	// masked: its softmax over {3} alone is 1.
	if idx[0] != 0 || idx[1] != 3 || math.Abs(gate[0]-g1) > 1e-15 || gate[1] != 1 {
		t.Fatalf("idx %v gates %v, want [0 3] [%v 1]", idx, gate, g1)
	}
	// Negative logits: the factor is |zⱼ| (at least the best's magnitude).
	z = []float64{-1, -1.1, -3, -1.05}
	sparsemixerRoute(z, 0.05, idx, gate)
	// First: best -1; (-1+1.1)/1.1 = 0.09 kept, (-1+3)/3 masked, (-1+1.05)/1.05 = 0.048
	// kept. Second: best -1.05 (expert 3); (-1.05+1.1)/1.1 = 0.045 kept, expert 2 masked.
	e := func(v float64) float64 { return math.Exp(v + 1) }
	w1 := e(-1) / (e(-1) + e(-1.1) + e(-1.05))
	w2 := e(-1.05) / (e(-1.05) + e(-1.1))
	if idx[0] != 0 || idx[1] != 3 || math.Abs(gate[0]-w1) > 1e-15 || math.Abs(gate[1]-w2) > 1e-15 {
		t.Fatalf("idx %v gates %v, want [0 3] [%v %v]", idx, gate, w1, w2)
	}
}

// TestSparsemixerMasks checks that the gradient-check model's routing takes both branches
// of the threshold: some gates are one (every other expert masked), some below one.
func TestSparsemixerMasks(t *testing.T) {
	m := tinyMoE()
	m.MoE.SparsemixerEps, m.MoE.Normalize = sparsemixerTestEps, false
	c, err := newCore[float64](m, 7)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(3, 4))
	for _, p := range c.params {
		for i := range p.w {
			p.w[i] += 0.3 * r.NormFloat64()
		}
	}
	b := randBatch(r, m.Vocab, 2, 5)
	_, w, err := c.forward(b, StepOptions{Seed: 2, Step: 3, Train: true})
	if err != nil {
		t.Fatal(err)
	}
	var whole, part int
	for _, lw := range w.layers {
		if lw.moe == nil {
			continue
		}
		for _, g := range lw.moe.gate[:b.B*b.T*m.MoE.TopK] {
			if g == 1 {
				whole++
			} else {
				part++
			}
		}
	}
	if whole == 0 || part == 0 {
		t.Fatalf("gates of one %d, below one %d: the threshold does not split the experts", whole, part)
	}
	t.Logf("gates of one %d, below one %d", whole, part)
}

// TestSparsemixerDecodes holds the decoder (one token at a time, the head bias added) to
// the full-sequence logits of a sparsemixer model with bias-free LayerNorms.
func TestSparsemixerDecodes(t *testing.T) {
	cfg := tinyMoE()
	cfg.MoE.SparsemixerEps, cfg.MoE.Normalize = sparsemixerTestEps, false
	cfg.Norm, cfg.NormNoBias, cfg.HeadBias = program.LayerNorm, true, true
	worst, _, _, _ := perturbedDecodeGap(t, cfg, 0.3, 2, 6)
	if worst > 1e-4 {
		t.Fatalf("decoder logits differ from Logits by %g", worst)
	}
}
