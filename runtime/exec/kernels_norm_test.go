package exec

import (
	"math"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
)

// TestNormBwdSumsInRowOrder: the norm scale's (and bias's) gradient, summed by column bands
// on several workers, is bit for bit the serial sum over rows in order, for RMSNorm and
// LayerNorm, written and added to, and at widths that do not fill the last band.
func TestNormBwdSumsInRowOrder(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(4))
	for _, norm := range []program.Norm{program.RMSNorm, program.LayerNorm} {
		for _, d := range []int{128, 200} {
			m := hunyuanTiny(t, 1)
			m.Norm = norm
			k, err := NewKernels(m, step.Batch{MicroBatch: 1, SeqLen: 8, Micro: 1}, step.Layout{DP: 1, EP: 1, TP: 1, PP: 1}, step.Coord{})
			if err != nil {
				t.Fatal(err)
			}
			n := 1100 // n·d past the size at which the bands split
			r := rand.New(rand.NewPCG(uint64(d), 3))
			fill := func(s []float32) []float32 {
				for i := range s {
					s[i] = float32(r.NormFloat64())
				}
				return s
			}
			dh, x, w := fill(make([]float32, n*d)), fill(make([]float32, n*d)), fill(make([]float32, d))
			rstd := make([]float32, n)
			for i := range rstd {
				rstd[i] = float32(0.5 + r.Float64())
			}
			for _, acc := range []bool{false, true} {
				dw, db, dx := fill(make([]float32, d)), fill(make([]float32, d)), make([]float32, n*d)
				want, wantB := append([]float32(nil), dw...), append([]float32(nil), db...)
				if !acc {
					clear(want)
					clear(wantB)
				}
				for i := 0; i < n; i++ {
					xi, dyi := x[i*d:(i+1)*d], dh[i*d:(i+1)*d]
					mean, rs := rowMean(xi, norm == program.LayerNorm), float64(rstd[i])
					for j, g := range dyi {
						want[j] += g * float32((float64(xi[j])-mean)*rs)
						wantB[j] += g
					}
				}
				k.NormBwd(dh, x, w, rstd, dx, dw, db, false, acc, acc)
				for j := range want {
					if math.Float32bits(dw[j]) != math.Float32bits(want[j]) || math.Float32bits(db[j]) != math.Float32bits(wantB[j]) {
						t.Fatalf("%s d %d acc %v: column %d: dw %v db %v, serial %v %v", norm, d, acc, j, dw[j], db[j], want[j], wantB[j])
					}
				}
			}
		}
	}
}
