package blas

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// naive is the textbook triple loop in float64, the reference both backends must match.
func naive(transA, transB bool, m, n, k int, alpha float64, a []float64, lda int, b []float64, ldb int, beta float64, c []float64, ldc int) {
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			var s float64
			for p := 0; p < k; p++ {
				var av, bv float64
				if transA {
					av = a[p*lda+i]
				} else {
					av = a[i*lda+p]
				}
				if transB {
					bv = b[j*ldb+p]
				} else {
					bv = b[p*ldb+j]
				}
				s += av * bv
			}
			c[i*ldc+j] = alpha*s + beta*c[i*ldc+j]
		}
	}
}

func randSlice(r *rand.Rand, n int) []float64 {
	x := make([]float64, n)
	for i := range x {
		x[i] = r.NormFloat64()
	}
	return x
}

func to32(x []float64) []float32 {
	y := make([]float32, len(x))
	for i, v := range x {
		y[i] = float32(v)
	}
	return y
}

func TestGemmMatchesNaive(t *testing.T) {
	t.Logf("backend %s", Backend)
	r := rand.New(rand.NewPCG(1, 2))
	shapes := [][3]int{{1, 1, 1}, {3, 5, 7}, {17, 9, 33}, {130, 70, 64}, {64, 1, 200}, {8, 8, 0}}
	for _, sh := range shapes {
		m, n, k := sh[0], sh[1], sh[2]
		for _, ta := range []bool{false, true} {
			for _, tb := range []bool{false, true} {
				for _, ab := range [][2]float64{{1, 0}, {0.5, 1}, {-2, 0.25}} {
					// Padded leading dimensions catch stride bugs.
					lda, ldb, ldc := k+3, n+2, n+1
					arows, brows := m, k
					if ta {
						lda, arows = m+3, k
					}
					if tb {
						ldb, brows = k+2, n
					}
					a := randSlice(r, max(arows*lda, 1))
					b := randSlice(r, max(brows*ldb, 1))
					c := randSlice(r, m*ldc)
					want := append([]float64(nil), c...)
					naive(ta, tb, m, n, k, ab[0], a, lda, b, ldb, ab[1], want, ldc)

					got := append([]float64(nil), c...)
					Gemm(ta, tb, m, n, k, ab[0], a, lda, b, ldb, ab[1], got, ldc)
					if e := maxErr(got, want); e > 1e-10*float64(k+1) {
						t.Errorf("float64 %v ta=%v tb=%v ab=%v: max error %g", sh, ta, tb, ab, e)
					}
					got32 := to32(c)
					Gemm(ta, tb, m, n, k, float32(ab[0]), to32(a), lda, to32(b), ldb, float32(ab[1]), got32, ldc)
					g := make([]float64, len(got32))
					for i, v := range got32 {
						g[i] = float64(v)
					}
					if e := maxErr(g, want); e > 1e-5*float64(k+1) {
						t.Errorf("float32 %v ta=%v tb=%v ab=%v: max error %g", sh, ta, tb, ab, e)
					}
				}
			}
		}
	}
}

func TestGemmShortOperandPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("Gemm accepted a B too short for its shape")
		}
	}()
	Gemm(false, false, 2, 2, 2, 1, make([]float32, 4), 2, make([]float32, 3), 2, 0, make([]float32, 4), 2)
}

func maxErr(a, b []float64) float64 {
	var e float64
	for i := range a {
		e = math.Max(e, math.Abs(a[i]-b[i]))
	}
	return e
}

func BenchmarkSgemm256(b *testing.B) {
	const m, n, k = 2048, 256, 256
	x, w, y := make([]float32, m*k), make([]float32, n*k), make([]float32, m*n)
	for i := range x {
		x[i] = float32(i%7) * 0.1
	}
	for i := range w {
		w[i] = float32(i%5) * 0.1
	}
	b.SetBytes(0)
	for b.Loop() {
		Gemm(false, true, m, n, k, 1, x, k, w, k, 0, y, n)
	}
	b.ReportMetric(float64(2*m*n*k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
}

// BenchmarkSmallRows compares, on one goroutine, the streaming kernel for products of a
// few rows (C = A·Bᵀ, as a linear layer computes at generation time) against sgemm, for
// the row counts around smallRows and the benchmark model's weight shapes.
func BenchmarkSmallRows(b *testing.B) {
	if !haveSmall {
		b.Skip("no streaming kernel in this build or on this CPU")
	}
	for _, nk := range [][2]int{{768, 256}, {256, 512}} {
		n, k := nk[0], nk[1]
		for _, m := range []int{5, 8, 16, 24, 32, 48} {
			a, w, c := make([]float32, m*k), make([]float32, n*k), make([]float32, m*n)
			for i := range a {
				a[i] = float32(i%7) * 0.1
			}
			for i := range w {
				w[i] = float32(i%5) * 0.1
			}
			for _, kernel := range []string{"stream", "sgemm"} {
				b.Run(fmt.Sprintf("m=%d/n=%d/k=%d/%s", m, n, k, kernel), func(b *testing.B) {
					for b.Loop() {
						if kernel == "stream" {
							gemmSmallNT(m, k, 1, a, k, w, k, 0, c, n, 0, n)
						} else {
							gemm(false, true, m, n, k, 1, a, k, w, k, 0, c, n)
						}
					}
					b.ReportMetric(float64(2*m*n*k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
				})
			}
		}
	}
}

// TestGemmSmallRows covers the streaming path for few rows (A·Bᵀ in float32 with m ≤
// smallRows): every remainder of its three-by-four tiles and eight-wide k blocks, padded
// strides, beta = 0 over a C full of NaN (which BLAS never reads), and products large
// enough to be split by columns over goroutines.
func TestGemmSmallRows(t *testing.T) {
	t.Logf("streaming kernel: %v", haveSmall)
	r := rand.New(rand.NewPCG(3, 4))
	for _, sh := range [][3]int{{1, 1, 1}, {1, 3, 8}, {3, 4, 9}, {4, 7, 16}, {5, 2, 7}, {7, 11, 33}, {smallRows, 13, 24},
		{16, 768, 256}, {smallRows, 301, 257}, {2, 1000, 130}} {
		m, n, k := sh[0], sh[1], sh[2]
		for _, ab := range [][2]float64{{1, 0}, {0.5, 1}, {-2, 0.25}} {
			lda, ldb, ldc := k+3, k+1, n+2
			a, b := randSlice(r, m*lda), randSlice(r, n*ldb)
			c := randSlice(r, m*ldc)
			want := append([]float64(nil), c...)
			naive(false, true, m, n, k, ab[0], a, lda, b, ldb, ab[1], want, ldc)
			got := to32(c)
			if ab[1] == 0 {
				for i := range got {
					got[i] = float32(math.NaN())
				}
			}
			Gemm(false, true, m, n, k, float32(ab[0]), to32(a), lda, to32(b), ldb, float32(ab[1]), got, ldc)
			for i := 0; i < m; i++ {
				for j := 0; j < n; j++ {
					g, w := float64(got[i*ldc+j]), want[i*ldc+j]
					if !(math.Abs(g-w) <= 1e-5*float64(k+1)) {
						t.Fatalf("%v ab=%v: C[%d][%d] = %v, want %v", sh, ab, i, j, g, w)
					}
				}
				// Padding between rows of C is never written.
				for j := n; j < ldc && i*ldc+j < len(got); j++ {
					if ab[1] != 0 && float64(got[i*ldc+j]) != float64(float32(c[i*ldc+j])) {
						t.Fatalf("%v: padding C[%d][%d] written", sh, i, j)
					}
				}
			}
		}
	}
}
