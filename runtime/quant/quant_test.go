package quant

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func randMatrix(r *rand.Rand, n int, scale float64) []float32 {
	w := make([]float32, n)
	for i := range w {
		w[i] = float32(r.NormFloat64() * scale)
	}
	return w
}

// TestQuantizeBound: every dequantised weight is within half its scale of the original,
// and the packed values read back as written.
func TestQuantizeBound(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, c := range []struct{ bits, group, out, in int }{
		{8, 0, 7, 33}, {8, 0, 5, 1}, {8, 32, 3, 64}, {8, 128, 4, 256}, {4, 32, 5, 96}, {4, 64, 3, 128}, {4, 128, 2, 256}, {4, 0, 3, 64},
	} {
		w := randMatrix(r, c.out*c.in, 0.1)
		w[0] = 0.9 // an outlier
		m, err := Quantize(w, c.out, c.in, c.bits, c.group)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Check(); err != nil {
			t.Fatal(err)
		}
		d := m.Dequantize()
		for o := 0; o < c.out; o++ {
			for k := 0; k < c.in; k++ {
				s := m.Scale(o, k)
				if diff := math.Abs(float64(d[o*c.in+k] - w[o*c.in+k])); diff > float64(s)/2*(1+1e-6) {
					t.Fatalf("%+v (%d,%d): |ŵ-w| = %g > s/2 = %g", c, o, k, diff, s/2)
				}
				if q := m.Q(o, k); q < -qmax(c.bits) || q > qmax(c.bits) {
					t.Fatalf("%+v: q = %d out of range", c, q)
				}
			}
		}
	}
}

// TestMulTAgainstDequantised: the product with the quantised matrix is within the
// activations' rounding bound of the dequantised fp32 product, on every kernel this CPU
// runs, across shapes with odd sizes and tails.
func TestMulTAgainstDequantised(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	cases := []struct{ bits, group, n, out, in int }{
		{8, 0, 1, 1, 1}, {8, 0, 1, 17, 33}, {8, 0, 3, 5, 31}, {8, 0, 4, 64, 128}, {8, 0, 16, 129, 200},
		{8, 32, 2, 9, 96}, {8, 64, 5, 33, 192}, {8, 0, 1, 300, 512},
		{4, 32, 1, 3, 32}, {4, 32, 3, 17, 96}, {4, 64, 2, 31, 128}, {4, 128, 7, 65, 256}, {4, 128, 1, 512, 512}, {4, 0, 2, 5, 64},
	}
	for _, c := range cases {
		w := randMatrix(r, c.out*c.in, 0.05)
		x := randMatrix(r, c.n*c.in, 1)
		if c.in > 3 {
			x[2] = 8 // an outlier activation
		}
		m, err := Quantize(w, c.out, c.in, c.bits, c.group)
		if err != nil {
			t.Fatal(err)
		}
		d := m.Dequantize()
		for _, isa := range isas() {
			t.Run(fmt.Sprintf("int%d_g%d_%dx%dx%d_isa%d", c.bits, c.group, c.n, c.out, c.in, isa), func(t *testing.T) {
				var a Activations
				QuantizeRows(&a, x, c.n, c.in)
				y := make([]float32, c.n*c.out)
				for i := range y {
					y[i] = 1 // accumulate adds to it
				}
				m.mulRows(isa, &a, y, c.n, true)
				for i := 0; i < c.n; i++ {
					for o := 0; o < c.out; o++ {
						var ref float64
						for k := 0; k < c.in; k++ {
							ref += float64(d[o*c.in+k]) * float64(x[i*c.in+k])
						}
						got := float64(y[i*c.out+o]) - 1
						if bound := m.BoundT(x, i, o) + 1e-6; math.Abs(got-ref) > bound {
							t.Fatalf("y[%d,%d] = %g, dequantised product %g: off by %g > bound %g", i, o, got, ref, math.Abs(got-ref), bound)
						}
					}
				}
			})
		}
	}
}

// TestKernelsAgree: the C kernels give the Go loop's result (the same integer sums,
// summed in another order), with and without accumulation, split or not.
func TestKernelsAgree(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	if len(isas()) == 1 {
		t.Skipf("only the Go kernel in this build or on this CPU (%s)", ISA())
	}
	for _, c := range []struct{ bits, group, n, out, in int }{{8, 0, 2, 70, 1000}, {4, 128, 3, 300, 512}, {8, 32, 1, 2000, 64}} {
		m, _ := Quantize(randMatrix(r, c.out*c.in, 0.05), c.out, c.in, c.bits, c.group)
		x := randMatrix(r, c.n*c.in, 1)
		ref := make([]float32, c.n*c.out)
		var a Activations
		QuantizeRows(&a, x, c.n, c.in)
		m.kernel(isaGo, &a, ref, c.n, 0, c.out, false)
		for _, isa := range isas()[1:] {
			y := make([]float32, c.n*c.out)
			m.mulRows(isa, &a, y, c.n, false)
			for i := range y {
				if math.Abs(float64(y[i]-ref[i])) > 1e-4*(1+math.Abs(float64(ref[i]))) {
					t.Fatalf("%+v isa %s: y[%d] = %g, Go %g", c, isaName(isa), i, y[i], ref[i])
				}
			}
		}
	}
}

func TestCheckScheme(t *testing.T) {
	for _, c := range []struct {
		bits, group, in int
		ok              bool
	}{
		{8, 0, 33, true}, {8, 128, 256, true}, {8, 128, 192, false}, {4, 128, 384, true}, {4, 128, 192, false},
		{4, 0, 48, false}, {4, 48, 96, false}, {4, -32, 64, false}, {4, 32, 64, true},
	} {
		err := CheckScheme(c.bits, c.group, c.in)
		var ge *GroupError
		if (err == nil) != c.ok || (err != nil && !errors.As(err, &ge)) {
			t.Errorf("CheckScheme(%d, %d, %d) = %v, want ok %v", c.bits, c.group, c.in, err, c.ok)
		}
	}
}

// TestQuantizeRowsAgree: the C quantisation of activations gives the Go loop's values.
func TestQuantizeRowsAgree(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for _, in := range []int{1, 31, 32, 33, 100, 128, 513} {
		x := randMatrix(r, 3*in, 2)
		x[0] = 0.5 // exact halves round to even
		var ref Activations
		QuantizeRows(&ref, x, 3, in)
		for _, isa := range isas() {
			var a Activations
			a.Q = make([]int8, 3*((in+31)/32)*32)
			for i := range a.Q {
				a.Q[i] = 99 // padding must be cleared
			}
			quantizeRows(isa, &a, x, 3, in)
			if !slices.Equal(a.Q, ref.Q) || !slices.Equal(a.Scales, ref.Scales) {
				t.Fatalf("in %d isa %s: quantised activations differ from Go's", in, isaName(isa))
			}
		}
	}
}
