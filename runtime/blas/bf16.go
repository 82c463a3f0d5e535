package blas

import (
	"math"
	"runtime"
	"sync"
)

// BF16Compute reports whether GemmBF16 multiplies in bfloat16 on this CPU (its
// AVX512-BF16 instructions); where it does not, GemmBF16 rounds its operands to bfloat16
// and multiplies them in float32, which gives the same products (a product of two
// bfloat16 values is exact in float32) summed in another order.
func BF16Compute() bool { return haveBF16Kernel }

// RoundBF16 rounds x to the nearest bfloat16 value, ties to even, returned as the float32
// of the same value (its low 16 bits zero). NaN stays NaN and ±Inf stays ±Inf.
func RoundBF16(x float32) float32 {
	return math.Float32frombits(roundBF16Bits(math.Float32bits(x)) << 16)
}

// roundBF16Bits is the bfloat16 bits of the float32 with bits u (the kernel's moec_bf16).
func roundBF16Bits(u uint32) uint32 {
	if u&0x7fffffff > 0x7f800000 {
		return u>>16 | 0x40 // a quiet NaN
	}
	u += 0x7fff + (u>>16)&1
	return u >> 16
}

// gemmBF16Serial is GemmBF16 on the calling goroutine only: its products too small to
// split, or a CPU without the kernel.
func gemmBF16Serial(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if m == 0 || n == 0 {
		return
	}
	checkOperands(transA, transB, m, n, k, a, lda, b, ldb, c, ldc)
	if k == 0 || !haveBF16Kernel {
		gemmBF16Rounded(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
		return
	}
	gemmBF16Part(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

// GemmBF16 computes C = alpha·bf16(op(A))·bf16(op(B)) + beta·C with Gemm's arguments for
// float32 operands: every value of A and B is rounded to bfloat16 (RoundBF16) as the
// product reads it, the sums are float32, and C stays float32. It is the mixed-precision
// training product: float32 master weights and activations, rounded at the product's
// inputs. On a CPU with AVX512-BF16 it runs this package's own kernel (vdpbf16ps over B
// packed once per product into bfloat16 pairs); elsewhere it rounds copies of the
// operands and multiplies them with Gemm (BF16Compute).
func GemmBF16(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if m == 0 || n == 0 {
		return
	}
	checkOperands(transA, transB, m, n, k, a, lda, b, ldb, c, ldc)
	workers := runtime.GOMAXPROCS(0)
	if k == 0 || !haveBF16Kernel || workers <= 1 || m*n*k < parallelMinWork {
		gemmBF16Serial(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
		return
	}
	// Each worker packs all of one operand for its part: split the columns of C (each
	// packs all of A and its own panels of B) when B is the larger, else the rows (each
	// packs all of B), so the packing done twice is of the smaller operand.
	var wg sync.WaitGroup
	if n >= m {
		panels := (n + bf16Panel - 1) / bf16Panel
		per := (panels + workers - 1) / workers * bf16Panel
		for j0 := 0; j0 < n; j0 += per {
			j1 := min(j0+per, n)
			var bPart []float32
			if transB {
				bPart = b[j0*ldb:] // rows of an n×k matrix
			} else {
				bPart = b[j0:] // columns of a k×n matrix
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				gemmBF16Part(transA, transB, m, j1-j0, k, alpha, a, lda, bPart, ldb, beta, c[j0:], ldc)
			}()
		}
	} else {
		per := ((m+workers-1)/workers + bf16Rows - 1) / bf16Rows * bf16Rows
		for i0 := 0; i0 < m; i0 += per {
			i1 := min(i0+per, m)
			var aPart []float32
			if transA {
				aPart = a[i0:] // columns of a k×m matrix
			} else {
				aPart = a[i0*lda:] // rows of an m×k matrix
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				gemmBF16Part(transA, transB, i1-i0, n, k, alpha, aPart, lda, b, ldb, beta, c[i0*ldc:], ldc)
			}()
		}
	}
	wg.Wait()
}

// gemmBF16Part runs one part of a product (k > 0) on the kernel, or rounded in float32
// where the kernel declines.
func gemmBF16Part(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if !gemmBF16Kernel(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) {
		gemmBF16Rounded(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
	}
}

// gemmBF16Rounded is GemmBF16 without the kernel: it rounds dense copies of op(A)'s and
// op(B)'s stored values to bfloat16 and multiplies them with Gemm in float32.
func gemmBF16Rounded(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	ar, ald := roundedCopy(a, transA, m, k, lda)
	br, bld := roundedCopy(b, transB, k, n, ldb)
	Gemm(transA, transB, m, n, k, alpha, ar, ald, br, bld, beta, c, ldc)
}

// roundedCopy copies the stored matrix of op(X) (rows×cols before transposition) densely,
// each value rounded to bfloat16, and returns it with its leading dimension.
func roundedCopy(x []float32, trans bool, rows, cols, ld int) ([]float32, int) {
	if trans {
		rows, cols = cols, rows
	}
	out := make([]float32, rows*cols)
	for i := 0; i < rows; i++ {
		src, dst := x[i*ld:i*ld+cols], out[i*cols:(i+1)*cols]
		for j, v := range src {
			dst[j] = RoundBF16(v)
		}
	}
	return out, max(cols, 1)
}
