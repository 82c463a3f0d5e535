package nn

import (
	"runtime"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/runtime/blas"
)

// Multi-head latent attention (DeepSeek-V2/V3), as transformers' DeepseekV3Attention
// computes it:
//
//	q      = q_b_proj(rmsnorm(q_a_proj(x)))      (q_proj(x) without a q_lora_rank)
//	kv_a   = kv_a_proj_with_mqa(x) = [latent | k_pe]
//	c      = rmsnorm(latent)                      the compressed keys and values
//	kv_b   = kv_b_proj(c)                         per head [k_nope | v]
//	k_h    = [k_nope_h | rope(k_pe)]              k_pe is shared by every head
//	q_h    = [q_nope_h | rope(q_pe_h)]
//	o      = o_proj(softmax(q_h·k_hᵀ · scale) · v_h)
//
// Only the qk_rope_head_dim features are rotated, in moec's rotate-half layout (feature i
// pairs with i + rope/2). DeepSeek's checkpoints (rope_interleave = true) pair adjacent
// features instead; rotating the features permuted interleaved → half is the same product
// q·k, so such a checkpoint is moec's with the rope rows of q_b_proj (q_proj) and
// kv_a_proj_with_mqa permuted per head. The scale is program.Model.LatentSoftmaxScale.
// q_a_layernorm and kv_a_layernorm are DeepseekV3RMSNorm(rank) with its default epsilon,
// whatever the model's norm_eps.
const latentNormEps = 1e-6

// mlaParams are one layer's latent-attention tensors; the output projection is the
// layer's attn.o (and attn.ob).
type mlaParams[F Float] struct {
	q                  *tensor[F] // q_proj [H·qk, D] without a q_lora_rank, else nil
	qa, qaB, qaNorm    *tensor[F] // q_a_proj [ql, D] (bias with attention_bias), q_a_layernorm [ql]
	qb                 *tensor[F] // q_b_proj [H·qk, ql]
	kva, kvaB, kvaNorm *tensor[F] // kv_a_proj_with_mqa [r+rope, D] (bias), kv_a_layernorm [r]
	kvb                *tensor[F] // kv_b_proj [H·(nope+v), r]
}

// mlaDims are latent attention's sizes.
type mlaDims struct {
	H, nope, rope, qk, vd, r, ql int
	scale                        float64
}

func mlaDimsOf(m *program.Model, d dims) mlaDims {
	a := m.Attention
	return mlaDims{H: d.H, nope: int(a.QKNopeHeadDim), rope: int(a.QKRopeHeadDim), qk: int(a.QKNopeHeadDim + a.QKRopeHeadDim),
		vd: int(a.VHeadDim), r: int(a.KVLoraRank), ql: int(a.QLoraRank), scale: m.LatentSoftmaxScale()}
}

// kvbWidth is kv_b_proj's output per head: k_nope and v.
func (md mlaDims) kvbWidth() int { return md.nope + md.vd }

// latent creates layer prefix p's latent-attention tensors and its output projection, in
// the order compiler/params lists them.
func (b *builder[F]) latent(p string, m *program.Model, a *attnParams[F]) *mlaParams[F] {
	md := mlaDimsOf(m, b.c.d)
	D, bias := b.c.d.D, m.Attention.BiasQKV
	mp := &mlaParams[F]{}
	if md.ql > 0 {
		mp.qa, mp.qaB = b.weightBias(p+"self_attn.q_a_proj", initNormal, bias, md.ql, D)
		mp.qaNorm = b.add(p+"self_attn.q_a_layernorm.weight", initOnes, true, md.ql)
		mp.qb = b.add(p+"self_attn.q_b_proj.weight", initNormal, true, md.H*md.qk, md.ql)
	} else {
		mp.q = b.add(p+"self_attn.q_proj.weight", initNormal, true, md.H*md.qk, D)
	}
	mp.kva, mp.kvaB = b.weightBias(p+"self_attn.kv_a_proj_with_mqa", initNormal, bias, md.r+md.rope, D)
	mp.kvaNorm = b.add(p+"self_attn.kv_a_layernorm.weight", initOnes, true, md.r)
	mp.kvb = b.add(p+"self_attn.kv_b_proj.weight", initNormal, true, md.H*md.kvbWidth(), md.r)
	a.o, a.ob = b.weightBias(p+"self_attn.o_proj", initResidual, m.Attention.BiasOut, D, md.H*md.vd)
	return mp
}

