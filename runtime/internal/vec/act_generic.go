//go:build !cgo || !amd64 || noopenblas

package vec

// Activation kinds of ActForward and ActBackward.
const (
	ActGELU = 0 // x·Φ(x), erf by Abramowitz and Stegun 7.1.26
	ActSiLU = 1 // x·σ(x)
)

// ActForward declines in this build: the caller's Go loop computes every element.
func ActForward(kind int, h, a, u []float32) int { return 0 }

// GELUForward declines in this build: the caller's Go loop computes every element.
func GELUForward(h, a, u []float32) int { return 0 }

// ActBackward declines in this build.
func ActBackward(kind int, da, du, dh, a, u []float32, accA, accU bool) int { return 0 }

// SoftmaxCausal declines.
func SoftmaxCausal(s, p []float32, T, r0, r1 int) bool { return false }

// ExpSumScaled declines.
func ExpSumScaled(x []float32, shift, scale float32, out []float32) (float64, bool) { return 0, false }

// NormBackwardInput declines.
func NormBackwardInput(dh, x, w, rstd, dx []float32, r0, r1 int, layer, acc bool) bool { return false }

// NormBackwardParams declines.
func NormBackwardParams(dh, x, rstd []float32, means []float64, dw, db []float32, n, j0, j1 int) bool {
	return false
}

// SumSquares declines.
func SumSquares(x []float32) (float64, bool) { return 0, false }

// Combine declines.
func Combine(back []float32, idx, slot []int32, gates, y []float32, t0, t1, K, slots, D int) bool {
	return false
}

// CombineBackward declines.
func CombineBackward(dy, back []float32, idx, slot []int32, gates, dback, dgates []float32, t0, t1, K, slots, D int, acc bool) bool {
	return false
}

// PermuteBackward declines.
func PermuteBackward(ds []float32, idx, slot []int32, dh []float32, t0, t1, K, slots, D int) bool {
	return false
}

// SoftmaxCausalBackward declines.
func SoftmaxCausalBackward(dp, p, ds []float32, T int, acc bool, r0, r1 int) bool { return false }
