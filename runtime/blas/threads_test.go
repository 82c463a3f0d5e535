package blas

import (
	"fmt"
	"math"
	"runtime"
	"sync"
	"testing"
)

// threadingShapes are 1024³ and the benchmark models' large products (moebench): per
// expert about 512 of the 4096 routed rows, gate+up fused, down; the q/k/v projection and
// a d_model² projection of 2048 tokens; at d_model 256 and 1024; and the weight gradient
// of the large one (Aᵀ·B).
func threadingShapes() []struct {
	name           string
	m, n, k        int
	transA, transB bool
} {
	return []struct {
		name           string
		m, n, k        int
		transA, transB bool
	}{
		{"1024³", 1024, 1024, 1024, false, false},
		{"small_w13_512x1024x256", 512, 1024, 256, false, true},
		{"small_w2_512x256x512", 512, 256, 512, false, true},
		{"small_qkv_2048x768x256", 2048, 768, 256, false, true},
		{"small_proj_2048x256x256", 2048, 256, 256, false, true},
		{"large_w13_512x4096x1024", 512, 4096, 1024, false, true},
		{"large_w2_512x1024x2048", 512, 1024, 2048, false, true},
		{"large_qkv_2048x3072x1024", 2048, 3072, 1024, false, true},
		{"large_proj_2048x1024x1024", 2048, 1024, 1024, false, true},
		{"large_proj_dw_1024x1024x2048", 1024, 1024, 2048, true, false},
	}
}

// BenchmarkGemmThreading compares the ways a product can use the cores, on the same
// operands, alternating per shape (GFLOP/s per run): Gemm's row split (GOMAXPROCS
// goroutines, each a one-thread OpenBLAS call on a band of rows), the split by columns, one
// OpenBLAS call threaded by the library itself (gemmLibraryThreaded, its workers stopped
// after the call), and Gemm, which picks between the first and the third.
func BenchmarkGemmThreading(b *testing.B) {
	workers := runtime.GOMAXPROCS(0)
	for _, s := range threadingShapes() {
		a32 := make([]float32, s.m*s.k)
		b32 := make([]float32, s.k*s.n)
		c32 := make([]float32, s.m*s.n)
		for i := range a32 {
			a32[i] = float32(i%7) - 3
		}
		for i := range b32 {
			b32[i] = float32(i%5) - 2
		}
		lda, ldb := s.k, s.n
		if s.transA {
			lda = s.m
		}
		if s.transB {
			ldb = s.k
		}
		flops := 2 * float64(s.m) * float64(s.n) * float64(s.k)
		run := func(name string, product func()) {
			b.Run(s.name+"/"+name, func(b *testing.B) {
				for range b.N {
					product()
				}
				b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
		run("split", func() {
			gemmSplitRows(workers, s.transA, s.transB, s.m, s.n, s.k, 1, a32, lda, b32, ldb, 0, c32, s.n)
		})
		if !s.transA {
			run("split-columns", func() { gemmSplitColumns(s.transB, s.m, s.n, s.k, a32, lda, b32, ldb, c32, s.n) })
		}
		if libraryThreads() {
			run("library-threads", func() {
				gemmLibraryThreaded(s.transA, s.transB, s.m, s.n, s.k, float32(1), a32, lda, b32, ldb, 0, c32, s.n)
			})
		}
		run("gemm", func() { Gemm(s.transA, s.transB, s.m, s.n, s.k, 1, a32, lda, b32, ldb, 0, c32, s.n) })
	}
}

// gemmSplitColumns is Gemm's split turned the other way: each goroutine owns a band of
// C's columns, so it packs only its part of B (and all of A).
func gemmSplitColumns(transB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int) {
	workers := runtime.GOMAXPROCS(0)
	cols := (n + workers - 1) / workers
	var wg sync.WaitGroup
	for j0 := 0; j0 < n; j0 += cols {
		j1 := min(j0+cols, n)
		bPart := b[j0:]
		if transB {
			bPart = b[j0*ldb:]
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			gemm(false, transB, m, j1-j0, k, 1, a, lda, bPart, ldb, 0, c[j0:], ldc)
		}()
	}
	wg.Wait()
}

// randomOperands fills a, b and c with small values that differ from element to element.
func randomOperands[F Float](a, b, c []F) {
	for i := range a {
		a[i] = F(i%11)/7 - 0.5
	}
	for i := range b {
		b[i] = F(i%13)/5 - 1
	}
	for i := range c {
		c[i] = F(i%3) - 1
	}
}

// TestLibraryThreadedMatchesReference: the product threaded by the library computes what
// the portable kernel does, in every transposition, with alpha and beta, in float32 and
// float64; the column split does too.
func TestLibraryThreadedMatchesReference(t *testing.T) {
	if !libraryThreads() {
		t.Skip("this build's BLAS has no threads moec can stop (not OpenBLAS's pthreads build)")
	}
	const m, n, k = 67, 45, 83
	for _, tr := range [][2]bool{{false, false}, {false, true}, {true, false}, {true, true}} {
		t.Run(fmt.Sprintf("transA=%v,transB=%v", tr[0], tr[1]), func(t *testing.T) {
			lda, ldb := k+3, n+2
			if tr[0] {
				lda = m + 1
			}
			if tr[1] {
				ldb = k + 5
			}
			a, b := make([]float32, 100*100), make([]float32, 100*100)
			want, got := make([]float32, m*(n+4)), make([]float32, m*(n+4))
			randomOperands(a, b, want)
			copy(got, want)
			gemmGo(tr[0], tr[1], m, n, k, 0.75, a, lda, b, ldb, 0.5, want, n+4)
			if !gemmLibraryThreaded(tr[0], tr[1], m, n, k, float32(0.75), a, lda, b, ldb, 0.5, got, n+4) {
				t.Fatal("the threaded product did not run with nothing else multiplying")
			}
			for i := range want {
				if math.Abs(float64(want[i]-got[i])) > 1e-4*(1+math.Abs(float64(want[i]))) {
					t.Fatalf("element %d: threaded %v, reference %v", i, got[i], want[i])
				}
			}
			a64, b64 := make([]float64, len(a)), make([]float64, len(b))
			want64, got64 := make([]float64, len(want)), make([]float64, len(want))
			randomOperands(a64, b64, want64)
			copy(got64, want64)
			gemmGo(tr[0], tr[1], m, n, k, 0.75, a64, lda, b64, ldb, 0.5, want64, n+4)
			if !gemmLibraryThreaded(tr[0], tr[1], m, n, k, 0.75, a64, lda, b64, ldb, 0.5, got64, n+4) {
				t.Fatal("the threaded float64 product did not run with nothing else multiplying")
			}
			for i := range want64 {
				if math.Abs(want64[i]-got64[i]) > 1e-12*(1+math.Abs(want64[i])) {
					t.Fatalf("float64 element %d: threaded %v, reference %v", i, got64[i], want64[i])
				}
			}
		})
	}
	want, got := make([]float32, m*n), make([]float32, m*n)
	a, bt := make([]float32, m*k), make([]float32, n*k)
	randomOperands(a, bt, nil)
	Gemm(false, true, m, n, k, 1, a, k, bt, k, 0, want, n)
	gemmSplitColumns(true, m, n, k, a, k, bt, k, got, n)
	for i := range want {
		if math.Abs(float64(want[i]-got[i])) > 1e-4*(1+math.Abs(float64(want[i]))) {
			t.Fatalf("element %d: column split %v, Gemm %v", i, got[i], want[i])
		}
	}
}
