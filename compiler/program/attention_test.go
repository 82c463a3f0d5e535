package program

import "testing"

func TestRecomputeProbability(t *testing.T) {
	for _, tc := range []struct {
		share  float64
		p      float64
		shares bool
	}{
		{0, 1, false}, // unset: the language's default, always recompute
		{1, 1, false},
		{0.5, 0.5, true},
		{-0.5, 1, false},
		{1.5, 1, false},
	} {
		a := Attention{ShareWeights: tc.share}
		if got := a.RecomputeProbability(); got != tc.p {
			t.Errorf("share_weights %g: RecomputeProbability %g, want %g", tc.share, got, tc.p)
		}
		if got := a.SharesWeights(); got != tc.shares {
			t.Errorf("share_weights %g: SharesWeights %v, want %v", tc.share, got, tc.shares)
		}
	}
}
