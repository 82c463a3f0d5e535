package nn

import (
	"math"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/runtime/blas"
)

// attnWS holds one layer's attention activations for a (B, T).
type attnWS[F Float] struct {
	q, k, v, o []F // [N, H·Dh], [N, KV·Dh], [N, KV·Dh], [N, H·Dh]; q, k after norm and rotation
	qhat, khat []F // q, k normalised before their scale (qk_norm only)
	qrstd      []F // [N·H]
	krstd      []F // [N·KV]
	ql2, kl2   []F // [N·H], [N·KV] 1/rms of the rotated heads (qk_l2_norm only, llama4.go)
	sRaw       []F // [B, H, T, T] scores before talking-heads mixing (talking heads only)
	p          []F // [B, H, T, T] softmax probabilities
	a          []F // [B, H, T, T] weights applied to V: p, or p mixed by talking_heads_post
	dAacc      []F // [B, H, T, T] gradient of a from later layers that reused it
	dkAcc      []F // [N, KV·Dh] gradients of k and v from the later layers of its
	dvAcc      []F // cross-layer attention group (share_kv owners only)
	// qRaw, kRaw, vRaw are the projections before clip_qkv's clamp (clip.go).
	qRaw, kRaw, vRaw []F
	// kRot is the group owner's rotated keys before the norms (qk_norm_after_rope only,
	// qknorm_rope.go).
	kRot []F
}

// validRange is the span of keys query i attends to: causal, optionally windowed.
func validRange(i, window int) (int, int) {
	lo := 0
	if window > 0 {
		lo = max(0, i-window+1)
	}
	return lo, i + 1
}

// attnScores computes, for batch rows [b0, b1), the attention weights a from q and k.
func (c *core[F]) attnScores(l *layer[F], w *attnWS[F], B, T, b0, b1 int) {
	d := c.d
	tt := T * T
	scale := F(1 / math.Sqrt(float64(d.Dh)))
	for b := b0; b < b1; b++ {
		base := b * d.H * tt
		raw := w.p[base : base+d.H*tt]
		if l.attn.thPre != nil {
			raw = w.sRaw[base : base+d.H*tt]
		}
		for h := 0; h < d.H; h++ {
			g := h / d.HeadsPerKV
			blas.Gemm(false, true, T, T, d.Dh, scale, w.q[b*T*d.QDim+h*d.Dh:], d.QDim,
				w.k[b*T*d.KVDim+g*d.Dh:], d.KVDim, 0, raw[h*tt:], T)
		}
		p := w.p[base : base+d.H*tt]
		if l.attn.thPre != nil {
			// Mixing heads is one product: [H,H]·[H, T·T].
			blas.Gemm(false, false, d.H, tt, d.H, 1, l.attn.thPre.w, d.H, raw, tt, 0, p, tt)
		}
		for h := 0; h < d.H; h++ {
			var sink F
			if l.attn.sinks != nil {
				sink = l.attn.sinks.w[h]
			}
			if l.llama.chunk > 0 {
				softmaxChunked(p[h*tt:(h+1)*tt], T, l.llama.chunk, l.attn.sinks != nil, sink)
			} else {
				softmaxCausal(p[h*tt:(h+1)*tt], T, l.window, l.attn.sinks != nil, sink)
			}
		}
		if l.attn.thPost != nil {
			blas.Gemm(false, false, d.H, tt, d.H, 1, l.attn.thPost.w, d.H, p, tt, 0, w.a[base:base+d.H*tt], tt)
		}
	}
}

// attnApply computes o = a·V for batch rows [b0, b1); a may be another layer's weights.
func (c *core[F]) attnApply(a []F, w *attnWS[F], T, b0, b1 int) {
	d := c.d
	tt := T * T
	for b := b0; b < b1; b++ {
		for h := 0; h < d.H; h++ {
			g := h / d.HeadsPerKV
			blas.Gemm(false, false, T, d.Dh, T, 1, a[(b*d.H+h)*tt:], T, w.v[b*T*d.KVDim+g*d.Dh:], d.KVDim,
				0, w.o[b*T*d.QDim+h*d.Dh:], d.QDim)
		}
	}
}

// attnGrads holds the gradients of one layer's attention inputs.
type attnGrads[F Float] struct {
	do, dq, dk, dv []F
	dqPre, dkPre   []F // gradients before qk_norm (qk_norm only)
}

