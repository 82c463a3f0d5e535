package blas

import (
	"math"
	"runtime"
	"sync"
	"testing"
)

// threadingShapes are 1024³ and the benchmark models' large products (moebench): per
// expert about 512 of the 4096 routed rows, gate+up fused, down; the q/k/v projection of
// 2048 tokens; at d_model 256 and 1024.
func threadingShapes() []struct {
	name    string
	m, n, k int
	transB  bool
} {
	return []struct {
		name    string
		m, n, k int
		transB  bool
	}{
		{"1024³", 1024, 1024, 1024, false},
		{"small_w13_512x1024x256", 512, 1024, 256, true},
		{"small_w2_512x256x512", 512, 256, 512, true},
		{"small_qkv_2048x768x256", 2048, 768, 256, true},
		{"large_w13_512x4096x1024", 512, 4096, 1024, true},
		{"large_w2_512x1024x2048", 512, 1024, 2048, true},
		{"large_qkv_2048x3072x1024", 2048, 3072, 1024, true},
	}
}

// BenchmarkGemmThreading compares Gemm's split (GOMAXPROCS goroutines, each a one-thread
// OpenBLAS call on a band of rows) with one OpenBLAS call threaded by OpenBLAS itself, on
// the same operands, alternating the two per shape; GFLOP/s is reported per run.
func BenchmarkGemmThreading(b *testing.B) {
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
		ldb := s.n
		if s.transB {
			ldb = s.k
		}
		flops := 2 * float64(s.m) * float64(s.n) * float64(s.k)
		b.Run(s.name+"/split", func(b *testing.B) {
			for range b.N {
				Gemm(false, s.transB, s.m, s.n, s.k, 1, a32, s.k, b32, ldb, 0, c32, s.n)
			}
			b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
		b.Run(s.name+"/split-columns", func(b *testing.B) {
			for range b.N {
				gemmSplitColumns(s.transB, s.m, s.n, s.k, a32, s.k, b32, ldb, c32, s.n)
			}
			b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
		b.Run(s.name+"/openblas-threads", func(b *testing.B) {
			for range b.N {
				if !sgemmLibraryThreaded(s.transB, s.m, s.n, s.k, a32, s.k, b32, ldb, c32, s.n) {
					b.Skip("no OpenBLAS in this build")
				}
			}
			b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
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

// TestLibraryThreadedMatchesGemm: the threaded library call computes Gemm's product.
func TestLibraryThreadedMatchesGemm(t *testing.T) {
	const m, n, k = 37, 29, 41
	a := make([]float32, m*k)
	bt := make([]float32, n*k)
	for i := range a {
		a[i] = float32(i%11)/7 - 0.5
	}
	for i := range bt {
		bt[i] = float32(i%13)/5 - 1
	}
	want, got := make([]float32, m*n), make([]float32, m*n)
	Gemm(false, true, m, n, k, 1, a, k, bt, k, 0, want, n)
	gemmSplitColumns(true, m, n, k, a, k, bt, k, got, n)
	for i := range want {
		if math.Abs(float64(want[i]-got[i])) > 1e-4*(1+math.Abs(float64(want[i]))) {
			t.Fatalf("element %d: column split %v, Gemm %v", i, got[i], want[i])
		}
	}
	if !sgemmLibraryThreaded(true, m, n, k, a, k, bt, k, got, n) {
		t.Skip("no OpenBLAS in this build")
	}
	for i := range want {
		if math.Abs(float64(want[i]-got[i])) > 1e-4*(1+math.Abs(float64(want[i]))) {
			t.Fatalf("element %d: threaded %v, Gemm %v", i, got[i], want[i])
		}
	}
}
