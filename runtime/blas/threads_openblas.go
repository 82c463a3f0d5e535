//go:build cgo && !noopenblas

package blas

/*
#include <cblas.h>
*/
import "C"

import (
	"runtime"
	"unsafe"
)

// sgemmLibraryThreaded computes C = A·op(B) for float32 row-major operands as one
// cblas_sgemm call threaded by OpenBLAS itself over GOMAXPROCS threads, then pins OpenBLAS
// back to one thread (Gemm's setting). BenchmarkGemmThreading measures it against Gemm's
// own split; it is not safe to call while another goroutine runs a product.
func sgemmLibraryThreaded(transB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int) bool {
	C.openblas_set_num_threads(C.int(runtime.GOMAXPROCS(0)))
	defer C.openblas_set_num_threads(1)
	C.cblas_sgemm(C.CblasRowMajor, C.CblasNoTrans, trans(transB), C.blasint(m), C.blasint(n), C.blasint(k),
		1, (*C.float)(unsafe.Pointer(&a[0])), C.blasint(lda),
		(*C.float)(unsafe.Pointer(&b[0])), C.blasint(ldb),
		0, (*C.float)(unsafe.Pointer(&c[0])), C.blasint(ldc))
	return true
}
