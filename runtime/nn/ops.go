package nn

import (
	"math"
	"runtime"
	"sync"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/runtime/internal/vec"
)

// parallel runs f over [0, n) split into one contiguous chunk per core. Work items must be
// independent; chunks are contiguous so each worker streams through memory.
func parallel(n int, f func(worker, lo, hi int)) {
	workers := min(runtime.GOMAXPROCS(0), n)
	if workers <= 1 {
		if n > 0 {
			f(0, 0, n)
		}
		return
	}
	var wg sync.WaitGroup
	chunk := (n + workers - 1) / workers
	for w := 1; w*chunk < n; w++ {
		lo, hi := w*chunk, min((w+1)*chunk, n)
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(w, lo, hi)
		}()
	}
	// The first chunk on the calling goroutine: one goroutine fewer to start and wake, and a
	// stack that has already grown (a new goroutine's grows again on every call).
	f(0, 0, min(chunk, n))
	wg.Wait()
}

// linear computes y = x·Wᵀ (+ bias) for x [n, in] and W [out, in]; accumulate adds to y.
func linear[F Float](y, x []F, n int, w *tensor[F], bias *tensor[F], accumulate bool) {
	out, in := w.shape[0], w.shape[1]
	beta := F(0)
	if accumulate {
		beta = 1
	}
	if w.q != nil {
		linearQuant(y, x, n, w, accumulate)
	} else if w.bf16 || !linearSmall(y, x, n, w, accumulate) { // a few rows (generation): stream W once
		weightGemm(w, false, true, n, out, in, 1, x, in, w.w, in, beta, y, out)
	}
	if bias != nil {
		for i := 0; i < n; i++ {
			row := y[i*out : (i+1)*out]
			for j, b := range bias.w {
				row[j] += b
			}
		}
	}
}

// linearBack accumulates dW += dyᵀ·x (and dbias) and computes dx = dy·W (added to dx when
// accumulate, else overwriting it). dx may be nil when the input needs no gradient.
func linearBack[F Float](dx, dy, x []F, n int, w *tensor[F], bias *tensor[F], accumulate bool) {
	out, in := w.shape[0], w.shape[1]
	weightGemm(w, true, false, out, in, n, 1, dy, out, x, in, 1, w.g, in)
	if bias != nil {
		for i := 0; i < n; i++ {
			for j, g := range dy[i*out : (i+1)*out] {
				bias.g[j] += g
			}
		}
	}
	if dx != nil {
		beta := F(0)
		if accumulate {
			beta = 1
		}
		weightGemm(w, false, false, n, in, out, 1, dy, out, w.w, in, beta, dx, in)
	}
}

// normFwd normalises each row of x ([n, d]) into y: RMSNorm when bias is nil and layer is
// false, LayerNorm otherwise. It keeps x̂ and 1/σ for the backward pass.
func normFwd[F Float](y, xhat, rstd, x []F, n, d int, w, bias *tensor[F], layer bool, eps float64) {
	if n == 1 { // a decoding step's row: no closure to allocate
		normRows(y, xhat, rstd, x, 0, 1, d, w, bias, layer, eps)
		return
	}
	parallel(n, func(_, lo, hi int) { normRows(y, xhat, rstd, x, lo, hi, d, w, bias, layer, eps) })
}

// normRows is normFwd on rows [lo, hi).
func normRows[F Float](y, xhat, rstd, x []F, lo, hi, d int, w, bias *tensor[F], layer bool, eps float64) {
	if normRowsVec(y, xhat, rstd, x, lo, hi, d, w, bias, layer, eps) {
		return
	}
	for i := lo; i < hi; i++ {
		xi, xh, yi := x[i*d:(i+1)*d], xhat[i*d:(i+1)*d], y[i*d:(i+1)*d]
		var mean float64
		if layer {
			for _, v := range xi {
				mean += float64(v)
			}
			mean /= float64(d)
		}
		var ss float64
		for _, v := range xi {
			c := float64(v) - mean
			ss += c * c
		}
		r := 1 / math.Sqrt(ss/float64(d)+eps)
		rstd[i] = F(r)
		for j, v := range xi {
			h := F((float64(v) - mean) * r)
			xh[j] = h
			yi[j] = h * w.w[j]
			if bias != nil {
				yi[j] += bias.w[j]
			}
		}
	}
}