// mlaWS holds one latent-attention layer's activations and gradients for a (B, T).
type mlaWS[F Float] struct {
	md                  mlaDims
	qa, qaHat, qan      []F // [n, ql] q_a_proj's output, normalised, scaled (q_lora_rank only)
	qaRstd              []F // [n]
	q                   []F // [n, H·qk] queries, rope part rotated
	kva                 []F // [n, r+rope] kv_a_proj_with_mqa's output
	lat, cHat, c        []F // [n, r] the latent, normalised, scaled
	cRstd               []F // [n]
	kpe                 []F // [n, rope] the shared rotated key
	kvb                 []F // [n, H·(nope+v)]
	k, v                []F // [n, H·qk], [n, H·v]
	p                   []F // [B, H, T, T] softmax probabilities
	o                   []F // [n, H·v] before o_proj
	do, dq, dk, dv      []F
	dkvb                []F // [n, H·(nope+v)]
	dc, dlat, dkva, dkp []F
	dqan, dqa           []F
	dS                  [][]F // per worker [T, T]
	rope                *ropeTable[F]
}

func newMLAWS[F Float](m *program.Model, d dims, B, T int) *mlaWS[F] {
	md := mlaDimsOf(m, d)
	n := B * T
	mk := func(k int) []F { return make([]F, k) }
	w := &mlaWS[F]{md: md, q: mk(n * md.H * md.qk), kva: mk(n * (md.r + md.rope)),
		lat: mk(n * md.r), cHat: mk(n * md.r), c: mk(n * md.r), cRstd: mk(n), kpe: mk(n * md.rope),
		kvb: mk(n * md.H * md.kvbWidth()), k: mk(n * md.H * md.qk), v: mk(n * md.H * md.vd),
		p: mk(B * md.H * T * T), o: mk(n * md.H * md.vd), do: mk(n * md.H * md.vd),
		dq: mk(n * md.H * md.qk), dk: mk(n * md.H * md.qk), dv: mk(n * md.H * md.vd),
		dkvb: mk(n * md.H * md.kvbWidth()), dc: mk(n * md.r), dlat: mk(n * md.r),
		dkva: mk(n * (md.r + md.rope)), dkp: mk(n * md.rope)}
	if md.ql > 0 {
		w.qa, w.qaHat, w.qan, w.qaRstd = mk(n*md.ql), mk(n*md.ql), mk(n*md.ql), mk(n)
		w.dqan, w.dqa = mk(n*md.ql), mk(n*md.ql)
	}
	for range runtime.GOMAXPROCS(0) {
		w.dS = append(w.dS, mk(T*T))
	}
	if m.Position == program.Rotary {
		w.rope = newScaledRope[F](m, T, md.rope)
	}
	return w
}

// mlaQueries computes the n rows' queries from x into q and rotates their rope features
// (positions from pos). qa, qaHat, qaRstd and qan receive the low-rank path's activations.
func mlaQueries[F Float](mp *mlaParams[F], md mlaDims, x, q, qa, qaHat, qaRstd, qan []F, n int, rope *ropeTable[F], pos func(int) int) {
	if mp.qa != nil {
		linear(qa, x, n, mp.qa, mp.qaB, false)
		normFwd(qan, qaHat, qaRstd, qa, n, md.ql, mp.qaNorm, nil, false, latentNormEps)
		linear(q, qan, n, mp.qb, nil, false)
	} else {
		linear(q, x, n, mp.q, nil, false)
	}
	if rope == nil {
		return
	}
	parallel(n, func(_, lo, hi int) {
		for t := lo; t < hi; t++ {
			row := q[t*md.H*md.qk : (t+1)*md.H*md.qk]
			for h := 0; h < md.H; h++ {
				rope.rotate(row[h*md.qk+md.nope:(h+1)*md.qk], 1, pos(t), false)
			}
		}
	})
}

