//go:build !cgo || !amd64 || noopenblas

package blas

// bf16Panel is the column width a split of a bf16 product cuts at.
const bf16Panel = 32

// bf16Rows is the kernel's tile height: a split of the rows of C cuts at multiples of it.
const bf16Rows = 12

// haveBF16Kernel: this build has no bf16 kernel; GemmBF16 rounds and multiplies in float32.
const haveBF16Kernel = false

// gemmBF16Kernel declines: the caller rounds the operands and uses Gemm.
func gemmBF16Kernel(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) bool {
	return false
}
