package nn

import "github.com/moec-dev/moec/runtime/internal/vec"

// normRowsVec is normRows on float32 rows [lo, hi) through vec.NormRows (the same float64
// arithmetic on four double lanes: as the scalar loop, a decoding step's norms were 6% of
// an int8 token of the tiny HunYuan), and reports whether it did.
func normRowsVec[F Float](y, xhat, rstd, x []F, lo, hi, d int, w, bias *tensor[F], layer bool, eps float64) bool {
	y32, ok := any(y).([]float32)
	if !ok || hi <= lo {
		return false
	}
	var b []float32
	if bias != nil {
		b = any(bias.w).([]float32)
	}
	r := any(rstd).([]float32)[lo:hi]
	x32, h32 := any(x).([]float32)[lo*d:hi*d], any(xhat).([]float32)[lo*d:hi*d]
	return vec.NormRows(y32[lo*d:hi*d], h32, r, x32, hi-lo, d, any(w.w).([]float32), b, layer, eps)
}
