package exec

// Multi-head latent attention's kernels (compiler/step's mla.go): the latents' RMSNorm
// with DeepSeek's epsilon, the split of kv_a_proj_with_mqa's output, the assembly of each
// head's query, key and value (rotary positions on the rope features only, rotate-half as
// runtime/nn) and the causal attention with a query/key head size apart from the values'.

import (
	"math"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/runtime/blas"
)

// mlaScratch is latent attention's working space, grown on first use.
type mlaScratch struct {
	cos, sin []float64 // rope tables [positions, rope/2]
	ds       []float32 // the scores' gradient, [B·H, T, T]
}

// mlaShape is the latent-attention sizes of the model.
func (k *Kernels) mlaShape() step.MLADims {
	a := k.m.Attention
	return step.MLADims{Nope: int(a.QKNopeHeadDim), Rope: int(a.QKRopeHeadDim), V: int(a.VHeadDim)}
}

// mlaRope returns the rope tables of the rope features for T positions.
func (k *Kernels) mlaRope(T int) (cos, sin []float64) {
	rope := int(k.m.Attention.QKRopeHeadDim)
	s := &k.scratch.mla
	if len(s.cos) < T*(rope/2) {
		s.cos, s.sin = k.m.RopeTable(rope, 0, T)
	}
	return s.cos, s.sin
}

// rotateHalf rotates x (one head's rope features) to position pos, or back (inverse).
func rotateHalf(x []float32, cos, sin []float64, pos int, inverse bool) {
	half := len(x) / 2
	cs, sn := cos[pos*half:(pos+1)*half], sin[pos*half:(pos+1)*half]
	for i := 0; i < half; i++ {
		c, s := float32(cs[i]), float32(sn[i])
		if inverse {
			s = -s
		}
		a, b := x[i], x[i+half]
		x[i] = a*c - b*s
		x[i+half] = b*c + a*s
	}
}

// LatentNorm is the RMSNorm of each row of x (its width len(w)) with DeepSeek's epsilon:
// h = x/rms(x)·w, rstd the rows' 1/rms (norm_bwd takes the gradient).
func LatentNorm(x, w, h, rstd []float32) {
	d := len(w)
	parallel(len(x)/d, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			xi, hi := x[i*d:(i+1)*d], h[i*d:(i+1)*d]
			var ss float64
			for _, v := range xi {
				ss += float64(v) * float64(v)
			}
			r := 1 / math.Sqrt(ss/float64(d)+step.LatentNormEps)
			rstd[i] = float32(r)
			for j, v := range xi {
				hi[j] = float32(float64(v)*r) * w[j]
			}
		}
	})
}

// MLASplit copies each of the rows of kva ([latent | k_pe]) into lat and kpe.
func MLASplit(kva, lat, kpe []float32, rows int) {
	rank, rope := len(lat)/rows, len(kpe)/rows
	w := rank + rope
	for t := 0; t < rows; t++ {
		copy(lat[t*rank:(t+1)*rank], kva[t*w:t*w+rank])
		copy(kpe[t*rope:(t+1)*rope], kva[t*w+rank:(t+1)*w])
	}
}

// MLASplitBwd writes (acc: adds) the latent's and the rope key's gradients into dkva.
func MLASplitBwd(dlat, dkpe, dkva []float32, rows int, acc bool) {
	rank, rope := len(dlat)/rows, len(dkpe)/rows
	w := rank + rope
	for t := 0; t < rows; t++ {
		dst := dkva[t*w : (t+1)*w]
		if !acc {
			copy(dst[:rank], dlat[t*rank:(t+1)*rank])
			copy(dst[rank:], dkpe[t*rope:(t+1)*rope])
			continue
		}
		axpy32(dst[:rank], dlat[t*rank:(t+1)*rank])
		axpy32(dst[rank:], dkpe[t*rope:(t+1)*rope])
	}
}

