package vec

import (
	"math"
	"math/rand/v2"
	"testing"
)

// The kernels against float64 references; on a build or CPU without them every function
// must decline (and the test says so), never compute something else.

func TestSiLU(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	const n = 1003 // a tail after the eight-lane blocks
	a, u, dh := make([]float32, n), make([]float32, n), make([]float32, n)
	for i := range a {
		a[i], u[i], dh[i] = float32(r.NormFloat64()*5), float32(r.NormFloat64()), float32(r.NormFloat64())
	}
	a[0], a[1] = 100, -100
	h := make([]float32, n)
	if !SiLUForward(h, a, u) {
		if Available() {
			t.Fatal("SiLUForward declined although the kernels are available")
		}
		t.Skip("no vector kernels in this build or on this CPU")
	}
	da, du := append([]float32(nil), a...), append([]float32(nil), u...)
	if !SiLUBackward(da, du, dh, da, du) { // aliased, as runtime/nn calls it
		t.Fatal("SiLUBackward declined")
	}
	for i := range a {
		x, ui, g := float64(a[i]), float64(u[i]), float64(dh[i])
		sg := 1 / (1 + math.Exp(-x))
		check(t, "h", i, h[i], x*sg*ui)
		check(t, "du", i, du[i], g*x*sg)
		check(t, "da", i, da[i], g*ui*sg*(1+x*(1-sg)))
	}
}

func TestRowsDot(t *testing.T) {
	r := rand.New(rand.NewPCG(2, 2))
	const n, out, in = 3, 20, 77 // in: 32-wide blocks, 8-wide blocks and a scalar tail
	x, w, y := make([]float32, n*in), make([]float32, out*in), make([]float32, n*out)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	for i := range w {
		w[i] = float32(r.NormFloat64())
	}
	for i := range y {
		y[i] = 1
	}
	if !RowsDot(y, x, w, n, out, in, 5, out, true) {
		if Available() {
			t.Fatal("RowsDot declined although the kernels are available")
		}
		t.Skip("no vector kernels in this build or on this CPU")
	}
	for i := range n {
		for o := range out {
			want := 1.0 // outputs below o0 stay untouched
			if o >= 5 {
				for p := range in {
					want += float64(x[i*in+p]) * float64(w[o*in+p])
				}
			}
			check(t, "y", i*out+o, y[i*out+o], want)
		}
	}
}

func check(t *testing.T, what string, i int, got float32, want float64) {
	t.Helper()
	if d := math.Abs(float64(got) - want); !(d <= 2e-5*math.Max(1, math.Abs(want))) {
		t.Fatalf("%s[%d] = %v, want %v", what, i, got, want)
	}
}
