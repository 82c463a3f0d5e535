//go:build !cgo || !amd64 || noopenblas

package vec

// ScoresHeads declines.
func ScoresHeads(s, q, k []float32, heads, perKV, span, dh, ldk int, scale float32) bool {
	return false
}
