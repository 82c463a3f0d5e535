package exec

// The kernels of the attention variants of Llama 4 and gpt-oss (compiler/step's
// attention.go): the softmax over a sliding window or a chunk, with learned sink logits,
// and its backward with the sinks' gradient; the unscaled RMS norms of the rotated queries
// and keys; the queries' temperature by position.

import (
	"math"

	"github.com/moec-dev/moec/compiler/step"
)

// SoftmaxMasked: each row's softmax over the keys mask gives its query, the rest of the
// row zero; with sinks (one logit per local head, else nil) one more term per head in the
// denominator, whose probability is dropped. The causal mask without sinks is Softmax.
func (kn *Kernels) SoftmaxMasked(s, sinks, p []float32, mask step.AttnMask) {
	if mask.Causal() && sinks == nil {
		kn.Softmax(s, p)
		return
	}
	T := kn.batch.SeqLen
	H := max(len(sinks), 1)
	parallel(len(s)/T, func(r0, r1 int) {
		for r := r0; r < r1; r++ {
			i := r % T
			lo, hi := mask.Keys(i)
			src, dst := s[r*T:(r+1)*T], p[r*T:(r+1)*T]
			mx := src[lo]
			for _, v := range src[lo:hi] {
				mx = max(mx, v)
			}
			var sum float64
			if sinks != nil {
				sink := sinks[(r/T)%H]
				mx = max(mx, sink)
				sum = math.Exp(float64(sink - mx))
			}
			for j := lo; j < hi; j++ {
				ex := math.Exp(float64(src[j] - mx))
				dst[j] = float32(ex)
				sum += ex
			}
			inv := 1 / sum
			for j := lo; j < hi; j++ {
				dst[j] = float32(float64(dst[j]) * inv)
			}
			clear(dst[:lo])
			clear(dst[hi:])
		}
	})
}

// SoftmaxBwdSinks is SoftmaxBwd (the weights are zero outside any mask, and so is their
// scores' gradient) with, when dsinks is not nil, the sink logits' gradient written or
// added to: each row gives its head −p_sink·Σ dP ⊙ P, where p_sink = 1 − Σ P.
func (kn *Kernels) SoftmaxBwdSinks(dp, p, ds, dsinks []float32, accS, accSink bool) {
	kn.SoftmaxBwd(dp, p, ds, accS)
	if dsinks == nil {
		return
	}
	T, H := kn.batch.SeqLen, len(dsinks)
	B := len(p) / (H * T * T)
	parallel(H, func(h0, h1 int) {
		for h := h0; h < h1; h++ {
			var g float64
			for b := 0; b < B; b++ {
				for i := 0; i < T; i++ {
					r := ((b*H+h)*T + i) * T
					var s, ps float64
					for j := 0; j <= i; j++ {
						s += float64(p[r+j]) * float64(dp[r+j])
						ps += float64(p[r+j])
					}
					g -= (1 - ps) * s
				}
			}
			if accSink {
				dsinks[h] += float32(g)
			} else {
				dsinks[h] = float32(g)
			}
		}
	})
}

// QKL2Norm writes y = x/rms(x) for each dh-wide piece of x (a head's query or key), with
// the model's norm epsilon and no scale, and keeps each piece's 1/rms in rstd.
func (kn *Kernels) QKL2Norm(x, y, rstd []float32, dh int) {
	eps := kn.d.NormEps
	parallel(len(rstd), func(r0, r1 int) {
		for r := r0; r < r1; r++ {
			v, out := x[r*dh:(r+1)*dh], y[r*dh:(r+1)*dh]
			var ss float64
			for _, e := range v {
				ss += float64(e) * float64(e)
			}
			s := 1 / math.Sqrt(ss/float64(dh)+eps)
			rstd[r] = float32(s)
			for j, e := range v {
				out[j] = float32(float64(e) * s)
			}
		}
	})
}

// QKL2NormBwd: dx (+)= rstd·(dy − y·mean(dy ⊙ y)) per dh-wide piece, y being QKL2Norm's
// output.
func QKL2NormBwd(dy, y, rstd, dx []float32, dh int, acc bool) {
	parallel(len(rstd), func(r0, r1 int) {
		for r := r0; r < r1; r++ {
			g, v, out := dy[r*dh:(r+1)*dh], y[r*dh:(r+1)*dh], dx[r*dh:(r+1)*dh]
			var m float64
			for j := range g {
				m += float64(g[j]) * float64(v[j])
			}
			m /= float64(dh)
			s := float64(rstd[r])
			for j := range g {
				d := float32(s * (float64(g[j]) - float64(v[j])*m))
				if acc {
					out[j] += d
				} else {
					out[j] = d
				}
			}
		}
	})
}

// QueryScale multiplies each token's queries in place by t's factor at the token's
// position: its index in its sequence, or with pos (a decoding step: one token per
// sequence) pos[i] for row i. Its backward is the same scaling of the gradient.
func (kn *Kernels) QueryScale(q []float32, pos []int32, t step.QueryTemperature) {
	rows := kn.batch.MicroBatch * kn.batch.SeqLen
	if pos != nil {
		rows = len(pos)
	}
	w := len(q) / rows
	for r := 0; r < rows; r++ {
		at := r % kn.batch.SeqLen
		if pos != nil {
			at = int(pos[r])
		}
		f := t.Factor(at)
		for j := range q[r*w : (r+1)*w] {
			q[r*w+j] *= f
		}
	}
}

// softmaxSinkInPlace replaces a row by its softmax with one more logit, sink, in the
// denominator (the sum in float64).
func softmaxSinkInPlace(row []float32, sink float32) {
	mx := sink
	for _, v := range row {
		mx = max(mx, v)
	}
	sum := math.Exp(float64(sink - mx))
	for j, v := range row {
		ex := math.Exp(float64(v - mx))
		row[j] = float32(ex)
		sum += ex
	}
	inv := 1 / sum
	for j := range row {
		row[j] = float32(float64(row[j]) * inv)
	}
}