// mlaLatent computes the n rows' compressed keys and values from x: kv_a_proj_with_mqa
// into kva, the normalised latent into c (lat, cHat, cRstd for the backward) and the
// rotated shared key into kpe.
func mlaLatent[F Float](mp *mlaParams[F], md mlaDims, x, kva, lat, cHat, cRstd, c, kpe []F, n int, rope *ropeTable[F], pos func(int) int) {
	w := md.r + md.rope
	linear(kva, x, n, mp.kva, mp.kvaB, false)
	for t := 0; t < n; t++ {
		copy(lat[t*md.r:(t+1)*md.r], kva[t*w:t*w+md.r])
		copy(kpe[t*md.rope:(t+1)*md.rope], kva[t*w+md.r:(t+1)*w])
		if rope != nil {
			rope.rotate(kpe[t*md.rope:(t+1)*md.rope], 1, pos(t), false)
		}
	}
	normFwd(c, cHat, cRstd, lat, n, md.r, mp.kvaNorm, nil, false, latentNormEps)
}

// mlaForward computes layer l's latent attention of the B·T rows of x (the normalised
// layer input) into w.o, before the output projection.
func (c *core[F]) mlaForward(l *layer[F], w *mlaWS[F], x []F, B, T int) {
	md, mp := w.md, l.mla
	n := B * T
	pos := func(t int) int { return t % T }
	mlaQueries(mp, md, x, w.q, w.qa, w.qaHat, w.qaRstd, w.qan, n, w.rope, pos)
	mlaLatent(mp, md, x, w.kva, w.lat, w.cHat, w.cRstd, w.c, w.kpe, n, w.rope, pos)
	linear(w.kvb, w.c, n, mp.kvb, nil, false)
	qkW, vW, kvbW := md.H*md.qk, md.H*md.vd, md.kvbWidth()
	for t := 0; t < n; t++ {
		for h := 0; h < md.H; h++ {
			src := w.kvb[t*md.H*kvbW+h*kvbW:]
			k := w.k[t*qkW+h*md.qk : t*qkW+(h+1)*md.qk]
			copy(k[:md.nope], src[:md.nope])
			copy(k[md.nope:], w.kpe[t*md.rope:(t+1)*md.rope])
			copy(w.v[t*vW+h*md.vd:t*vW+(h+1)*md.vd], src[md.nope:kvbW])
		}
	}
	tt := T * T
	scale := F(md.scale)
	parallel(B, func(_, b0, b1 int) {
		for b := b0; b < b1; b++ {
			for h := 0; h < md.H; h++ {
				p := w.p[(b*md.H+h)*tt : (b*md.H+h+1)*tt]
				blas.Gemm(false, true, T, T, md.qk, scale, w.q[b*T*qkW+h*md.qk:], qkW, w.k[b*T*qkW+h*md.qk:], qkW, 0, p, T)
				softmaxCausal(p, T, l.window, false, 0)
				blas.Gemm(false, false, T, md.vd, T, 1, p, T, w.v[b*T*vW+h*md.vd:], vW, 0, w.o[b*T*vW+h*md.vd:], vW)
			}
		}
	})
}

