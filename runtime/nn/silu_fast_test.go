package nn

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestSiLUFastMatchesGo checks the vector SiLU kernels (where the build has them) against
// the Go loops, including tails that are not a multiple of eight, extreme inputs, and the
// in-place aliasing the backward pass relies on (da = a, du = u).
func TestSiLUFastMatchesGo(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{1, 7, 255, 256, 263, 1000, 4099} {
		a, u, dh := make([]float32, n), make([]float32, n), make([]float32, n)
		for i := range a {
			a[i] = float32(r.NormFloat64() * 4)
			u[i] = float32(r.NormFloat64())
			dh[i] = float32(r.NormFloat64())
		}
		a[0] = 120 // saturated σ on both sides
		if n > 1 {
			a[1] = -120
		}
		for _, gated := range []bool{false, true} {
			var ug []float32
			if gated {
				ug = u
			}
			want, got := make([]float32, n), make([]float32, n)
			siluForward32(want, a, ug)
			siluForwardFast(got, a, ug)
			close32(t, "forward", n, got, want)

			wa, wu := append([]float32(nil), a...), append([]float32(nil), u...)
			siluBackward32(wa, wu, dh, wa, ugOf(gated, wu))
			ga, gu := append([]float32(nil), a...), append([]float32(nil), u...)
			siluBackwardFast(ga, gu, dh, ga, ugOf(gated, gu)) // aliased like ffnBackward
			close32(t, "backward da", n, ga, wa)
			close32(t, "backward du", n, gu, wu)
		}
	}
}

func ugOf(gated bool, u []float32) []float32 {
	if gated {
		return u
	}
	return nil
}

func close32(t *testing.T, what string, n int, got, want []float32) {
	t.Helper()
	for i := range want {
		g, w := float64(got[i]), float64(want[i])
		if math.IsNaN(g) || math.Abs(g-w) > 1e-6*math.Max(1, math.Abs(w)) {
			t.Fatalf("%s n=%d: element %d is %v, want %v", what, n, i, g, w)
		}
	}
}
