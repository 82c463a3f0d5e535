//go:build !cgo || !amd64 || noopenblas

package vec

// This build has no vector kernels: every function declines and callers use Go loops.

// Available reports whether this build and CPU have the vector kernels.
func Available() bool { return false }

// SiLUForward declines.
func SiLUForward(h, a, u []float32) bool { return false }

// SiLUBackward declines.
func SiLUBackward(da, du, dh, a, u []float32) bool { return false }

// RowsDot declines.
func RowsDot(y, x, w []float32, n, out, in, o0, o1 int, accumulate bool) bool { return false }

// SoftmaxRows declines.
func SoftmaxRows(x []float32, rows, n, ld int, causal bool, window int, hasSink bool, sink float32) bool {
	return false
}

// ExpSumRows declines.
func ExpSumRows(x []float32, rows, n, ld int, mx []float32, sum []float64) bool { return false }

// WeightedRows declines.
func WeightedRows(y, p, v []float32, n, ldv int) bool { return false }

// WeightedRowsHeads declines.
func WeightedRowsHeads(y, p, v []float32, heads, perKV, rows, n, ldv, ystride, pstride, vstep int) bool {
	return false
}

// Exp declines.
func Exp(x []float32) bool { return false }
