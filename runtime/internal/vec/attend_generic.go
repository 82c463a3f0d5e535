//go:build !cgo || !amd64 || noopenblas

package vec

// ScoresHeads declines.
func ScoresHeads(s, q, k []float32, heads, perKV, span, dh, ldk int, scale float32) bool {
	return false
}

// NormRows declines.
func NormRows(y, xhat, rstd, x []float32, rows, d int, w, b []float32, layer bool, eps float64) bool {
	return false
}