// attnBackward computes dq, dk, dv for batch rows [b0, b1) from do. a is the weights that
// were applied (this layer's or its owner's); when reused the gradient of a is added to
// ownerAcc and q, k get none. scratch is two [H, T, T] buffers private to the worker;
// thG [2·H·H + H] receives this worker's talking-heads and sink gradients.
func (c *core[F]) attnBackward(l *layer[F], w *attnWS[F], g *attnGrads[F], a []F, reused bool, ownerAcc []F,
	T, b0, b1 int, scratch1, scratch2, thG []F) {
	d := c.d
	tt := T * T
	n := d.H * tt
	scale := F(1 / math.Sqrt(float64(d.Dh)))
	for b := b0; b < b1; b++ {
		clear(g.dv[b*T*d.KVDim : (b+1)*T*d.KVDim])
		dA := scratch1[:n]
		ab := a[b*n : (b+1)*n]
		for h := 0; h < d.H; h++ {
			kv := h / d.HeadsPerKV
			doh := g.do[b*T*d.QDim+h*d.Dh:]
			vg := w.v[b*T*d.KVDim+kv*d.Dh:]
			blas.Gemm(false, true, T, T, d.Dh, 1, doh, d.QDim, vg, d.KVDim, 0, dA[h*tt:], T)
			blas.Gemm(true, false, T, d.Dh, T, 1, ab[h*tt:], T, doh, d.QDim, 1, g.dv[b*T*d.KVDim+kv*d.Dh:], d.KVDim)
		}
		if reused {
			axpy(ownerAcc[b*n:(b+1)*n], 1, dA)
			continue
		}
		if w.dAacc != nil {
			axpy(dA, 1, w.dAacc[b*n:(b+1)*n])
		}
		p := w.p[b*n : (b+1)*n]
		dP := dA
		if l.attn.thPost != nil {
			dP = scratch2[:n]
			blas.Gemm(false, true, d.H, d.H, tt, 1, dA, tt, p, tt, 1, thG[d.H*d.H:], d.H)
			blas.Gemm(true, false, d.H, tt, d.H, 1, l.attn.thPost.w, d.H, dA, tt, 0, dP, tt)
		}
		for h := 0; h < d.H; h++ {
			for i := 0; i < T; i++ {
				lo, hi := l.keyRange(i)
				row := h*tt + i*T
				pr, gr := p[row+lo:row+hi], dP[row+lo:row+hi]
				s := dot(pr, gr)
				if l.attn.sinks != nil {
					// The sink's probability is 1 − Σ p; its logit gets −p_sink·s.
					var ps F
					for _, v := range pr {
						ps += v
					}
					thG[2*d.H*d.H+h] -= (1 - ps) * s
				}
				for j := range gr {
					gr[j] = pr[j] * (gr[j] - s)
				}
				clear(dP[row : row+lo])
				clear(dP[row+hi : row+T])
			}
		}
		dS := dP
		if l.attn.thPre != nil {
			dS = scratch1[:n]
			if &dS[0] == &dP[0] {
				dS = scratch2[:n]
			}
			raw := w.sRaw[b*n : (b+1)*n]
			blas.Gemm(false, true, d.H, d.H, tt, 1, dP, tt, raw, tt, 1, thG[:d.H*d.H], d.H)
			blas.Gemm(true, false, d.H, tt, d.H, 1, l.attn.thPre.w, d.H, dP, tt, 0, dS, tt)
		}
		clear(g.dk[b*T*d.KVDim : (b+1)*T*d.KVDim])
		for h := 0; h < d.H; h++ {
			kv := h / d.HeadsPerKV
			blas.Gemm(false, false, T, d.Dh, T, scale, dS[h*tt:], T, w.k[b*T*d.KVDim+kv*d.Dh:], d.KVDim,
				0, g.dq[b*T*d.QDim+h*d.Dh:], d.QDim)
			blas.Gemm(true, false, T, d.Dh, T, scale, dS[h*tt:], T, w.q[b*T*d.QDim+h*d.Dh:], d.QDim,
				1, g.dk[b*T*d.KVDim+kv*d.Dh:], d.KVDim)
		}
	}
}

// qkNormWidths is the width of the q and k norm scales: head_dim, one norm shared by all
// heads (qk_norm = true, Qwen3), or the whole projections (qk_norm = full, OLMoE).
func qkNormWidths(m *program.Model, d dims) (q, k int) {
	if m.Attention.QKNormFull {
		return d.QDim, d.KVDim
	}
	return d.Dh, d.Dh
}

// qkNormFwd normalises the queries (heads = H) or keys (heads = KV) of n tokens in place:
// per head over head_dim, or with qk_norm = full over each token's whole projection. xhat
// holds n·heads·Dh values and rstd n·heads (full uses the first n), as the backward reads.
func (c *core[F]) qkNormFwd(x, xhat, rstd []F, n, heads int, scale *tensor[F], eps float64) {
	rows, width := c.qkNormRows(n, heads)
	normFwd(x, xhat, rstd, x, rows, width, scale, nil, false, eps)
}

// qkNormBack adds the gradient before qkNormFwd to dx, given dy after it, and accumulates
// the scale's gradient.
func (c *core[F]) qkNormBack(dx, dy, xhat, rstd []F, n, heads int, scale *tensor[F]) {
	rows, width := c.qkNormRows(n, heads)
	normBack(dx, dy, xhat, rstd, rows, width, scale, nil, false)
}

func (c *core[F]) qkNormRows(n, heads int) (rows, width int) {
	if c.cfg.Attention.QKNormFull {
		return n, heads * c.d.Dh
	}
	return n * heads, c.d.Dh
}
