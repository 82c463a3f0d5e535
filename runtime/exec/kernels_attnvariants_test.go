package exec

import (
	"math/rand/v2"
	"testing"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
)

func normals(r *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	return x
}

func dotF(a, b []float32) float64 {
	var s float64
	for i := range a {
		s += float64(a[i]) * float64(b[i])
	}
	return s
}

// numericGrad is the central difference of f at each element of x.
func numericGrad(x []float32, h float32, f func() float64) []float32 {
	g := make([]float32, len(x))
	for i := range x {
		v := x[i]
		x[i] = v + h
		up := f()
		x[i] = v - h
		down := f()
		x[i] = v
		g[i] = float32((up - down) / (2 * float64(h)))
	}
	return g
}

// TestSinkSoftmaxGradient checks softmax_bwd's scores' and sinks' gradients against
// central differences of L = Σ c ⊙ softmax(s; sinks), with and without a window and a
// chunk, and that the accumulating forms add the same gradients to what is there.
func TestSinkSoftmaxGradient(t *testing.T) {
	const B, H, T = 2, 3, 6
	r := rand.New(rand.NewPCG(4, 4))
	kn := &Kernels{batch: step.Batch{MicroBatch: B, SeqLen: T, Micro: 1}}
	for _, mask := range []step.AttnMask{{}, {Window: 3}, {Chunk: 4}} {
		s, sinks, c := normals(r, B*H*T*T), normals(r, H), normals(r, B*H*T*T)
		p := make([]float32, len(s))
		loss := func() float64 {
			kn.SoftmaxMasked(s, sinks, p, mask)
			return dotF(c, p)
		}
		loss()
		ds, dsinks := make([]float32, len(s)), make([]float32, H)
		kn.SoftmaxBwdSinks(c, p, ds, dsinks, false, false)
		wantS := numericGrad(s, 1e-2, loss)
		wantSinks := numericGrad(sinks, 1e-2, loss)
		if e := relErr(ds, wantS); e > 1e-3 {
			t.Errorf("%s: the scores' gradient differs from central differences by %.3g", mask, e)
		}
		if e := relErr(dsinks, wantSinks); e > 1e-3 {
			t.Errorf("%s: the sinks' gradient differs from central differences by %.3g", mask, e)
		}
		// Accumulating: what is there plus the same gradient.
		loss()
		base := normals(r, H)
		acc := append([]float32(nil), base...)
		accS := append([]float32(nil), ds...)
		kn.SoftmaxBwdSinks(c, p, accS, acc, true, true)
		for h := range acc {
			if d := acc[h] - base[h] - dsinks[h]; d*d > 1e-10 {
				t.Errorf("%s: accumulated sink gradient %g, want %g + %g", mask, acc[h], base[h], dsinks[h])
			}
		}
		for i := range accS {
			if d := accS[i] - 2*ds[i]; d*d > 1e-10 {
				t.Fatalf("%s: accumulated scores' gradient %g, want 2×%g", mask, accS[i], ds[i])
			}
		}
	}
}

// TestQKL2NormGradient checks qk_l2_norm_bwd against central differences of
// L = Σ c ⊙ qk_l2_norm(x), per head_dim piece, written and added to.
func TestQKL2NormGradient(t *testing.T) {
	const rows, dh = 10, 8
	r := rand.New(rand.NewPCG(5, 5))
	kn := &Kernels{d: program.Dims{NormEps: 1e-5}}
	x, c := normals(r, rows*dh), normals(r, rows*dh)
	y, rstd := make([]float32, len(x)), make([]float32, rows)
	loss := func() float64 {
		kn.QKL2Norm(x, y, rstd, dh)
		return dotF(c, y)
	}
	loss()
	dx := make([]float32, len(x))
	QKL2NormBwd(c, y, rstd, dx, dh, false)
	if e := relErr(dx, numericGrad(x, 1e-2, loss)); e > 1e-3 {
		t.Errorf("the input's gradient differs from central differences by %.3g", e)
	}
	loss()
	acc := append([]float32(nil), dx...)
	QKL2NormBwd(c, y, rstd, acc, dh, true)
	for i := range acc {
		if d := acc[i] - 2*dx[i]; d*d > 1e-10 {
			t.Fatalf("accumulated gradient %g, want 2×%g", acc[i], dx[i])
		}
	}
}
