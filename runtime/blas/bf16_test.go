package blas

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

func TestRoundBF16(t *testing.T) {
	f := math.Float32frombits
	cases := []struct {
		in, want float32
	}{
		{1, 1},
		{-2.5, -2.5},
		{f(0x3f808000), 1},                    // 1 + 2⁻⁸: a tie, to the even 1
		{f(0x3f818000), f(0x3f820000)},        // 1 + 3·2⁻⁸: a tie, to the even 1 + 2⁻⁶
		{f(0x3f808001), f(0x3f810000)},        // just above the tie: up
		{f(0x3f807fff), 1},                    // just below: down
		{f(0x7f7fffff), float32(math.Inf(1))}, // the largest float32 rounds past bfloat16's largest
		{float32(math.Inf(-1)), float32(math.Inf(-1))},
		{f(0x00000001), 0}, // the smallest denormal rounds to zero
	}
	for _, c := range cases {
		if got := RoundBF16(c.in); math.Float32bits(got) != math.Float32bits(c.want) {
			t.Errorf("RoundBF16(%#08x) = %#08x, want %#08x", math.Float32bits(c.in), math.Float32bits(got), math.Float32bits(c.want))
		}
	}
	if nan := RoundBF16(f(0x7f800001)); !math.IsNaN(float64(nan)) {
		t.Errorf("RoundBF16(signalling NaN) = %v, want NaN", nan)
	}
}

// bf16Reference is C = alpha·bf16(op(A))·bf16(op(B)) + beta·C in float64 with the bound
// on each element's float32 error: (k+4)·2⁻²⁴ times the sum of the absolute terms (the
// float32 sums of k products in any order, the scaling by alpha and the addition of beta·C).
func bf16Reference(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) (want, bound []float64) {
	at := func(i, p int) float64 {
		if transA {
			return float64(RoundBF16(a[p*lda+i]))
		}
		return float64(RoundBF16(a[i*lda+p]))
	}
	bt := func(p, j int) float64 {
		if transB {
			return float64(RoundBF16(b[j*ldb+p]))
		}
		return float64(RoundBF16(b[p*ldb+j]))
	}
	want, bound = make([]float64, m*n), make([]float64, m*n)
	u := math.Ldexp(1, -24)
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			var s, abs float64
			for p := 0; p < k; p++ {
				s += at(i, p) * bt(p, j)
				abs += math.Abs(at(i, p) * bt(p, j))
			}
			cij := 0.0
			if beta != 0 {
				cij = float64(beta) * float64(c[i*ldc+j])
			}
			want[i*n+j] = float64(alpha)*s + cij
			bound[i*n+j] = float64(k+4)*u*(math.Abs(float64(alpha))*abs+math.Abs(cij)) + 1e-37
		}
	}
	return want, bound
}

// TestGemmBF16MatchesReference holds GemmBF16 (the AVX512-BF16 kernel where the CPU has
// it) and its rounding fallback to a float64 product of the rounded operands, over every
// transposition and edge sizes: one row, odd k, n not a multiple of the 16-column vectors
// or the 32-column panels, k across the kernel's 256-value blocks, strided operands, and
// products large enough to be split over goroutines, by columns and (more rows than
// columns) by rows.
func TestGemmBF16MatchesReference(t *testing.T) {
	t.Logf("bf16 kernel on this CPU: %v", BF16Compute())
	r := rand.New(rand.NewPCG(1, 2))
	shapes := [][3]int{
		{1, 1, 1}, {1, 17, 3}, {1, 64, 255}, {2, 15, 2}, {12, 16, 7}, {13, 31, 1},
		{5, 33, 257}, {25, 100, 513}, {97, 47, 96}, {130, 100, 257}, {64, 200, 300}, {256, 40, 64},
	}
	for _, s := range shapes {
		m, n, k := s[0], s[1], s[2]
		for _, tr := range [][2]bool{{false, false}, {false, true}, {true, false}, {true, true}} {
			for _, ab := range [][2]float32{{1, 0}, {0.5, 1}, {-1.25, 0.75}} {
				transA, transB, alpha, beta := tr[0], tr[1], ab[0], ab[1]
				name := fmt.Sprintf("%dx%dx%d/tA=%v,tB=%v/alpha=%v,beta=%v", m, n, k, transA, transB, alpha, beta)
				// Stored sizes, with leading dimensions past the columns.
				ar, ac := m, k
				if transA {
					ar, ac = k, m
				}
				br, bc := k, n
				if transB {
					br, bc = n, k
				}
				lda, ldb, ldc := ac+3, bc+1, n+2
				a, b := randVec(r, ar*lda), randVec(r, br*ldb)
				c0 := randVec(r, m*ldc)
				want, bound := bf16Reference(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c0, ldc)
				for _, path := range []struct {
					name string
					gemm func(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int)
				}{{"GemmBF16", GemmBF16}, {"gemmBF16Serial", gemmBF16Serial}, {"rounded", gemmBF16Rounded}} {
					c := append([]float32(nil), c0...)
					if beta == 0 {
						for i := range c {
							c[i] = float32(math.NaN()) // beta = 0 never reads C
						}
					}
					before := append([]float32(nil), c...)
					path.gemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
					for i := 0; i < m; i++ {
						for j := 0; j < n; j++ {
							if got := float64(c[i*ldc+j]); !(math.Abs(got-want[i*n+j]) <= bound[i*n+j]) {
								t.Fatalf("%s %s: C[%d][%d] = %g, want %g within %g", path.name, name, i, j, got, want[i*n+j], bound[i*n+j])
							}
						}
						for j := n; j < ldc; j++ {
							if math.Float32bits(c[i*ldc+j]) != math.Float32bits(before[i*ldc+j]) {
								t.Fatalf("%s %s: C[%d][%d] past the %d columns was written", path.name, name, i, j, n)
							}
						}
					}
				}
			}
		}
	}
}

