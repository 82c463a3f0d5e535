package step

import (
	"errors"
	"strings"
	"testing"

	"github.com/moec-dev/moec/compiler/features/featuretest"
	"github.com/moec-dev/moec/compiler/program"
)

// TestPlacementBesideAttentionRefused: post-norm and sandwich norms lower, but not with
// experts beside attention (Arctic's parallel_attention, whose norms are pre-norm's): that
// is refused (E0510) naming the placement and why.
func TestPlacementBesideAttentionRefused(t *testing.T) {
	b := Batch{MicroBatch: 1, SeqLen: 8, Micro: 1}
	for _, placement := range []program.NormPlacement{program.PostNorm, program.SandwichNorm} {
		m := featuretest.Base()
		m.NormPlacement = placement
		if _, err := Lower(m, b, Layout{DP: 1, TP: 1, PP: 1}); err != nil {
			t.Fatalf("%s: %v", placement, err)
		}
		m.MoE.ParallelDense, m.MoE.ParallelAttention = true, true
		_, err := Lower(m, b, Layout{DP: 1, TP: 1, PP: 1})
		var le *LayoutError
		if !errors.As(err, &le) || len(le.Unsupported) != 1 {
			t.Fatalf("%s beside attention: %v, want one unsupported feature", placement, err)
		}
		u := le.Unsupported[0]
		if !strings.Contains(u.Feature, string(placement)) || !strings.Contains(u.Why, "parallel_attention") {
			t.Errorf("%s beside attention: refused %q: %q", placement, u.Feature, u.Why)
		}
	}
}
