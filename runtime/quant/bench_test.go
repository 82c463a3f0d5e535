package quant

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/moec-dev/moec/runtime/blas"
)

// BenchmarkMulT compares one row (generation at batch 1) times a weight matrix in
// float32 (runtime/blas's kernel for few rows) and quantised, at the tiny HunYuan's shapes.
func BenchmarkMulT(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 1))
	for _, s := range []struct{ out, in int }{{128, 128}, {512, 128}, {128, 512}, {256, 128}, {2048, 2048}} {
		w := randMatrix(r, s.out*s.in, 0.05)
		x := randMatrix(r, s.in, 1)
		y := make([]float32, s.out)
		b.Run(fmt.Sprintf("fp32_%dx%d", s.out, s.in), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				blas.Gemm(false, true, 1, s.out, s.in, 1, x, s.in, w, s.in, 0, y, s.out)
			}
		})
		for _, q := range []struct{ bits, group int }{{8, 0}, {4, 128}} {
			m, _ := Quantize(w, s.out, s.in, q.bits, q.group)
			b.Run(fmt.Sprintf("int%d_%dx%d", q.bits, s.out, s.in), func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					m.MulT(y, x, 1, false)
				}
			})
		}
	}
}
