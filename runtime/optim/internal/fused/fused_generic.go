//go:build !cgo || !amd64 || noopenblas

package fused

// Available reports whether this build and CPU run the vector kernel.
func Available() bool { return false }

// updateVec declines: this build has no vector kernel.
func updateVec(w, g, m, v []float32, c Coeffs) bool { return false }