// TestGemmBF16RoundsItsInputs: with one term per element the product is exact, so C holds
// exactly bf16(a)·bf16(b), which differs from the float32 product of the unrounded values.
func TestGemmBF16RoundsItsInputs(t *testing.T) {
	a := []float32{1 + 1.0/512, 3}                   // 1 + 2⁻⁹ rounds to 1
	b := []float32{1, 1 + 1.0/256 + 1.0/1024, 2, -1} // 1 + 2⁻⁸ + 2⁻¹⁰ rounds to 1 + 2⁻⁷
	c := make([]float32, 4)
	GemmBF16(false, false, 2, 2, 1, 1, a, 1, b[:2], 2, 0, c[:], 2) // [2×1]·[1×2]
	want := []float32{1, 1 + 1.0/128, 3, 3 * (1 + 1.0/128)}
	for i := range want {
		if c[i] != want[i] {
			t.Errorf("C[%d] = %v, want %v (the product of the rounded inputs)", i, c[i], want[i])
		}
	}
}

func randVec(r *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	return v
}

// BenchmarkGemmBF16 measures the bf16 product against the float32 one (Gemm: OpenBLAS
// split over GOMAXPROCS goroutines) as GFLOP/s on the model's shapes m×n×k: a dense
// layer of 1024 tokens, a 64-row expert product, a large product, each as the forward
// stores it (x·Wᵀ), and the first as its two gradients (dy·W, dyᵀ·x).
func BenchmarkGemmBF16(b *testing.B) {
	for _, s := range []struct {
		m, n, k        int
		transA, transB bool
	}{
		{1024, 512, 2048, false, true}, {1024, 2048, 512, false, true}, {64, 2048, 1024, false, true},
		{64, 1024, 2048, false, true}, {4096, 1024, 1024, false, true},
		{1024, 2048, 512, false, false}, {512, 2048, 1024, true, false},
	} {
		m, n, k := s.m, s.n, s.k
		r := rand.New(rand.NewPCG(3, 4))
		x, w, y := randVec(r, m*k), randVec(r, n*k), make([]float32, m*n)
		lda, ldb := k, k
		if s.transA {
			lda = m
		}
		if !s.transB {
			ldb = n
		}
		form := map[[2]bool]string{{false, true}: "A·Bᵀ", {false, false}: "A·B", {true, false}: "Aᵀ·B"}[[2]bool{s.transA, s.transB}]
		for _, p := range []struct {
			name string
			gemm func(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int)
		}{{"fp32", Gemm[float32]}, {"bf16", GemmBF16}} {
			b.Run(fmt.Sprintf("%dx%dx%d/%s/%s", m, n, k, form, p.name), func(b *testing.B) {
				for b.Loop() {
					p.gemm(s.transA, s.transB, m, n, k, 1, x, lda, w, ldb, 0, y, n)
				}
				b.ReportMetric(2*float64(m)*float64(n)*float64(k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}
