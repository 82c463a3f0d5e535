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

// softmaxRef is the float64 softmax of x with an optional sink logit in the denominator.
func softmaxRef(x []float32, hasSink bool, sink float32) []float64 {
	mx := math.Inf(-1)
	for _, v := range x {
		mx = math.Max(mx, float64(v))
	}
	if hasSink {
		mx = math.Max(mx, float64(sink))
	}
	var s float64
	if hasSink {
		s = math.Exp(float64(sink) - mx)
	}
	out := make([]float64, len(x))
	for i, v := range x {
		out[i] = math.Exp(float64(v) - mx)
		s += out[i]
	}
	for i := range out {
		out[i] /= s
	}
	return out
}

func TestSoftmaxRows(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 3))
	const T, ld = 37, 41 // rows that end inside and outside the eight-lane blocks, a padded stride
	for _, tc := range []struct {
		causal  bool
		window  int
		hasSink bool
	}{{false, 0, false}, {true, 0, false}, {true, 5, true}, {false, 0, true}} {
		x := make([]float32, T*ld)
		for i := range x {
			x[i] = float32(r.NormFloat64() * 8)
		}
		x[3] = -200 // underflows to zero
		orig := append([]float32(nil), x...)
		const sink = 1.5
		if !SoftmaxRows(x, T, T, ld, tc.causal, tc.window, tc.hasSink, sink) {
			if Available() {
				t.Fatal("SoftmaxRows declined although the kernels are available")
			}
			t.Skip("no vector kernels in this build or on this CPU")
		}
		for i := range T {
			lo, hi := 0, T
			if tc.causal {
				hi = i + 1
				if tc.window > 0 {
					lo = max(0, i-tc.window+1)
				}
			}
			want := softmaxRef(orig[i*ld+lo:i*ld+hi], tc.hasSink, sink)
			for j := range T {
				got := x[i*ld+j]
				if j < lo || j >= hi {
					if got != 0 {
						t.Fatalf("%+v: row %d column %d outside [%d, %d) = %v, want 0", tc, i, j, lo, hi, got)
					}
					continue
				}
				if d := math.Abs(float64(got) - want[j-lo]); d > 1e-6*math.Max(want[j-lo], 1e-3) {
					t.Fatalf("%+v: row %d column %d = %v, want %v", tc, i, j, got, want[j-lo])
				}
			}
			for j := T; j < ld && i*ld+j < len(x); j++ {
				if x[i*ld+j] != orig[i*ld+j] {
					t.Fatalf("%+v: padding of row %d written", tc, i)
				}
			}
		}
	}
}

func TestExpSumRows(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 4))
	const rows, n, ld = 5, 259, 260
	x := make([]float32, rows*ld)
	for i := range x {
		x[i] = float32(r.NormFloat64() * 10)
	}
	x[7], x[ld+1] = 90, -90 // beyond float32's exp range either side, relative to the max
	orig := append([]float32(nil), x...)
	mx, sum := make([]float32, rows), make([]float64, rows)
	if !ExpSumRows(x, rows, n, ld, mx, sum) {
		if Available() {
			t.Fatal("ExpSumRows declined although the kernels are available")
		}
		t.Skip("no vector kernels in this build or on this CPU")
	}
	for i := range rows {
		row := orig[i*ld : i*ld+n]
		m := row[0]
		var s float64
		for _, v := range row {
			m = max(m, v)
		}
		for _, v := range row {
			s += math.Exp(float64(v) - float64(m))
		}
		if mx[i] != m {
			t.Fatalf("row %d: max %v, want %v", i, mx[i], m)
		}
		if math.Abs(sum[i]-s) > 1e-6*s {
			t.Fatalf("row %d: sum %v, want %v", i, sum[i], s)
		}
	}
	for i := range x {
		if x[i] != orig[i] {
			t.Fatalf("x[%d] written", i)
		}
	}
}

// TestExp holds exp8 to float64 across float32's range (relative error as runtime/nn's
// exp32 is held to), its saturation at both ends and NaN.
func TestExp(t *testing.T) {
	var x []float32
	for v := float32(-87); v < 88.5; v += 0.00731 {
		x = append(x, v)
	}
	x = append(x, 88.72, 100, -87.5, -100, 0, float32(math.NaN()))
	y := append([]float32(nil), x...)
	if !Exp(y) {
		if Available() {
			t.Fatal("Exp declined although the kernels are available")
		}
		t.Skip("no vector kernels in this build or on this CPU")
	}
	var worst float64
	for i, v := range x[:len(x)-6] {
		want := math.Exp(float64(v))
		worst = math.Max(worst, math.Abs(float64(y[i])-want)/want)
	}
	if worst > 3e-7 {
		t.Errorf("worst relative error %g", worst)
	}
	tail := y[len(y)-6:]
	if math.IsInf(float64(tail[0]), 0) || !math.IsInf(float64(tail[1]), 1) || tail[2] != 0 || tail[3] != 0 ||
		tail[4] != 1 || !math.IsNaN(float64(tail[5])) {
		t.Errorf("e^{88.72, 100, -87.5, -100, 0, NaN} = %v", tail)
	}
	t.Logf("worst relative error %.3g", worst)
}

func TestWeightedRows(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 5))
	for _, n := range []int{64, 128 + 8 + 3, 5} {
		const rows = 19
		ldv := n + 7
		p, v := make([]float32, rows), make([]float32, rows*ldv)
		for i := range p {
			p[i] = float32(r.Float64())
		}
		for i := range v {
			v[i] = float32(r.NormFloat64())
		}
		y := make([]float32, n+1)
		y[n] = 42
		if !WeightedRows(y[:n], p, v, n, ldv) {
			if Available() {
				t.Fatal("WeightedRows declined although the kernels are available")
			}
			t.Skip("no vector kernels in this build or on this CPU")
		}
		for c := range n {
			var want float64
			for j := range rows {
				want += float64(p[j]) * float64(v[j*ldv+c])
			}
			check(t, "y", c, y[c], want)
		}
		if y[n] != 42 {
			t.Fatalf("n=%d: y written past n", n)
		}
	}
}

// TestWeightedRowsHeadsIsWeightedRowsPerHead: the one-call form gives every head exactly
// the sums WeightedRows gives it, bit for bit, with heads sharing key/value groups.
func TestWeightedRowsHeadsIsWeightedRowsPerHead(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	fill := func(n int) []float32 {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(r.NormFloat64())
		}
		return x
	}
	for _, c := range []struct{ heads, perKV, rows, n int }{{4, 1, 7, 32}, {8, 4, 13, 72}, {3, 3, 5, 9}, {5, 1, 127, 32}, {6, 2, 9, 32}} {
		groups := c.heads / c.perKV
		ldv := groups * c.n
		p, v := fill(c.heads*c.rows), fill(c.rows*ldv)
		got := make([]float32, c.heads*c.n)
		if !WeightedRowsHeads(got, p, v, c.heads, c.perKV, c.rows, c.n, ldv, c.n, c.rows, c.n) {
			t.Skip("no vector kernels on this CPU")
		}
		for h := 0; h < c.heads; h++ {
			want := make([]float32, c.n)
			WeightedRows(want, p[h*c.rows:(h+1)*c.rows], v[(h/c.perKV)*c.n:], c.n, ldv)
			for j := range want {
				if math.Float32bits(got[h*c.n+j]) != math.Float32bits(want[j]) {
					t.Fatalf("%+v: head %d element %d: %g, per head %g", c, h, j, got[h*c.n+j], want[j])
				}
			}
		}
	}
}
