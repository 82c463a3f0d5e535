package exec

import "math"

// The q/k norms of Qwen3 and OLMoE (attention.qk_norm): an RMSNorm with a learned scale
// of the projected queries or keys, whatever norm the model's layers use, over pieces of
// the scale's width (head_dim: each head; qk_norm = full: each token's whole projection).
// And the clamp of the projections of DBRX and OLMo (attention.clip_qkv).

// QKNorm writes y = x/rms(x)·w for each piece of len(w) values of x, and each piece's
// 1/rms into rstd.
func (k *Kernels) QKNorm(x, w, y, rstd []float32) {
	d := len(w)
	eps := k.d.NormEps
	parallel(len(x)/d, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			xi, yi := x[i*d:(i+1)*d], y[i*d:(i+1)*d]
			var ss float64
			for _, v := range xi {
				ss += float64(v) * float64(v)
			}
			r := 1 / math.Sqrt(ss/float64(d)+eps)
			rstd[i] = float32(r)
			for j, v := range xi {
				yi[j] = float32(float64(v)*r) * w[j]
			}
		}
	})
}

// QKNormBwd is QKNorm's backward given dy: dx = rstd·(g − x̂·mean(g ⊙ x̂)) with g = dy ⊙ w
// and x̂ = x·rstd, and the scale's gradient dw = Σ dy ⊙ x̂ over the pieces (in piece
// order); each written or added to.
func (k *Kernels) QKNormBwd(dy, x, w, rstd, dx, dw []float32, accX, accW bool) {
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
			var sumGX float64
			for j, g := range dyi {
				sumGX += float64(g*w[j]) * float64(float32(float64(xi[j])*r))
			}
			meanGX := sumGX / float64(d)
			for j, g := range dyi {
				xh := float64(float32(float64(xi[j]) * r))
				dxi[j] += float32(r * (float64(g*w[j]) - xh*meanGX))
			}
		}
	})
}

// Clip writes x clamped to [−limit, limit] into y.
func Clip(x, y []float32, limit float32) {
	for i, v := range x {
		y[i] = min(max(v, -limit), limit)
	}
}

// ClipBwd is Clip's backward: dx gets dy where x was within [−limit, limit] and zero where
// the clamp cut; written or added to.
func ClipBwd(dy, x, dx []float32, limit float32, acc bool) {
	for i, v := range x {
		g := dy[i]
		if v < -limit || v > limit {
			g = 0
		}
		if acc {
			dx[i] += g
		} else {
			dx[i] = g
		}
	}
}

// qkNormScaleGrad adds a q/k norm's scale gradient Σ dy ⊙ x̂ (x̂ = x·rstd) over the rows to
// dw, in row order, each core a band of columns (the serial sum, bit for bit).
func qkNormScaleGrad(dy, x, rstd, dw []float32) {
	d := len(dw)
	n := len(x) / d
	columnBands(d, n*d, func(j0, j1 int) {
		for i := 0; i < n; i++ {
			xi, dyi, r := x[i*d+j0:i*d+j1], dy[i*d+j0:i*d+j1], float64(rstd[i])
			dwb := dw[j0:j1]
			for j, g := range dyi {
				dwb[j] += g * float32(float64(xi[j])*r)
			}
		}
	})
}