// mlaBackward takes w.do, the gradient of w.o, to the gradient of the layer input x in dx
// (overwritten), accumulating every latent-attention tensor's gradient.
func (c *core[F]) mlaBackward(l *layer[F], w *mlaWS[F], x, dx []F, B, T int) {
	md, mp := w.md, l.mla
	n := B * T
	tt := T * T
	scale := F(md.scale)
	qkW, vW, kvbW := md.H*md.qk, md.H*md.vd, md.kvbWidth()
	parallel(B, func(worker int, b0, b1 int) {
		dS := w.dS[worker]
		for b := b0; b < b1; b++ {
			for h := 0; h < md.H; h++ {
				p := w.p[(b*md.H+h)*tt : (b*md.H+h+1)*tt]
				do := w.do[b*T*vW+h*md.vd:]
				blas.Gemm(false, true, T, T, md.vd, 1, do, vW, w.v[b*T*vW+h*md.vd:], vW, 0, dS, T)
				blas.Gemm(true, false, T, md.vd, T, 1, p, T, do, vW, 0, w.dv[b*T*vW+h*md.vd:], vW)
				for i := 0; i < T; i++ {
					lo, hi := l.keyRange(i)
					pr, gr := p[i*T+lo:i*T+hi], dS[i*T+lo:i*T+hi]
					s := dot(pr, gr)
					for j := range gr {
						gr[j] = pr[j] * (gr[j] - s)
					}
					clear(dS[i*T : i*T+lo])
					clear(dS[i*T+hi : (i+1)*T])
				}
				blas.Gemm(false, false, T, md.qk, T, scale, dS, T, w.k[b*T*qkW+h*md.qk:], qkW, 0, w.dq[b*T*qkW+h*md.qk:], qkW)
				blas.Gemm(true, false, T, md.qk, T, scale, dS, T, w.q[b*T*qkW+h*md.qk:], qkW, 0, w.dk[b*T*qkW+h*md.qk:], qkW)
			}
		}
	})
	// The keys' gradients: k_nope to kv_b_proj's rows, the rope part summed over the heads
	// (one shared key) and rotated back; the values' to kv_b_proj's other rows.
	clear(w.dkp)
	for t := 0; t < n; t++ {
		dkp := w.dkp[t*md.rope : (t+1)*md.rope]
		for h := 0; h < md.H; h++ {
			dk := w.dk[t*qkW+h*md.qk : t*qkW+(h+1)*md.qk]
			dst := w.dkvb[t*md.H*kvbW+h*kvbW : t*md.H*kvbW+(h+1)*kvbW]
			copy(dst[:md.nope], dk[:md.nope])
			copy(dst[md.nope:], w.dv[t*vW+h*md.vd:t*vW+(h+1)*md.vd])
			axpy(dkp, 1, dk[md.nope:])
		}
		if w.rope != nil {
			w.rope.rotate(dkp, 1, t%T, true)
			for h := 0; h < md.H; h++ {
				w.rope.rotate(w.dq[t*qkW+h*md.qk+md.nope:t*qkW+(h+1)*md.qk], 1, t%T, true)
			}
		}
	}
	linearBack(w.dc, w.dkvb, w.c, n, mp.kvb, nil, false)
	clear(w.dlat)
	normBack(w.dlat, w.dc, w.cHat, w.cRstd, n, md.r, mp.kvaNorm, nil, false)
	kw := md.r + md.rope
	for t := 0; t < n; t++ {
		copy(w.dkva[t*kw:t*kw+md.r], w.dlat[t*md.r:(t+1)*md.r])
		copy(w.dkva[t*kw+md.r:(t+1)*kw], w.dkp[t*md.rope:(t+1)*md.rope])
	}
	linearBack(dx, w.dkva, x, n, mp.kva, mp.kvaB, false)
	if mp.qa != nil {
		linearBack(w.dqan, w.dq, w.qan, n, mp.qb, nil, false)
		clear(w.dqa)
		normBack(w.dqa, w.dqan, w.qaHat, w.qaRstd, n, md.ql, mp.qaNorm, nil, false)
		linearBack(dx, w.dqa, x, n, mp.qa, mp.qaB, true)
	} else {
		linearBack(dx, w.dq, x, n, mp.q, nil, true)
	}
}
