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

func TestScores(t *testing.T) {
	for _, tc := range []struct {
		s        Score
		known    bool
		uniform8 float64 // UniformGate(8)
		copy2to6 float64 // CopyScale(2, 6)
	}{
		{Softmax, true, 0.125, 3},
		{Sigmoid, true, 0.5, 1},
		{"sparsemax", false, 0, 1},
		{"", false, 0, 1},
	} {
		if got := tc.s.Known(); got != tc.known {
			t.Errorf("%q.Known() = %v", tc.s, got)
		}
		if got := tc.s.UniformGate(8); got != tc.uniform8 {
			t.Errorf("%q.UniformGate(8) = %g, want %g", tc.s, got, tc.uniform8)
		}
		if got := tc.s.CopyScale(2, 6); got != tc.copy2to6 {
			t.Errorf("%q.CopyScale(2, 6) = %g, want %g", tc.s, got, tc.copy2to6)
		}
	}
	for _, s := range Scores() {
		if !s.Known() || s.UniformGate(4) <= 0 {
			t.Errorf("listed score %q is not fully defined", s)
		}
	}
	if Scores()[0] != Softmax {
		t.Errorf("the default score is %q, the language's is softmax", Scores()[0])
	}
}