// normBack adds to dx the gradient through the norm given dy, and accumulates dw, dbias.
func normBack[F Float](dx, dy, xhat, rstd []F, n, d int, w, bias *tensor[F], layer bool) {
	// Parameter gradients are summed over rows serially: a parallel sum would need a
	// per-worker copy, and this is a tiny share of a step.
	for i := 0; i < n; i++ {
		dyi, hi := dy[i*d:(i+1)*d], xhat[i*d:(i+1)*d]
		for j, g := range dyi {
			w.g[j] += g * hi[j]
		}
		if bias != nil {
			for j, g := range dyi {
				bias.g[j] += g
			}
		}
	}
	parallel(n, func(_, lo, hi int) {
		for i := lo; i < hi; i++ {
			dyi, xh, dxi := dy[i*d:(i+1)*d], xhat[i*d:(i+1)*d], dx[i*d:(i+1)*d]
			var sumG, sumGX float64
			for j, g := range dyi {
				gh := float64(g * w.w[j])
				sumG += gh
				sumGX += gh * float64(xh[j])
			}
			meanG, meanGX := sumG/float64(d), sumGX/float64(d)
			if !layer {
				meanG = 0
			}
			r := float64(rstd[i])
			for j, g := range dyi {
				gh := float64(g * w.w[j])
				dxi[j] += F(r * (gh - meanG - float64(xh[j])*meanGX))
			}
		}
	})
}

const invSqrt2 = 0.70710678118654752440

// activate computes h = act(a) (non-gated) or h = act(a)·u (gated) elementwise.
func activate[F Float](act program.Activation, h, a, u []F) {
	if act == program.SiLU || act == program.SwiGLU {
		if a32, ok := any(a).([]float32); ok {
			u32, _ := any(u).([]float32)
			siluForwardFast(any(h).([]float32), a32, u32)
			return
		}
	}
	switch act {
	case program.ReLU:
		for i, v := range a {
			h[i] = max(v, 0)
		}
	case program.GELU, program.GeGLU:
		for i, v := range a {
			x := float64(v)
			h[i] = F(0.5 * x * (1 + math.Erf(x*invSqrt2)))
		}
	case program.SiLU, program.SwiGLU:
		for i, v := range a {
			h[i] = v / (1 + expF(-v))
		}
	}
	if act.Gated() {
		for i := range h {
			h[i] *= u[i]
		}
	}
}

// activateBack turns dh into da (and du when gated), overwriting them.
func activateBack[F Float](act program.Activation, da, du, dh, a, u []F) {
	if act == program.SiLU || act == program.SwiGLU {
		if a32, ok := any(a).([]float32); ok {
			u32, _ := any(u).([]float32)
			du32, _ := any(du).([]float32)
			siluBackwardFast(any(da).([]float32), du32, any(dh).([]float32), a32, u32)
			return
		}
	}
	for i, v := range a {
		x := float64(v)
		var f, df float64
		switch act {
		case program.ReLU:
			if x > 0 {
				f, df = x, 1
			}
		case program.GELU, program.GeGLU:
			cdf := 0.5 * (1 + math.Erf(x*invSqrt2))
			f = x * cdf
			df = cdf + x*math.Exp(-0.5*x*x)/math.Sqrt(2*math.Pi)
		case program.SiLU, program.SwiGLU:
			sg := float64(1 / (1 + expF(-v)))
			f = x * sg
			df = sg * (1 + x*(1-sg))
		}
		// u[i] is read before du[i] is written so that du may alias u (and da alias a).
		g := float64(dh[i])
		if act.Gated() {
			ui := float64(u[i])
			du[i] = F(g * f)
			g *= ui
		}
		da[i] = F(g * df)
	}
}

// ropeTable holds cos and sin of position·θ_i for i < head_dim/2 (Hugging Face's
// rotate-half layout: dimension i pairs with i + head_dim/2).
type ropeTable[F Float] struct {
	half     int
	cos, sin []F // [positions, half]
}

