package exec

// The attention kernels: rotary positions, scores, talking-heads mixing, the causal
// softmax, weights times values, and attention-weight sharing.

import (
	"math"

	"github.com/moec-dev/moec/runtime/blas"
)

// Rotary rotates q and k of every token in place (rotate-half layout); inverse is the
// backward pass.
func (kn *Kernels) Rotary(q, k []float32, inverse bool) {
	half, T, dh := kn.d.Dh/2, kn.batch.SeqLen, kn.d.Dh
	rot := func(x []float32) {
		n := len(x) / (kn.batch.MicroBatch * T)
		for t := 0; t < kn.batch.MicroBatch*T; t++ {
			pos := t % T
			cs, sn := kn.cos[pos*half:(pos+1)*half], kn.sin[pos*half:(pos+1)*half]
			row := x[t*n : (t+1)*n]
			for h := 0; h < n/dh; h++ {
				v := row[h*dh : (h+1)*dh]
				for i := 0; i < half; i++ {
					c, s := float32(cs[i]), float32(sn[i])
					if inverse {
						s = -s
					}
					a, b := v[i], v[i+half]
					v[i] = a*c - b*s
					v[i+half] = b*c + a*s
				}
			}
		}
	}
	rot(q)
	rot(k)
}

// attnDims are the local heads, key/value heads and token count of an attention op.
func (kn *Kernels) attnDims(q, k []float32) (B, T, H, KV, Dh int) {
	B, T, Dh = kn.batch.MicroBatch, kn.batch.SeqLen, kn.d.Dh
	H = len(q) / (B * T * Dh)
	KV = len(k) / (B * T * Dh)
	return
}

// Scores: s = q·kᵀ/√Dh per head (grouped-query heads share their group's keys), the
// causal part only (blocks of query rows against the keys up to the block's last), zero
// above it.
func (kn *Kernels) Scores(q, k, s []float32) {
	B, T, H, KV, Dh := kn.attnDims(q, k)
	scale := float32(1 / math.Sqrt(float64(Dh)))
	qd, kd, tt := H*Dh, KV*Dh, T*T
	eachHeadGroup(B, H, KV, func(b, h, g int) {
		qh, kh, sh := q[b*T*qd+h*Dh:], k[b*T*kd+g*Dh:], s[(b*H+h)*tt:(b*H+h+1)*tt]
		for i0 := 0; i0 < T; i0 += causalBlock {
			i1 := min(i0+causalBlock, T)
			blas.Gemm(false, true, i1-i0, i1, Dh, scale, qh[i0*qd:], qd, kh, kd, 0, sh[i0*T:], T)
			for i := i0; i < i1; i++ {
				clear(sh[i*T+i1 : (i+1)*T])
			}
		}
	})
}

// ScoresBwd: dq (+)= ds·k/√Dh and dk (+)= dsᵀ·q/√Dh over the causal part of ds (zero
// above the diagonal: the softmax's gradient there), each written or added to.
func (kn *Kernels) ScoresBwd(ds, q, k, dq, dk []float32, accQ, accK bool) {
	B, T, H, KV, Dh := kn.attnDims(q, k)
	scale := float32(1 / math.Sqrt(float64(Dh)))
	qd, kd, tt := H*Dh, KV*Dh, T*T
	if !accK {
		clear(dk)
	}
	bq := beta(accQ)
	eachHeadGroup(B, H, KV, func(b, h, g int) {
		dsh := ds[(b*H+h)*tt : (b*H+h+1)*tt]
		qh, kh, dqh, dkh := q[b*T*qd+h*Dh:], k[b*T*kd+g*Dh:], dq[b*T*qd+h*Dh:], dk[b*T*kd+g*Dh:]
		for i0 := 0; i0 < T; i0 += causalBlock {
			i1 := min(i0+causalBlock, T)
			// Query rows [i0, i1) against keys [0, i1); key rows [i0, i1) from queries [i0, T).
			blas.Gemm(false, false, i1-i0, Dh, i1, scale, dsh[i0*T:], T, kh, kd, bq, dqh[i0*qd:], qd)
			blas.Gemm(true, false, i1-i0, Dh, T-i0, scale, dsh[i0*T+i0:], T, qh[i0*qd:], qd, 1, dkh[i0*kd:], kd)
		}
	})
}

// HeadMix mixes the H heads' [T, T] maps: y[b] = w·x[b] over heads.
func (kn *Kernels) HeadMix(x, w, y []float32, H int) {
	B, T := kn.batch.MicroBatch, kn.batch.SeqLen
	tt := T * T
	for b := 0; b < B; b++ {
		blas.Gemm(false, false, H, tt, H, 1, w, H, x[b*H*tt:], tt, 0, y[b*H*tt:], tt)
	}
}

// HeadMixBwd: dx and the mixing matrix's gradient dw, each written or added to.
func (kn *Kernels) HeadMixBwd(dy, x, w, dx, dw []float32, H int, accX, accW bool) {
	B, T := kn.batch.MicroBatch, kn.batch.SeqLen
	tt := T * T
	if !accW {
		clear(dw)
	}
	bx := beta(accX)
	for b := 0; b < B; b++ {
		blas.Gemm(false, true, H, H, tt, 1, dy[b*H*tt:], tt, x[b*H*tt:], tt, 1, dw, H)
		blas.Gemm(true, false, H, tt, H, 1, w, H, dy[b*H*tt:], tt, bx, dx[b*H*tt:], tt)
	}
}

// Softmax: each causal row's softmax, the rest of the row zero.
func (kn *Kernels) Softmax(s, p []float32) {
	T := kn.batch.SeqLen
	parallel(len(s)/T, func(r0, r1 int) {
		if !softmaxCausalVec(s, p, T, r0, r1) {
			softmaxRows(s, p, T, r0, r1)
		}
	})
}

