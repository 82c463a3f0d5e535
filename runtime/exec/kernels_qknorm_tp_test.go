package exec

import (
	"math/rand/v2"
	"testing"
)

// TestQKNormSpanAgreesWithQKNorm splits rows of a whole-projection norm's columns over
// tp ranks as the step program does (sums of squares and Σ g ⊙ x̂ per rank, then summed)
// and holds the pieces' outputs and gradients to QKNorm and QKNormBwd over whole rows.
func TestQKNormSpanAgreesWithQKNorm(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 11))
	kn := &Kernels{}
	kn.d.NormEps = 1e-5
	for _, tp := range []int{2, 4} {
		const rows, width = 24, 64
		x, w, dy := normals(r, rows*width), normals(r, width), normals(r, rows*width)
		y, rstd := make([]float32, rows*width), make([]float32, rows)
		kn.QKNorm(x, w, y, rstd)
		dx, dw := make([]float32, rows*width), make([]float32, width)
		kn.QKNormBwd(dy, x, w, rstd, dx, dw, false, false)

		d := width / tp
		cols := func(a []float32, k int) []float32 { // rank k's columns of every row
			out := make([]float32, 0, rows*d)
			for i := range rows {
				out = append(out, a[i*width+k*d:i*width+(k+1)*d]...)
			}
			return out
		}
		ss, dot := make([]float32, rows), make([]float32, rows)
		part := make([]float32, rows)
		for k := range tp {
			kn.QKNormSumSq(cols(x, k), part)
			for i := range ss {
				ss[i] += part[i]
			}
		}
		gotY, gotDX := make([]float32, rows*width), make([]float32, rows*width)
		gotDW := make([]float32, 0, width)
		ys, rs := make([][]float32, tp), make([][]float32, tp)
		for k := range tp {
			ys[k], rs[k] = make([]float32, rows*d), make([]float32, rows)
			kn.QKNormSpan(cols(x, k), w[k*d:(k+1)*d], ss, ys[k], rs[k], width)
			kn.QKNormBwdDot(cols(dy, k), cols(x, k), w[k*d:(k+1)*d], rs[k], part)
			for i := range dot {
				dot[i] += part[i]
			}
		}
		for k := range tp {
			dxk, dwk := make([]float32, rows*d), make([]float32, d)
			kn.QKNormSpanBwd(cols(dy, k), cols(x, k), w[k*d:(k+1)*d], rs[k], dot, dxk, dwk, width, false, false)
			for i := range rows {
				copy(gotY[i*width+k*d:], ys[k][i*d:(i+1)*d])
				copy(gotDX[i*width+k*d:], dxk[i*d:(i+1)*d])
			}
			gotDW = append(gotDW, dwk...)
		}
		for _, c := range []struct {
			what      string
			got, want []float32
		}{{"output", gotY, y}, {"input gradient", gotDX, dx}, {"scale gradient", gotDW, dw}} {
			if e := relErr(c.got, c.want); e > 1e-6 {
				t.Errorf("tp %d: the %s differs from the whole rows' by %.3g", tp, c.what, e)
			}
		}
	}
}
