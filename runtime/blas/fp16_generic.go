//go:build !cgo || !amd64 || noopenblas

package blas

// haveF16C: this build rounds to binary16 in Go.
const haveF16C = false

// roundFP16Row writes dst[i] = RoundFP16(src[i]) (len(dst) ≥ len(src)).
func roundFP16Row(dst, src []float32) { roundFP16Go(dst, src) }
