package exec

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestNormVecAgreesWithGo: the norm kernels on vector lanes compute what the Go loops
// compute (the same roundings; only the order of a row's double sums differs), for
// RMSNorm and LayerNorm, with and without a bias, at widths with and without a tail.
func TestNormVecAgreesWithGo(t *testing.T) {
	if !normFwdVec(make([]float32, 16), make([]float32, 16), nil, make([]float32, 16), make([]float32, 1), 0, 0, 1e-5, false) {
		t.Skip("no vector norm kernels on this build or CPU (they need cgo, amd64 and AVX2)")
	}
	r := rand.New(rand.NewPCG(7, 9))
	fill := func(n int, scale float64) []float32 {
		s := make([]float32, n)
		for i := range s {
			s[i] = float32(r.NormFloat64()*scale + 0.3)
		}
		return s
	}
	// close reports whether a and b agree within a few float32 roundings of the larger.
	close := func(a, b float32) bool {
		return math.Abs(float64(a-b)) <= 4e-7*math.Max(math.Abs(float64(a)), math.Abs(float64(b)))+1e-30
	}
	for _, layer := range []bool{false, true} {
		for _, d := range []int{16, 100, 128, 203} {
			for _, bias := range []bool{false, true} {
				n := 37
				x, w, dh := fill(n*d, 2), fill(d, 1), fill(n*d, 1)
				var b []float32
				if bias {
					b = fill(d, 0.5)
				}
				hGo, hVec := make([]float32, n*d), make([]float32, n*d)
				rGo, rVec := make([]float32, n), make([]float32, n)
				normFwdRows(x, w, b, hGo, rGo, 0, n, 1e-5, layer)
				normFwdVec(x, w, b, hVec, rVec, 0, n, 1e-5, layer)
				for i := range hGo {
					if !close(hGo[i], hVec[i]) {
						t.Fatalf("layer %v d %d bias %v: h[%d] Go %v, vector %v", layer, d, bias, i, hGo[i], hVec[i])
					}
				}
				for i := range rGo {
					if !close(rGo[i], rVec[i]) {
						t.Fatalf("layer %v d %d: rstd[%d] Go %v, vector %v", layer, d, i, rGo[i], rVec[i])
					}
				}
				var means []float64
				if layer {
					means = make([]float64, n)
					for i := range means {
						means[i] = rowMean(x[i*d:(i+1)*d], true)
					}
				}
				dwGo, dwVec := fill(d, 1), make([]float32, d)
				copy(dwVec, dwGo)
				var dbGo, dbVec []float32
				if bias {
					dbGo = fill(d, 1)
					dbVec = append([]float32(nil), dbGo...)
				}
				normBwdDwCols(dh, x, rGo, means, dwGo, dbGo, n, 3, d)
				normBwdDwVec(dh, x, rGo, means, dwVec, dbVec, n, 3, d)
				for j := range dwGo {
					if !close(dwGo[j], dwVec[j]) {
						t.Fatalf("layer %v d %d: dw[%d] Go %v, vector %v", layer, d, j, dwGo[j], dwVec[j])
					}
				}
				for j := range dbGo {
					if dbGo[j] != dbVec[j] {
						t.Fatalf("layer %v d %d: db[%d] Go %v, vector %v", layer, d, j, dbGo[j], dbVec[j])
					}
				}
				dxGo := fill(n*d, 1)
				dxVec := append([]float32(nil), dxGo...)
				normBwdDxRows(dh, x, w, rGo, dxGo, 0, n, layer)
				normBwdDxVec(dh, x, w, rGo, dxVec, 0, n, layer, true)
				for i := range dxGo {
					// dx is a difference of sums: held to the row's gradient scale.
					if math.Abs(float64(dxGo[i]-dxVec[i])) > 1e-6 {
						t.Fatalf("layer %v d %d: dx[%d] Go %v, vector %v", layer, d, i, dxGo[i], dxVec[i])
					}
				}
				sq, _ := sumSquaresVec(x)
				var want float64
				for _, v := range x {
					want += float64(v) * float64(v)
				}
				if math.Abs(sq-want) > 1e-12*want {
					t.Fatalf("sum of squares: vector %v, Go %v", sq, want)
				}
			}
		}
	}
}
