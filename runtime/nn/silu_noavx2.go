//go:build !cgo || !amd64 || noopenblas

package nn

// Without cgo (or off amd64) the SiLU kernels are the Go loops of silu32.go.

func siluForwardFast(h, a, u []float32) { siluForward32(h, a, u) }

func siluBackwardFast(da, du, dh, a, u []float32) { siluBackward32(da, du, dh, a, u) }
