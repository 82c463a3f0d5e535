package exec

import "math"

// The q/k norms over the whole projections under tensor parallelism (compiler/step's
// qknorm_tp.go): each rank holds its heads' columns of a token's projection and of the
// scale, and the statistics of a row are sums over every rank's columns, all-reduced over
// tp between the kernels here. width is the whole row's width (the scale's local width
// times tp); the arithmetic is QKNorm's and QKNormBwd's.

// QKNormSumSq writes each row's sum of squares of x's columns into ss (len(x)/len(ss)
// columns a row).
func (k *Kernels) QKNormSumSq(x, ss []float32) {
	d := len(x) / len(ss)
	parallel(len(ss), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			var s float64
			for _, v := range x[i*d : (i+1)*d] {
				s += float64(v) * float64(v)
			}
			ss[i] = float32(s)
		}
	})
}

// QKNormSpan writes y = x/rms·w for each row of len(w) columns of x, the rms over a
// row of width columns whose squares sum to ss (every rank's), and each row's 1/rms into
// rstd.
func (k *Kernels) QKNormSpan(x, w, ss, y, rstd []float32, width int) {
	d := len(w)
	eps := k.d.NormEps
	parallel(len(x)/d, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			xi, yi := x[i*d:(i+1)*d], y[i*d:(i+1)*d]
			r := 1 / math.Sqrt(float64(ss[i])/float64(width)+eps)
			rstd[i] = float32(r)
			for j, v := range xi {
				yi[j] = float32(float64(v)*r) * w[j]
			}
		}
	})
}

// QKNormBwdDot writes each row's Σ (dy ⊙ w) ⊙ x̂ over this rank's columns into dot, x̂
// = x·rstd.
func (k *Kernels) QKNormBwdDot(dy, x, w, rstd, dot []float32) {
	d := len(w)
	parallel(len(x)/d, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			xi, dyi, r := x[i*d:(i+1)*d], dy[i*d:(i+1)*d], float64(rstd[i])
			var s float64
			for j, g := range dyi {
				s += float64(g*w[j]) * float64(float32(float64(xi[j])*r))
			}
			dot[i] = float32(s)
		}
	})
}

// QKNormSpanBwd is QKNormSpan's backward given dy and each row's Σ g ⊙ x̂ over the
// whole width (dot, every rank's): dx = rstd·(g − x̂·dot/width) with g = dy ⊙ w, and the
// local scale's gradient dw = Σ dy ⊙ x̂ over the rows; each written or added to.
func (k *Kernels) QKNormSpanBwd(dy, x, w, rstd, dot, dx, dw []float32, width int, accX, accW bool) {
	d := len(w)
	n := len(x) / d
	if !accW {
		clear(dw)
	}
	if !accX {
		clear(dx)
	}
	qkNormScaleGrad(dy, x, rstd, dw)
	parallel(n, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			xi, dyi, dxi := x[i*d:(i+1)*d], dy[i*d:(i+1)*d], dx[i*d:(i+1)*d]
			r := float64(rstd[i])
			mean := float64(dot[i]) / float64(width)
			for j, g := range dyi {
				xh := float64(float32(float64(xi[j]) * r))
				dxi[j] += float32(r * (float64(g*w[j]) - xh*mean))
			}
		}
	})
}
