//go:build !cgo || noopenblas

package blas

// sgemmLibraryThreaded reports false: without OpenBLAS there is no library threading to
// measure.
func sgemmLibraryThreaded(transB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int) bool {
	return false
}