// axpy32 is y += x.
func axpy32(y, x []float32) {
	for i, v := range x {
		y[i] += v
	}
}

// MLAHeads assembles each row's local heads: qh = [q_nope | rope(q_pe)], kh = [k_nope |
// rope(k_pe)] with the shared k_pe, vh the values, from q [n, H·qk], kvb [n, H·(nope+v)]
// and kpe [n, rope]. A row's position is its index in its sequence of T, or with pos (a
// decoding step, one row per sequence) pos[row].
func (k *Kernels) MLAHeads(q, kvb, kpe []float32, pos []int32, qh, kh, vh []float32) {
	md, T := k.mlaShape(), k.batch.SeqLen
	qk, kvw := md.Nope+md.Rope, md.Nope+md.V
	n := len(kpe) / md.Rope
	H := len(q) / (n * qk)
	rotary := k.m.Position == program.Rotary
	var cos, sin []float64
	positions := T
	for _, p := range pos {
		positions = max(positions, int(p)+1)
	}
	if rotary {
		cos, sin = k.mlaRope(positions)
	}
	at := func(t int) int {
		if pos != nil {
			return int(pos[t])
		}
		return t % T
	}
	parallel(n, func(t0, t1 int) {
		for t := t0; t < t1; t++ {
			pe := kpe[t*md.Rope : (t+1)*md.Rope]
			for h := 0; h < H; h++ {
				qo := qh[t*H*qk+h*qk : t*H*qk+(h+1)*qk]
				copy(qo, q[t*H*qk+h*qk:t*H*qk+(h+1)*qk])
				src := kvb[t*H*kvw+h*kvw : t*H*kvw+(h+1)*kvw]
				ko := kh[t*H*qk+h*qk : t*H*qk+(h+1)*qk]
				copy(ko[:md.Nope], src[:md.Nope])
				copy(ko[md.Nope:], pe)
				copy(vh[t*H*md.V+h*md.V:t*H*md.V+(h+1)*md.V], src[md.Nope:])
				if rotary {
					rotateHalf(qo[md.Nope:], cos, sin, at(t), false)
					rotateHalf(ko[md.Nope:], cos, sin, at(t), false)
				}
			}
		}
	})
}

// MLAHeadsBwd takes the heads' gradients to q's, kv_b's and the shared rope key's (summed
// over the heads), rotated back; each output written or added to.
func (k *Kernels) MLAHeadsBwd(dqh, dkh, dvh, dq, dkvb, dkpe []float32, accQ, accKV, accPE bool) {
	md, T := k.mlaShape(), k.batch.SeqLen
	qk, kvw := md.Nope+md.Rope, md.Nope+md.V
	n := len(dkpe) / md.Rope
	H := len(dq) / (n * qk)
	rotary := k.m.Position == program.Rotary
	var cos, sin []float64
	if rotary {
		cos, sin = k.mlaRope(T)
	}
	parallel(n, func(t0, t1 int) {
		var few [64]float32
		buf := few[:0]
		if qk > len(few) {
			buf = make([]float32, qk)
		}
		buf = buf[:qk]
		var fewPE [32]float32
		pe := fewPE[:0]
		if md.Rope > len(fewPE) {
			pe = make([]float32, md.Rope)
		}
		pe = pe[:md.Rope]
		for t := t0; t < t1; t++ {
			clear(pe)
			for h := 0; h < H; h++ {
				g := dqh[t*H*qk+h*qk : t*H*qk+(h+1)*qk]
				dst := dq[t*H*qk+h*qk : t*H*qk+(h+1)*qk]
				copy(buf, g)
				if rotary {
					rotateHalf(buf[md.Nope:], cos, sin, t%T, true)
				}
				if accQ {
					axpy32(dst, buf)
				} else {
					copy(dst, buf)
				}
				gk := dkh[t*H*qk+h*qk : t*H*qk+(h+1)*qk]
				kv := dkvb[t*H*kvw+h*kvw : t*H*kvw+(h+1)*kvw]
				gv := dvh[t*H*md.V+h*md.V : t*H*md.V+(h+1)*md.V]
				if accKV {
					axpy32(kv[:md.Nope], gk[:md.Nope])
					axpy32(kv[md.Nope:], gv)
				} else {
					copy(kv[:md.Nope], gk[:md.Nope])
					copy(kv[md.Nope:], gv)
				}
				axpy32(pe, gk[md.Nope:]) // one shared key: the heads' gradients summed
			}
			if rotary {
				rotateHalf(pe, cos, sin, t%T, true)
			}
			dpe := dkpe[t*md.Rope : (t+1)*md.Rope]
			if accPE {
				axpy32(dpe, pe)
			} else {
				copy(dpe, pe)
			}
		}
	})
}

