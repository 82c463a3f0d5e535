package vec

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/moec-dev/moec/runtime/blas"
)

func randRows(r *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	return x
}

// TestScoresHeadsIsGemmPerHead: every head's scores in one call are bit for bit the
// scores of one runtime/blas product per head, which decoding ran before, at key counts
// with and without a remainder of four and with grouped keys; a head size that is not a
// multiple of 8 is declined.
func TestScoresHeadsIsGemmPerHead(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, c := range []struct{ heads, perKV, span, dh int }{{4, 1, 1, 32}, {4, 1, 127, 32}, {8, 4, 13, 64}, {3, 3, 6, 16}, {2, 1, 9, 128}} {
		ldk := c.heads / c.perKV * c.dh
		q, k := randRows(r, c.heads*c.dh), randRows(r, c.span*ldk)
		scale := float32(1 / math.Sqrt(float64(c.dh)))
		got := make([]float32, c.heads*c.span)
		if !ScoresHeads(got, q, k, c.heads, c.perKV, c.span, c.dh, ldk, scale) {
			if Available() {
				t.Fatal("ScoresHeads declined although the kernels are available")
			}
			t.Skip("no vector kernels in this build or on this CPU")
		}
		want := make([]float32, c.heads*c.span)
		for h := 0; h < c.heads; h++ {
			blas.Gemm(false, true, 1, c.span, c.dh, scale, q[h*c.dh:], c.dh, k[(h/c.perKV)*c.dh:], ldk, 0, want[h*c.span:], c.span)
		}
		for i := range want {
			if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
				t.Fatalf("%+v: score %d: %g, per-head product %g", c, i, got[i], want[i])
			}
		}
	}
	if ScoresHeads(make([]float32, 4), make([]float32, 12), make([]float32, 48), 1, 1, 4, 12, 12, 1) {
		t.Error("ScoresHeads took a head size of 12, which is not a multiple of 8")
	}
}

// TestWeightedRowsWideIsEightAtATime: the sums of 32 columns at a time (and 64) are bit
// for bit the sums eight columns at a time, column blocks the kernel took before.
func TestWeightedRowsWideIsEightAtATime(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for _, c := range []struct{ rows, n int }{{1, 32}, {127, 32}, {9, 40}, {5, 96}, {3, 104}} {
		ldv := c.n + 8
		p, v := randRows(r, c.rows), randRows(r, c.rows*ldv)
		got := make([]float32, c.n)
		if !WeightedRows(got, p, v, c.n, ldv) {
			t.Skip("no vector kernels in this build or on this CPU")
		}
		want := make([]float32, 8)
		for b := 0; b < c.n; b += 8 {
			WeightedRows(want, p, v[b:], 8, ldv)
			for i := range want {
				if math.Float32bits(got[b+i]) != math.Float32bits(want[i]) {
					t.Fatalf("%+v: column %d: %g, eight at a time %g", c, b+i, got[b+i], want[i])
				}
			}
		}
	}
}