func newRope[F Float](positions, headDim int, base float64) *ropeTable[F] {
	return newScaledRope[F](&program.Model{RopeBase: base}, positions, headDim)
}

// newScaledRope is the table of m's rotary positions, with its rope scaling
// (program.Model.RopeTable): the frequency is computed in float32 first, as Hugging Face
// does, so both sides rotate by the same angles.
func newScaledRope[F Float](m *program.Model, positions, headDim int) *ropeTable[F] {
	half := headDim / 2
	r := &ropeTable[F]{half: half, cos: make([]F, positions*half), sin: make([]F, positions*half)}
	cos, sin := m.RopeTable(headDim, 0, positions)
	for i := range cos {
		r.cos[i], r.sin[i] = F(cos[i]), F(sin[i])
	}
	return r
}

// rotate applies the rotation of position pos to every head of one row x ([heads·headDim]);
// inverse applies the transposed rotation, which is the backward pass.
func (r *ropeTable[F]) rotate(x []F, heads, pos int, inverse bool) {
	cs, sn := r.cos[pos*r.half:(pos+1)*r.half], r.sin[pos*r.half:(pos+1)*r.half]
	for h := 0; h < heads; h++ {
		v := x[h*2*r.half : (h+1)*2*r.half]
		for i := 0; i < r.half; i++ {
			c, s := cs[i], sn[i]
			if inverse {
				s = -s
			}
			a, b := v[i], v[i+r.half]
			v[i] = a*c - b*s
			v[i+r.half] = b*c + a*s
		}
	}
}

// softmaxRow overwrites x[lo:hi] with its softmax and zeroes the rest of x.
func softmaxRow[F Float](x []F, lo, hi int) {
	softmaxRowSink(x, lo, hi, false, 0)
}

// softmaxVecMin is the row length below which a cgo call costs more than the eight-lane
// kernel saves over the Go loop.
const softmaxVecMin = 16

// softmaxCausal applies softmaxRowSink to the T causal attention rows of one head's
// [T, T] scores p: row i covers validRange(i, window) and the rest is zeroed. For float32
// it is one call of the eight-lane kernel (vec.SoftmaxRows), which computes the same
// function (exp32's algorithm, the sum in float64) within float32 rounding.
func softmaxCausal[F Float](p []F, T, window int, hasSink bool, sink F) {
	if p32, ok := any(p).([]float32); ok && vec.SoftmaxRows(p32, T, T, T, true, window, hasSink, float32(sink)) {
		return
	}
	for i := 0; i < T; i++ {
		lo, hi := validRange(i, window)
		softmaxRowSink(p[i*T:(i+1)*T], lo, hi, hasSink, sink)
	}
}

// softmaxRowSink is softmaxRow with, when hasSink, one more logit in the denominator
// whose probability is discarded (a learned attention sink).
func softmaxRowSink[F Float](x []F, lo, hi int, hasSink bool, sink F) {
	if x32, ok := any(x).([]float32); ok && hi-lo >= softmaxVecMin &&
		vec.SoftmaxRows(x32[lo:hi], 1, hi-lo, hi-lo, false, 0, hasSink, float32(sink)) {
		clear(x[:lo])
		clear(x[hi:])
		return
	}
	mx := x[lo]
	for _, v := range x[lo:hi] {
		mx = max(mx, v)
	}
	var s float64
	if hasSink {
		mx = max(mx, sink)
		s = float64(expF(sink - mx))
	}
	for j := lo; j < hi; j++ {
		e := expF(x[j] - mx)
		x[j] = e
		s += float64(e)
	}
	inv := F(1 / s)
	for j := lo; j < hi; j++ {
		x[j] *= inv
	}
	clear(x[:lo])
	clear(x[hi:])
}

func dot[F Float](a, b []F) F {
	var s F
	for i, v := range a {
		s += v * b[i]
	}
	return s
}

func axpy[F Float](y []F, alpha F, x []F) {
	for i, v := range x {
		y[i] += alpha * v
	}
}
