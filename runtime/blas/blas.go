package blas

import (
	"fmt"
	"runtime"
	"sync"
)

// Float is the element type of every operand.
type Float interface{ ~float32 | ~float64 }

// parallelMinWork is the m·n·k below which splitting a product over goroutines costs more
// than it saves (goroutine start plus cache warm-up dominate a product this small).
const parallelMinWork = 1 << 18

// libraryThreadedMinWork is the m·n·k from which a product that runs alone is one call
// threaded by the library (gemmLibraryThreaded) instead of Gemm's row split. Below it the
// two were even or the split won, the library paying its workers' restart (about 0.2 ms);
// from here up the library's shared packing was even or ahead (BenchmarkGemmThreading,
// 2-core AMD EPYC).
const libraryThreadedMinWork = 1 << 28

// Gemm computes C = alpha·op(A)·op(B) + beta·C where op(A) is m×k, op(B) is k×n and C is
// m×n, all row-major. transA means A is stored k×m (op(A) = Aᵀ); likewise transB.
// lda, ldb, ldc are the row strides of the stored matrices. It panics on operands too short
// for the shapes, which is always a bug in the caller, never a user mistake.
func Gemm[F Float](transA, transB bool, m, n, k int, alpha F, a []F, lda int, b []F, ldb int, beta F, c []F, ldc int) {
	if m == 0 || n == 0 {
		return
	}
	checkOperands(transA, transB, m, n, k, a, lda, b, ldb, c, ldc)
	if !transA && transB && m <= smallRows && k > 0 && gemmSmall(m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) {
		return
	}
	workers := runtime.GOMAXPROCS(0)
	if workers > m {
		workers = m
	}
	if workers <= 1 || m*n*k < parallelMinWork {
		gemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
		return
	}
	if m*n*k >= libraryThreadedMinWork && gemmLibraryThreaded(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) {
		return
	}
	gemmSplitRows(workers, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

// gemmSplitRows is Gemm over workers goroutines, each owning a disjoint band of C's rows,
// so no synchronisation is needed beyond the final wait.
func gemmSplitRows[F Float](workers int, transA, transB bool, m, n, k int, alpha F, a []F, lda int, b []F, ldb int, beta F, c []F, ldc int) {
	var wg sync.WaitGroup
	rows := (m + workers - 1) / workers
	for r0 := 0; r0 < m; r0 += rows {
		r1 := min(r0+rows, m)
		var aPart []F
		if transA {
			aPart = a[r0:] // column offset into a k×m matrix
		} else {
			aPart = a[r0*lda:]
		}
		cPart := c[r0*ldc:]
		wg.Add(1)
		go func() {
			defer wg.Done()
			gemm(transA, transB, r1-r0, n, k, alpha, aPart, lda, b, ldb, beta, cPart, ldc)
		}()
	}
	wg.Wait()
}

// checkOperands panics unless A, B and C are long enough for the shapes and strides.
func checkOperands[F Float](transA, transB bool, m, n, k int, a []F, lda int, b []F, ldb int, c []F, ldc int) {
	checkLen("A", a, transA, m, k, lda)
	checkLen("B", b, transB, k, n, ldb)
	checkLen("C", c, false, m, n, ldc)
}

// smallRows is the most rows of C that gemmSmall takes. Below it sgemm spends more time
// copying B into its packed layout than multiplying (the profile of generation at batch 16
// showed OpenBLAS's copy routine at twice its kernel's time); above it the packing pays
// for itself. BenchmarkSmallRows measures the crossover.
const smallRows = 24

// gemmSmall computes C = alpha·A·Bᵀ + beta·C for float32 operands with m ≤ smallRows rows,
// streaming B once instead of packing it, and reports whether it did. Large products are
// split by columns of C (rows of B), so each goroutine reads its own part of B.
func gemmSmall[F Float](m, n, k int, alpha F, a []F, lda int, b []F, ldb int, beta F, c []F, ldc int) bool {
	a32, ok := any(a).([]float32)
	if !ok || !haveSmall {
		return false
	}
	b32, c32 := any(b).([]float32), any(c).([]float32)
	al, be := float32(alpha), float32(beta)
	workers := min(runtime.GOMAXPROCS(0), n/8)
	if workers <= 1 || m*n*k < parallelMinWork {
		return gemmSmallNT(m, k, al, a32, lda, b32, ldb, be, c32, ldc, 0, n)
	}
	var wg sync.WaitGroup
	cols := (n + workers - 1) / workers
	for j0 := cols; j0 < n; j0 += cols {
		wg.Add(1)
		go func() {
			defer wg.Done()
			gemmSmallNT(m, k, al, a32, lda, b32, ldb, be, c32, ldc, j0, min(j0+cols, n))
		}()
	}
	gemmSmallNT(m, k, al, a32, lda, b32, ldb, be, c32, ldc, 0, cols)
	wg.Wait()
	return true
}

// checkLen panics when a stored matrix of rows×cols (before transposition) does not fit.
func checkLen[F Float](name string, x []F, trans bool, rows, cols, ld int) {
	if trans {
		rows, cols = cols, rows
	}
	if rows == 0 || cols == 0 {
		return
	}
	if ld < cols {
		panic(fmt.Sprintf("blas: %s leading dimension %d < %d columns", name, ld, cols))
	}
	if need := (rows-1)*ld + cols; len(x) < need {
		panic(fmt.Sprintf("blas: %s has %d elements, %dx%d with stride %d needs %d", name, len(x), rows, cols, ld, need))
	}
}

// gemmGo is the portable kernel. The loop orders keep the innermost loop running along
// contiguous rows (of B and C, or of A and B for A·Bᵀ, four rows of B at a time so each
// element of A feeds four multiply-adds), with slices re-cut to the loop length so the
// compiler drops the bounds checks.
func gemmGo[F Float](transA, transB bool, m, n, k int, alpha F, a []F, lda int, b []F, ldb int, beta F, c []F, ldc int) {
	for i := 0; i < m; i++ {
		ci := c[i*ldc : i*ldc+n]
		if beta == 0 {
			clear(ci)
		} else if beta != 1 {
			for j := range ci {
				ci[j] *= beta
			}
		}
		switch {
		case !transB:
			// Four rows of B per pass: one load and store of C per four multiply-adds.
			aAt := func(p int) F {
				if transA {
					return alpha * a[p*lda+i]
				}
				return alpha * a[i*lda+p]
			}
			p := 0
			for ; p+4 <= k; p += 4 {
				a0, a1, a2, a3 := aAt(p), aAt(p+1), aAt(p+2), aAt(p+3)
				b0 := b[p*ldb : p*ldb+n]
				b1 := b[(p+1)*ldb : (p+1)*ldb+n]
				b2 := b[(p+2)*ldb : (p+2)*ldb+n]
				b3 := b[(p+3)*ldb : (p+3)*ldb+n]
				b0, b1, b2, b3 = b0[:len(ci)], b1[:len(ci)], b2[:len(ci)], b3[:len(ci)]
				for j := range ci {
					ci[j] += a0*b0[j] + a1*b1[j] + a2*b2[j] + a3*b3[j]
				}
			}
			for ; p < k; p++ {
				av := aAt(p)
				bp := b[p*ldb : p*ldb+n]
				bp = bp[:len(ci)]
				for j, bv := range bp {
					ci[j] += av * bv
				}
			}
		case !transA:
			ai := a[i*lda : i*lda+k]
			j := 0
			for ; j+4 <= n; j += 4 {
				b0 := b[j*ldb : j*ldb+k]
				b1 := b[(j+1)*ldb : (j+1)*ldb+k]
				b2 := b[(j+2)*ldb : (j+2)*ldb+k]
				b3 := b[(j+3)*ldb : (j+3)*ldb+k]
				b0, b1, b2, b3 = b0[:len(ai)], b1[:len(ai)], b2[:len(ai)], b3[:len(ai)]
				var s0, s1, s2, s3 F
				for p, av := range ai {
					s0 += av * b0[p]
					s1 += av * b1[p]
					s2 += av * b2[p]
					s3 += av * b3[p]
				}
				ci[j] += alpha * s0
				ci[j+1] += alpha * s1
				ci[j+2] += alpha * s2
				ci[j+3] += alpha * s3
			}
			for ; j < n; j++ {
				bj := b[j*ldb : j*ldb+k]
				bj = bj[:len(ai)]
				var s F
				for p, av := range ai {
					s += av * bj[p]
				}
				ci[j] += alpha * s
			}
		default:
			for j := 0; j < n; j++ {
				var s F
				for p := 0; p < k; p++ {
					s += a[p*lda+i] * b[j*ldb+p]
				}
				ci[j] += alpha * s
			}
		}
	}
}
