//go:build !cgo || !amd64 || noopenblas

package exec

// This build has no vector kernels: they compute nothing and the Go loops do all.

func actFwdVec(kind int, h, a, u []float32) int { return 0 }

func actBwdVec(kind int, da, du, dh, a, u []float32, accA, accU bool) int { return 0 }

func softmaxCausalVec(s, p []float32, T, r0, r1 int) bool { return false }

func expSumVec(x []float32, shift, scale float32, out []float32) (float64, bool) { return 0, false }
