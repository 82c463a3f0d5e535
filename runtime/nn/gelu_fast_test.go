package nn

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/moec-dev/moec/compiler/program"
)

// TestActivateInferenceGELU: the decoder's float32 GELU (vector lanes and the Go tail, plain
// and gated) is within 1e-6·max(1, |x|) of math.Erf's, across lengths that leave tails.
func TestActivateInferenceGELU(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{1, 7, 8, 13, 64, 515} {
		for _, act := range []program.Activation{program.GELU, program.GeGLU} {
			a, u := make([]float32, n), make([]float32, n)
			for i := range a {
				a[i] = float32(r.NormFloat64() * 3)
				u[i] = float32(r.NormFloat64())
			}
			a[0] = -9 // the far tail, where Φ underflows towards 0
			var gate []float32
			if act.Gated() {
				gate = u
			}
			want, got := make([]float32, n), make([]float32, n)
			activate(act, want, a, gate)
			activateInference(act, got, a, gate)
			for i := range a {
				scale := math.Max(1, math.Abs(float64(a[i])))
				if gate != nil {
					scale *= math.Max(1, math.Abs(float64(u[i])))
				}
				if d := math.Abs(float64(got[i] - want[i])); d > 1e-6*scale {
					t.Fatalf("%s n=%d: gelu(%g) = %g, math.Erf's %g (off by %g)", act, n, a[i], got[i], want[i], d)
				}
			}
		}
	}
}
