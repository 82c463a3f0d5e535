//go:build !cgo || noopenblas

package blas

// gemmLibraryThreaded reports false: without OpenBLAS there is no library threading.
func gemmLibraryThreaded[F Float](transA, transB bool, m, n, k int, alpha F, a []F, lda int, b []F, ldb int, beta F, c []F, ldc int) bool {
	return false
}

// libraryThreads reports false: without OpenBLAS there is no library threading.
func libraryThreads() bool { return false }
