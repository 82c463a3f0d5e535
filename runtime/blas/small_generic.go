//go:build !cgo || !amd64 || noopenblas

package blas

// haveSmall: this build has no streaming kernel for products of a few rows.
const haveSmall = false

// gemmSmallNT declines: the caller uses gemm.
func gemmSmallNT(m, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc, j0, j1 int) bool {
	return false
}
