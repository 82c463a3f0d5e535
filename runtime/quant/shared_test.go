package quant

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestMulTSharedEqualsMulT: quantising x once for several matrices gives each output
// exactly what its own product gives, on every kernel, with and without accumulation.
func TestMulTSharedEqualsMulT(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	cases := []struct {
		n, in, bits, group int
		outs               []int
	}{
		{1, 128, 8, 0, []int{128, 128, 128}},
		{1, 128, 4, 128, []int{128, 64, 64}},
		{3, 96, 8, 0, []int{40, 13}},
		{2, 512, 4, 128, []int{128, 256}},
		{16, 128, 8, 64, []int{512, 512}},
	}
	for _, c := range cases {
		x := randMatrix(r, c.n*c.in, 1)
		var ms []*Matrix
		for _, out := range c.outs {
			m, err := Quantize(randMatrix(r, out*c.in, 0.05), out, c.in, c.bits, c.group)
			if err != nil {
				t.Fatal(err)
			}
			ms = append(ms, m)
		}
		for _, isa := range isas() {
			for _, acc := range []bool{false, true} {
				t.Run(fmt.Sprintf("int%d_g%d_n%d_in%d_%d_isa%s_acc%v", c.bits, c.group, c.n, c.in, len(ms), isaName(isa), acc), func(t *testing.T) {
					var fm [3]*Matrix
					var got, want [3][]float32
					for j, m := range ms {
						fm[j] = m
						got[j] = make([]float32, c.n*m.Out)
						for i := range got[j] {
							got[j][i] = float32(i%7) - 3
						}
						want[j] = slices.Clone(got[j])
						m.mulOne(isa, new(Activations), want[j], x, c.n, acc)
					}
					mulShared(isa, new(Activations), x, c.n, fm, got, acc)
					for j := range ms {
						if !slices.Equal(got[j], want[j]) {
							t.Fatalf("matrix %d: shared product differs from its own", j)
						}
					}
				})
			}
		}
		ys := make([][]float32, len(ms))
		for j, m := range ms {
			ys[j] = make([]float32, c.n*m.Out)
		}
		if err := MulTShared(x, c.n, ms, ys, false); err != nil {
			t.Fatal(err)
		}
		for j, m := range ms {
			want := make([]float32, c.n*m.Out)
			m.MulT(want, x, c.n, false)
			if !slices.Equal(ys[j], want) {
				t.Fatalf("%+v: MulTShared's output %d differs from MulT's", c, j)
			}
		}
	}
}

// TestMulTSharedRefuses: matrices of different widths, a wrong count, short outputs.
func TestMulTSharedRefuses(t *testing.T) {
	a, _ := Quantize(make([]float32, 4*64), 4, 64, 8, 0)
	b, _ := Quantize(make([]float32, 4*32), 4, 32, 8, 0)
	x := make([]float32, 64)
	y := make([]float32, 4)
	for name, call := range map[string]func() error{
		"widths": func() error { return MulTShared(x, 1, []*Matrix{a, b}, [][]float32{y, y}, false) },
		"one":    func() error { return MulTShared(x, 1, []*Matrix{a}, [][]float32{y}, false) },
		"four":   func() error { return MulTShared(x, 1, []*Matrix{a, a, a, a}, [][]float32{y, y, y, y}, false) },
		"short":  func() error { return MulTShared(x, 1, []*Matrix{a, a}, [][]float32{y, y[:2]}, false) },
	} {
		if err := call(); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
