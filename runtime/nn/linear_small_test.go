package nn

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/moec-dev/moec/runtime/blas"
	"github.com/moec-dev/moec/runtime/internal/vec"
)

// TestLinearSmallMatchesGemm checks the few-rows kernel against sgemm on shapes with and
// without vector tails, split and unsplit, overwriting and accumulating.
func TestLinearSmallMatchesGemm(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, sh := range [][3]int{{1, 3, 5}, {1, 256, 256}, {2, 1024, 256}, {3, 256, 512}, {smallRows, 37, 41}, {1, 8, 64}} {
		n, out, in := sh[0], sh[1], sh[2]
		w := &tensor[float32]{shape: []int{out, in}, w: make([]float32, out*in)}
		x, y0 := make([]float32, n*in), make([]float32, n*out)
		for i := range w.w {
			w.w[i] = float32(r.NormFloat64())
		}
		for i := range x {
			x[i] = float32(r.NormFloat64())
		}
		for i := range y0 {
			y0[i] = float32(r.NormFloat64())
		}
		for _, acc := range []bool{false, true} {
			want, got := append([]float32(nil), y0...), append([]float32(nil), y0...)
			beta := float32(0)
			if acc {
				beta = 1
			}
			blas.Gemm(false, true, n, out, in, 1, x, in, w.w, in, beta, want, out)
			if !linearSmall(got, x, n, w, acc) {
				if vec.Available() {
					t.Fatalf("%v: linearSmall declined a shape it should take", sh)
				}
				continue
			}
			for i := range want {
				if d := math.Abs(float64(got[i] - want[i])); d > 1e-4*math.Sqrt(float64(in)) {
					t.Fatalf("%v accumulate=%v: y[%d] = %v, want %v", sh, acc, i, got[i], want[i])
				}
			}
		}
	}
	if linearSmall(make([]float32, 5*4), make([]float32, 5*4), smallRows+1,
		&tensor[float32]{shape: []int{4, 4}, w: make([]float32, 16)}, false) {
		t.Fatal("linearSmall took more rows than smallRows")
	}
}
