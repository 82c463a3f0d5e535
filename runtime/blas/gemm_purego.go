//go:build !cgo || noopenblas

package blas

// Backend names the kernel this build uses.
const Backend = "go"

func gemm[F Float](transA, transB bool, m, n, k int, alpha F, a []F, lda int, b []F, ldb int, beta F, c []F, ldc int) {
	gemmGo(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}
