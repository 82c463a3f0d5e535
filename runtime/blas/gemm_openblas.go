//go:build cgo && !noopenblas

package blas

/*
#cgo LDFLAGS: -lopenblas
#include <cblas.h>
*/
import "C"

import "unsafe"

// Backend names the kernel this build uses.
const Backend = "openblas"

func init() {
	// Gemm parallelises over rows itself; letting OpenBLAS start its own threads as well
	// would put two thread pools on the same cores.
	C.openblas_set_num_threads(1)
}

func trans(t bool) C.enum_CBLAS_TRANSPOSE {
	if t {
		return C.CblasTrans
	}
	return C.CblasNoTrans
}

func gemm[F Float](transA, transB bool, m, n, k int, alpha F, a []F, lda int, b []F, ldb int, beta F, c []F, ldc int) {
	if k == 0 || !isBLASType(alpha) {
		// Named types over float32/float64 are legal for Float but unknown to CBLAS.
		gemmGo(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
		return
	}
	oneThread(func() { cblasGemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) })
}

// isBLASType reports whether F is float32 or float64 itself, the types CBLAS multiplies.
func isBLASType[F Float](x F) bool {
	switch any(x).(type) {
	case float32, float64:
		return true
	}
	return false
}

// cblasGemm is one cblas_sgemm or cblas_dgemm call with k > 0 and F float32 or float64.
func cblasGemm[F Float](transA, transB bool, m, n, k int, alpha F, a []F, lda int, b []F, ldb int, beta F, c []F, ldc int) {
	switch any(alpha).(type) {
	case float32:
		C.cblas_sgemm(C.CblasRowMajor, trans(transA), trans(transB), C.blasint(m), C.blasint(n), C.blasint(k),
			C.float(alpha), (*C.float)(unsafe.Pointer(&a[0])), C.blasint(lda),
			(*C.float)(unsafe.Pointer(&b[0])), C.blasint(ldb),
			C.float(beta), (*C.float)(unsafe.Pointer(&c[0])), C.blasint(ldc))
	case float64:
		C.cblas_dgemm(C.CblasRowMajor, trans(transA), trans(transB), C.blasint(m), C.blasint(n), C.blasint(k),
			C.double(alpha), (*C.double)(unsafe.Pointer(&a[0])), C.blasint(lda),
			(*C.double)(unsafe.Pointer(&b[0])), C.blasint(ldb),
			C.double(beta), (*C.double)(unsafe.Pointer(&c[0])), C.blasint(ldc))
	}
}