// MLAAttention is each local head's causal attention: p = softmax(q·kᵀ·scale) over the
// keys mask allows (zero elsewhere), o = p·v; q and k have heads of qk features, v and o of
// the value size.
func (k *Kernels) MLAAttention(q, kk, v, o, p []float32, mask step.AttnMask) {
	md, B, T := k.mlaShape(), k.batch.MicroBatch, k.batch.SeqLen
	qk := md.Nope + md.Rope
	H := len(q) / (B * T * qk)
	qW, vW, tt := H*qk, H*md.V, T*T
	scale := float32(k.m.LatentSoftmaxScale())
	parallel(B*H, func(i0, i1 int) {
		for bh := i0; bh < i1; bh++ {
			b, h := bh/H, bh%H
			ph := p[bh*tt : (bh+1)*tt]
			blas.Gemm(false, true, T, T, qk, scale, q[b*T*qW+h*qk:], qW, kk[b*T*qW+h*qk:], qW, 0, ph, T)
			for i := 0; i < T; i++ {
				lo, hi := mask.Keys(i)
				row := ph[i*T : (i+1)*T]
				mx := float32(math.Inf(-1))
				for _, s := range row[lo:hi] {
					mx = max(mx, s)
				}
				var sum float64
				for j := lo; j < hi; j++ {
					e := math.Exp(float64(row[j] - mx))
					row[j] = float32(e)
					sum += e
				}
				inv := float32(1 / sum)
				for j := lo; j < hi; j++ {
					row[j] *= inv
				}
				clear(row[:lo])
				clear(row[hi:])
			}
			blas.Gemm(false, false, T, md.V, T, 1, ph, T, v[b*T*vW+h*md.V:], vW, 0, o[b*T*vW+h*md.V:], vW)
		}
	})
}

// MLAAttentionBwd: from do, the queries', keys' and values' gradients (each written or
// added to), through the kept weights p.
func (k *Kernels) MLAAttentionBwd(do, q, kk, v, p, dq, dk, dv []float32, mask step.AttnMask, accQ, accK, accV bool) {
	md, B, T := k.mlaShape(), k.batch.MicroBatch, k.batch.SeqLen
	qk := md.Nope + md.Rope
	H := len(q) / (B * T * qk)
	qW, vW, tt := H*qk, H*md.V, T*T
	scale := float32(k.m.LatentSoftmaxScale())
	ds := grow(&k.scratch.mla.ds, B*H*tt)
	bq, bk, bv := beta(accQ), beta(accK), beta(accV)
	parallel(B*H, func(i0, i1 int) {
		for bh := i0; bh < i1; bh++ {
			b, h := bh/H, bh%H
			ph, dsh := p[bh*tt:(bh+1)*tt], ds[bh*tt:(bh+1)*tt]
			doh := do[b*T*vW+h*md.V:]
			blas.Gemm(false, true, T, T, md.V, 1, doh, vW, v[b*T*vW+h*md.V:], vW, 0, dsh, T)
			blas.Gemm(true, false, T, md.V, T, 1, ph, T, doh, vW, bv, dv[b*T*vW+h*md.V:], vW)
			for i := 0; i < T; i++ {
				lo, hi := mask.Keys(i)
				pr, gr := ph[i*T+lo:i*T+hi], dsh[i*T+lo:i*T+hi]
				var s float32
				for j := range pr {
					s += pr[j] * gr[j]
				}
				for j := range gr {
					gr[j] = pr[j] * (gr[j] - s)
				}
				clear(dsh[i*T : i*T+lo])
				clear(dsh[i*T+hi : (i+1)*T])
			}
			blas.Gemm(false, false, T, qk, T, scale, dsh, T, kk[b*T*qW+h*qk:], qW, bq, dq[b*T*qW+h*qk:], qW)
			blas.Gemm(true, false, T, qk, T, scale, dsh, T, q[b*T*qW+h*qk:], qW, bk, dk[b*T*qW+h*qk:], qW)
		}
	})
}

