package exec

import "github.com/moec-dev/moec/runtime/internal/vec"

// The executor's kernels on vector lanes, in runtime/internal/vec with the rest of moec's
// CPU vector C. Each declines (returns 0 or false) where the build or CPU has no kernel,
// and the caller's Go loop does the work.

// vecMin is the length below which a cgo call costs more than the lanes save.
const vecMin = 64

// normVecMin is the row width below which the Go loops run the norms.
const normVecMin = 16

// actFwdVec computes the first n elements of actFwd32 (n: len(a) rounded down to eight
// lanes, or 0 where there are no kernels) and returns n.
func actFwdVec(kind int, h, a, u []float32) int {
	if len(a)&^7 < vecMin {
		return 0
	}
	return vec.ActForward(kind, h, a, u)
}

// actBwdVec computes the first n elements of actBwd32 and returns n.
func actBwdVec(kind int, da, du, dh, a, u []float32, accA, accU bool) int {
	if len(a)&^7 < vecMin {
		return 0
	}
	return vec.ActBackward(kind, da, du, dh, a, u, accA, accU)
}

// softmaxCausalVec is softmaxRows on vector lanes; false where there are no kernels.
func softmaxCausalVec(s, p []float32, T, r0, r1 int) bool {
	return vec.SoftmaxCausal(s, p, T, r0, r1)
}

// expSumVec writes out[j] = e^(x[j]−shift)·scale (out nil: nothing) and returns
// Σ e^(x[j]−shift); ok is false where there are no kernels.
func expSumVec(x []float32, shift, scale float32, out []float32) (sum float64, ok bool) {
	return vec.ExpSumScaled(x, shift, scale, out)
}

// normFwdVec is Norm's rows [r0, r1) on vector lanes; false where there are no kernels.
func normFwdVec(x, w, b, h, rstd []float32, r0, r1 int, eps float64, layer bool) bool {
	d := len(w)
	if !vec.Available() || d < normVecMin {
		return false
	}
	if r0 >= r1 {
		return true
	}
	return vec.NormRows(h[r0*d:r1*d], nil, rstd[r0:r1], x[r0*d:r1*d], r1-r0, d, w, b, layer, eps)
}

// normBwdDxVec is NormBwd's input gradient of rows [r0, r1) on vector lanes.
func normBwdDxVec(dh, x, w, rstd, dx []float32, r0, r1 int, layer, acc bool) bool {
	if len(w) < normVecMin {
		return false
	}
	return vec.NormBackwardInput(dh, x, w, rstd, dx, r0, r1, layer, acc)
}

// normBwdDwVec is NormBwd's parameter gradients over the columns [j0, j1).
func normBwdDwVec(dh, x, rstd []float32, means []float64, dw, db []float32, n, j0, j1 int) bool {
	if len(dw) < normVecMin {
		return false
	}
	return vec.NormBackwardParams(dh, x, rstd, means, dw, db, n, j0, j1)
}

// sumSquaresVec is Σ v² in double on vector lanes; ok is false where there are no kernels.
func sumSquaresVec(x []float32) (float64, bool) { return vec.SumSquares(x) }

// combineVec is Combine over tokens [t0, t1) on vector lanes; false where there are no
// kernels.
func combineVec(back []float32, idx, slot []int32, gates, y []float32, t0, t1, K, slots, D int) bool {
	return vec.Combine(back, idx, slot, gates, y, t0, t1, K, slots, D)
}

// combineBwdVec is CombineBwd's per-assignment work over tokens [t0, t1).
func combineBwdVec(dy, back []float32, idx, slot []int32, gates, dback, dgates []float32, t0, t1, K, slots, D int, acc bool) bool {
	return vec.CombineBackward(dy, back, idx, slot, gates, dback, dgates, t0, t1, K, slots, D, acc)
}

// permuteBwdVec adds the slots' gradients of tokens [t0, t1) to their rows of dh.
func permuteBwdVec(ds []float32, idx, slot []int32, dh []float32, t0, t1, K, slots, D int) bool {
	return vec.PermuteBackward(ds, idx, slot, dh, t0, t1, K, slots, D)
}

// softmaxBwdVec is softmaxBwdRows on vector lanes.
func softmaxBwdVec(dp, p, ds []float32, T int, acc bool, r0, r1 int) bool {
	return vec.SoftmaxCausalBackward(dp, p, ds, T, acc, r0, r1)
}

// rowsVec reports whether the row kernels run (a vector CPU and rows of at least eight
// lanes).
func rowsVec(D int) bool { return vec.Available() && D >= 8 }
