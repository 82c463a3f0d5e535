//go:build !cgo || !amd64 || noopenblas

package nn

// linearSmall has no vector kernel in this build; linear uses sgemm for every shape.
func linearSmall[F Float](y, x []F, n int, w *tensor[F], accumulate bool) bool { return false }
