package vec

import (
	"math"
	"math/rand/v2"
	"testing"
)

// normRef is runtime/nn's scalar norm of one row, in float64 left to right.
func normRef(y, xhat []float32, x, w, b []float32, layer bool, eps float64) float32 {
	var mean float64
	if layer {
		for _, v := range x {
			mean += float64(v)
		}
		mean /= float64(len(x))
	}
	var ss float64
	for _, v := range x {
		c := float64(v) - mean
		ss += c * c
	}
	r := 1 / math.Sqrt(ss/float64(len(x))+eps)
	for j, v := range x {
		h := float32((float64(v) - mean) * r)
		xhat[j] = h
		y[j] = h * w[j]
		if b != nil {
			y[j] += b[j]
		}
	}
	return float32(r)
}

// TestNormRowsIsTheScalarNorm: the vector norm gives the scalar loop's xhat, y and rstd
// within one float32 rounding (the sums in double differ only in their last bits), for
// RMS and layer norms, with and without a bias, at widths with and without a tail, and
// in place (y = x).
func TestNormRowsIsTheScalarNorm(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	ulps := func(a, b float32) int64 {
		d := int64(math.Float32bits(a)) - int64(math.Float32bits(b))
		return max(d, -d)
	}
	for _, c := range []struct {
		rows, d       int
		layer, biased bool
	}{{1, 128, false, false}, {3, 256, true, true}, {2, 13, false, true}, {4, 37, true, false}} {
		x, w := randRows(r, c.rows*c.d), randRows(r, c.d)
		for i := range x {
			x[i] = x[i]*3 + 0.5
		}
		var b []float32
		if c.biased {
			b = randRows(r, c.d)
		}
		y, xhat, rstd := make([]float32, c.rows*c.d), make([]float32, c.rows*c.d), make([]float32, c.rows)
		if !NormRows(y, xhat, rstd, x, c.rows, c.d, w, b, c.layer, 1e-5) {
			if Available() {
				t.Fatal("NormRows declined although the kernels are available")
			}
			t.Skip("no vector kernels in this build or on this CPU")
		}
		inPlace := append([]float32(nil), x...)
		NormRows(inPlace, make([]float32, c.rows*c.d), make([]float32, c.rows), inPlace, c.rows, c.d, w, b, c.layer, 1e-5)
		wy, wh := make([]float32, c.d), make([]float32, c.d)
		for i := 0; i < c.rows; i++ {
			wr := normRef(wy, wh, x[i*c.d:(i+1)*c.d], w, b, c.layer, 1e-5)
			if ulps(rstd[i], wr) > 1 {
				t.Fatalf("%+v row %d: rstd %g, scalar %g", c, i, rstd[i], wr)
			}
			for j := 0; j < c.d; j++ {
				k := i*c.d + j
				if ulps(xhat[k], wh[j]) > 1 || ulps(y[k], wy[j]) > 2 || y[k] != inPlace[k] {
					t.Fatalf("%+v y[%d]: xhat %g y %g (in place %g), scalar xhat %g y %g", c, k, xhat[k], y[k], inPlace[k], wh[j], wy[j])
				}
			}
		}
	}
}

// TestNormRowsWithoutXhat: with xhat nil (runtime/exec's Norm keeps no xhat) NormRows
// gives the same y and rstd, bit for bit, as with it.
func TestNormRowsWithoutXhat(t *testing.T) {
	if !Available() {
		t.Skip("no vector kernels on this build or CPU (they need cgo, amd64, AVX2 and FMA)")
	}
	r := rand.New(rand.NewPCG(13, 14))
	for _, layer := range []bool{false, true} {
		for _, d := range []int{8, 21, 64} {
			rows := 5
			x, w, b := make([]float32, rows*d), make([]float32, d), make([]float32, d)
			for i := range x {
				x[i] = float32(r.NormFloat64()*3 + 0.5)
			}
			for j := range w {
				w[j], b[j] = float32(r.NormFloat64()), float32(r.NormFloat64())
			}
			y, xhat, rstd := make([]float32, rows*d), make([]float32, rows*d), make([]float32, rows)
			y2, rstd2 := make([]float32, rows*d), make([]float32, rows)
			NormRows(y, xhat, rstd, x, rows, d, w, b, layer, 1e-5)
			if !NormRows(y2, nil, rstd2, x, rows, d, w, b, layer, 1e-5) {
				t.Fatal("NormRows declined without xhat")
			}
			for i := range y {
				if math.Float32bits(y[i]) != math.Float32bits(y2[i]) {
					t.Fatalf("layer %v d %d: y[%d] %v with xhat, %v without", layer, d, i, y[i], y2[i])
				}
			}
			for i := range rstd {
				if rstd[i] != rstd2[i] {
					t.Fatalf("layer %v d %d: rstd[%d] %v with xhat, %v without", layer, d, i, rstd[i], rstd2[i])
				}
			}
		}
	}
}