// softmaxRows is the causal softmax of rows [r0, r1).
func softmaxRows(s, p []float32, T, r0, r1 int) {
	for r := r0; r < r1; r++ {
		i := r % T
		src, dst := s[r*T:(r+1)*T], p[r*T:(r+1)*T]
		mx := src[0]
		for _, v := range src[:i+1] {
			mx = max(mx, v)
		}
		var sum float64
		for j := 0; j <= i; j++ {
			ex := math.Exp(float64(src[j] - mx))
			dst[j] = float32(ex)
			sum += ex
		}
		inv := 1 / sum
		for j := 0; j <= i; j++ {
			dst[j] = float32(float64(dst[j]) * inv)
		}
		clear(dst[i+1:])
	}
}

// SoftmaxBwd: dS = P ⊙ (dP − rowsum(dP ⊙ P)), written or added to.
func (kn *Kernels) SoftmaxBwd(dp, p, ds []float32, acc bool) {
	T := kn.batch.SeqLen
	parallel(len(p)/T, func(r0, r1 int) {
		if !softmaxBwdVec(dp, p, ds, T, acc, r0, r1) {
			softmaxBwdRows(dp, p, ds, T, acc, r0, r1)
		}
	})
}

func softmaxBwdRows(dp, p, ds []float32, T int, acc bool, r0, r1 int) {
	for r := r0; r < r1; r++ {
		i := r % T
		pr, gr, dr := p[r*T:(r+1)*T], dp[r*T:(r+1)*T], ds[r*T:(r+1)*T]
		var sum float64 // in double, as the vector kernel (vec.SoftmaxCausalBackward)
		for j := 0; j <= i; j++ {
			sum += float64(pr[j] * gr[j])
		}
		s := float32(sum)
		for j := 0; j <= i; j++ {
			v := pr[j] * (gr[j] - s)
			if acc {
				dr[j] += v
			} else {
				dr[j] = v
			}
		}
		if !acc {
			clear(dr[i+1:])
		}
	}
}

// AttnAV: o = p·v per head (each head's weights times its group's values), p being zero
// above the diagonal: blocks of rows against the values up to the block's last.
func (kn *Kernels) AttnAV(p, v, o []float32) {
	B, T, Dh := kn.batch.MicroBatch, kn.batch.SeqLen, kn.d.Dh
	H := len(o) / (B * T * Dh)
	KV := len(v) / (B * T * Dh)
	qd, kd, tt := H*Dh, KV*Dh, T*T
	eachHeadGroup(B, H, KV, func(b, h, g int) {
		ph, vh, oh := p[(b*H+h)*tt:], v[b*T*kd+g*Dh:], o[b*T*qd+h*Dh:]
		for i0 := 0; i0 < T; i0 += causalBlock {
			i1 := min(i0+causalBlock, T)
			blas.Gemm(false, false, i1-i0, Dh, i1, 1, ph[i0*T:], T, vh, kd, 0, oh[i0*qd:], qd)
		}
	})
}

// AttnAVBwd: the weights' gradient dp (+)= do·vᵀ on the causal part (zero above it) and
// the values' dv (+)= pᵀ·do, each written or added to.
func (kn *Kernels) AttnAVBwd(do, p, v, dp, dv []float32, accP, accV bool) {
	B, T, Dh := kn.batch.MicroBatch, kn.batch.SeqLen, kn.d.Dh
	H := len(do) / (B * T * Dh)
	KV := len(v) / (B * T * Dh)
	qd, kd, tt := H*Dh, KV*Dh, T*T
	if !accV {
		clear(dv)
	}
	bp := beta(accP)
	eachHeadGroup(B, H, KV, func(b, h, g int) {
		doh, ph, vh, dvh := do[b*T*qd+h*Dh:], p[(b*H+h)*tt:], v[b*T*kd+g*Dh:], dv[b*T*kd+g*Dh:]
		dph := dp[(b*H+h)*tt : (b*H+h+1)*tt]
		for i0 := 0; i0 < T; i0 += causalBlock {
			i1 := min(i0+causalBlock, T)
			blas.Gemm(false, true, i1-i0, i1, Dh, 1, doh[i0*qd:], qd, vh, kd, bp, dph[i0*T:], T)
			if !accP {
				for i := i0; i < i1; i++ {
					clear(dph[i*T+i1 : (i+1)*T])
				}
			}
			// Value rows [i0, i1) from the weights of queries [i0, T).
			blas.Gemm(true, false, i1-i0, Dh, T-i0, 1, ph[i0*T+i0:], T, doh[i0*qd:], qd, 1, dvh[i0*kd:], kd)
		}
	})
}

// ShareSelect copies the layer's own attention weights when it recomputes them this step,
// else the layer below's (share_weights).
func ShareSelect(own, below, out []float32, recompute bool) {
	if recompute {
		copy(out, own)
	} else {
		copy(out, below)
	}
}

// ShareSelectBwd sends the selected weights' gradient to the weights that were used (dOwn
// when the layer recomputed them, else dBelow) and leaves the other's, zeroing it when the
// op writes it first.
func ShareSelectBwd(dsel, dOwn, dBelow []float32, recompute, accOwn, accBelow bool) {
	dst, other, accDst, accOther := dOwn, dBelow, accOwn, accBelow
	if !recompute {
		dst, other, accDst, accOther = dBelow, dOwn, accBelow, accOwn
	}
	if accDst {
		for i, v := range dsel {
			dst[i] += v
		}
	} else {
		copy(dst, dsel)
	}
	if !accOther {
		clear(other)
	}
}
