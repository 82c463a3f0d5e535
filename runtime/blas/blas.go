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

// Gemm computes C = alpha·op(A)·op(B) + beta·C where op(A) is m×k, op(B) is k×n and C is
// m×n, all row-major. transA means A is stored k×m (op(A) = Aᵀ); likewise transB.
// lda, ldb, ldc are the row strides of the stored matrices. It panics on operands too short
// for the shapes, which is always a bug in the caller, never a user mistake.
func Gemm[F Float](transA, transB bool, m, n, k int, alpha F, a []F, lda int, b []F, ldb int, beta F, c []F, ldc int) {
	if m == 0 || n == 0 {
		return
	}
	checkLen("A", a, transA, m, k, lda)
	checkLen("B", b, transB, k, n, ldb)
	checkLen("C", c, false, m, n, ldc)
	workers := runtime.GOMAXPROCS(0)
	if workers > m {
		workers = m
	}
	if workers <= 1 || m*n*k < parallelMinWork {
		gemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
		return
	}
	// Split the rows of C: each worker owns a disjoint band, so no synchronisation is needed
	// beyond the final wait.
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
// contiguous rows of B and C (or a dot product of two contiguous rows for A·Bᵀ), which is
// what lets the compiler keep it in registers.
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
			for p := 0; p < k; p++ {
				var av F
				if transA {
					av = a[p*lda+i]
				} else {
					av = a[i*lda+p]
				}
				av *= alpha
				if av == 0 {
					continue
				}
				bp := b[p*ldb : p*ldb+n]
				for j, bv := range bp {
					ci[j] += av * bv
				}
			}
		case !transA:
			ai := a[i*lda : i*lda+k]
			for j := 0; j < n; j++ {
				bj := b[j*ldb : j*ldb+k]
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