// MLAKVWrite writes every prompt position's heads' keys and values (rows of T per
// sequence) to the caches' positions 0..T−1 ([batch, maxLen, width] each).
func MLAKVWrite(k, v, kc, vc []float32, batch, T int) {
	for _, c := range [2]struct{ x, cache []float32 }{{k, kc}, {v, vc}} {
		w := len(c.x) / (batch * T)
		maxLen := len(c.cache) / (batch * w)
		for i := 0; i < batch; i++ {
			copy(c.cache[i*maxLen*w:(i*maxLen+T)*w], c.x[i*T*w:(i+1)*T*w])
		}
	}
}

// MLAKVAppend writes each sequence's keys and values of a decoding step at its position.
func MLAKVAppend(k, v []float32, pos []int32, kc, vc []float32) {
	batch := len(pos)
	for _, c := range [2]struct{ x, cache []float32 }{{k, kc}, {v, vc}} {
		w := len(c.x) / batch
		maxLen := len(c.cache) / (batch * w)
		for i, p := range pos {
			at := (i*maxLen + int(p)) * w
			copy(c.cache[at:at+w], c.x[i*w:(i+1)*w])
		}
	}
}

// MLAAttnDecode is each sequence's one query (its local heads) against its caches up to
// its position (the keys mask allows): o = softmax(q·kᵀ·scale)·v per head.
func (k *Kernels) MLAAttnDecode(q, kc, vc []float32, pos []int32, o []float32, mask step.AttnMask) {
	md := k.mlaShape()
	qk := md.Nope + md.Rope
	batch := len(pos)
	H := len(q) / (batch * qk)
	maxLen := len(kc) / (batch * H * qk)
	scale := float64(k.m.LatentSoftmaxScale())
	parallel(batch*H, func(i0, i1 int) {
		w := make([]float64, maxLen)
		for bh := i0; bh < i1; bh++ {
			b, h := bh/H, bh%H
			lo, hi := mask.Keys(int(pos[b]))
			qv := q[b*H*qk+h*qk : b*H*qk+(h+1)*qk]
			mx := math.Inf(-1)
			for j := lo; j < hi; j++ {
				kv := kc[(b*maxLen+j)*H*qk+h*qk : (b*maxLen+j)*H*qk+(h+1)*qk]
				var s float32
				for i, x := range qv {
					s += x * kv[i]
				}
				w[j] = float64(s) * scale
				mx = math.Max(mx, w[j])
			}
			var sum float64
			for j := lo; j < hi; j++ {
				w[j] = math.Exp(w[j] - mx)
				sum += w[j]
			}
			out := o[b*H*md.V+h*md.V : b*H*md.V+(h+1)*md.V]
			clear(out)
			for j := lo; j < hi; j++ {
				p := float32(w[j] / sum)
				vv := vc[(b*maxLen+j)*H*md.V+h*md.V : (b*maxLen+j)*H*md.V+(h+1)*md.V]
				for i, x := range vv {
					out[i] += p * x
				}
			}
		}
	})
}
