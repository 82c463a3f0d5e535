//go:build !cgo || !amd64 || noopenblas

package exec

// This build has no vector kernels: they compute nothing and the Go loops do all.

func actFwdVec(kind int, h, a, u []float32) int { return 0 }

func actBwdVec(kind int, da, du, dh, a, u []float32, accA, accU bool) int { return 0 }

func softmaxCausalVec(s, p []float32, T, r0, r1 int) bool { return false }

func expSumVec(x []float32, shift, scale float32, out []float32) (float64, bool) { return 0, false }

func normFwdVec(x, w, b, h, rstd []float32, r0, r1 int, eps float64, layer bool) bool { return false }

func normBwdDxVec(dh, x, w, rstd, dx []float32, r0, r1 int, layer, acc bool) bool { return false }

func normBwdDwVec(dh, x, rstd []float32, means []float64, dw, db []float32, n, j0, j1 int) bool {
	return false
}

func sumSquaresVec(x []float32) (float64, bool) { return 0, false }

func combineVec(back []float32, idx, slot []int32, gates, y []float32, t0, t1, K, slots, D int) bool {
	return false
}

func combineBwdVec(dy, back []float32, idx, slot []int32, gates, dback, dgates []float32, t0, t1, K, slots, D int, acc bool) bool {
	return false
}

func permuteBwdVec(ds []float32, idx, slot []int32, dh []float32, t0, t1, K, slots, D int) bool {
	return false
}

func softmaxBwdVec(dp, p, ds []float32, T int, acc bool, r0, r1 int) bool { return false }
