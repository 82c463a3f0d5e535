package nn

import (
	"runtime"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/runtime/blas"
)

// Decoding with latent attention caches what DeepSeek's inference caches: per layer,
// sequence and position the normalised latent c (kv_lora_rank values) and the rotated
// shared key k_pe (qk_rope_head_dim values), not the per-head keys and values, which
// would be heads·(qk_nope + qk_rope + v_head_dim) values. Attention runs on the latent with
// kv_b_proj absorbed: head h's query becomes q_lat = W_UKₕᵀ·q_nope (W_UKₕ the head's
// k_nope rows of kv_b_proj), its score against position j is scale·(q_lat·c_j +
// q_pe·k_pe_j), and its output W_UVₕ·Σ_j p_j·c_j (W_UVₕ the head's value rows): the same
// products as the training forward, in another order, so equal within float32 rounding.

// mlaDecode holds the latent caches and the scratch of Step and Feed for a Decoder.
type mlaDecode struct {
	md    mlaDims
	cache [][]float32 // per layer [batch, maxLen, r+rope]; nil for layers without MLA
	rows  int         // the rows the scratch below holds
	work  [][]float32 // per worker: q_lat and o_lat [H, r], scores [maxLen]
	rope  *ropeTable[float32]
	// kvb holds, per layer, kv_b_proj's values where its weights are quantised (a
	// compressed checkpoint): the absorbed products read its rows directly. Made on first
	// use; nil for float32 weights.
	kvb [][]float32

	// The rows' activations, as mlaQueries and mlaLatent write them.
	q, qa, qaHat, qaRstd, qan, kva, lat, cHat, cRstd, c, kpe, o []float32
}

func newMLADecode(c *core[float32], batch, maxLen int) *mlaDecode {
	md := mlaDimsOf(c.cfg, c.d)
	m := &mlaDecode{md: md, kvb: make([][]float32, len(c.layers))}
	for _, l := range c.layers {
		var lc []float32
		if l.mla != nil {
			lc = make([]float32, batch*maxLen*(md.r+md.rope))
		}
		m.cache = append(m.cache, lc)
	}
	if c.cfg.Position == program.Rotary {
		m.rope = newScaledRope[float32](c.cfg, maxLen, md.rope)
	}
	return m
}

// scratch sizes the row buffers for n rows and the worker buffers for maxLen positions.
func (m *mlaDecode) scratch(n, workers, maxLen int) {
	md := m.md
	if m.rows < n {
		mk := func(k int) []float32 { return make([]float32, k) }
		m.rows = n
		m.q, m.kva = mk(n*md.H*md.qk), mk(n*(md.r+md.rope))
		m.lat, m.cHat, m.c, m.cRstd, m.kpe = mk(n*md.r), mk(n*md.r), mk(n*md.r), mk(n), mk(n*md.rope)
		m.o = mk(n * md.H * md.vd)
		if md.ql > 0 {
			m.qa, m.qaHat, m.qan, m.qaRstd = mk(n*md.ql), mk(n*md.ql), mk(n*md.ql), mk(n)
		}
	}
	for len(m.work) < workers {
		m.work = append(m.work, make([]float32, 2*md.H*md.r+maxLen))
	}
}

// mlaAttend computes layer li's latent attention for n rows of h (the normalised layer
// input): row r is sequence seqOf(r) at position posOf(r). It writes every row's latent
// and shared key into the cache first, so a row attends to the rows before it in the same
// call, then returns the attention outputs [n, H·v_head_dim] before o_proj.
func (dec *Decoder) mlaAttend(l *layer[float32], li int, h []float32, n int, seqOf, posOf func(int) int) []float32 {
	m := dec.mla
	md, mp := m.md, l.mla
	m.scratch(n, runtime.GOMAXPROCS(0), dec.maxLen)
	mlaQueries(mp, md, h, m.q, m.qa, m.qaHat, m.qaRstd, m.qan, n, m.rope, posOf)
	mlaLatent(mp, md, h, m.kva, m.lat, m.cHat, m.cRstd, m.c, m.kpe, n, m.rope, posOf)
	kw := md.r + md.rope
	cache := m.cache[li]
	for r := 0; r < n; r++ {
		at := (seqOf(r)*dec.maxLen + posOf(r)) * kw
		copy(cache[at:at+md.r], m.c[r*md.r:(r+1)*md.r])
		copy(cache[at+md.r:at+kw], m.kpe[r*md.rope:(r+1)*md.rope])
	}
	kvb, kvbW := mp.kvb.w, md.kvbWidth()
	if mp.kvb.q != nil {
		if m.kvb[li] == nil {
			m.kvb[li] = mp.kvb.q.Dequantize()
		}
		kvb = m.kvb[li]
	}
	scale := float32(md.scale)
	parallel(n, func(worker, lo, hi int) {
		work := m.work[worker]
		for r := lo; r < hi; r++ {
			qLat, oLat := work[:md.H*md.r], work[md.H*md.r:2*md.H*md.r]
			pos := posOf(r)
			k0, k1 := l.keyRange(pos)
			span := k1 - k0
			sc := work[2*md.H*md.r : 2*md.H*md.r+span]
			seq := cache[(seqOf(r)*dec.maxLen+k0)*kw:]
			q := m.q[r*md.H*md.qk:]
			for hd := 0; hd < md.H; hd++ {
				qh := q[hd*md.qk : (hd+1)*md.qk]
				ql := qLat[hd*md.r : (hd+1)*md.r]
				// q_lat = q_nopeᵀ·W_UK: [1, nope]·[nope, r].
				blas.Gemm(false, false, 1, md.r, md.nope, 1, qh, md.nope, kvb[hd*kvbW*md.r:], md.r, 0, ql, md.r)
				blas.Gemm(false, true, 1, span, md.r, scale, ql, md.r, seq, kw, 0, sc, span)
				blas.Gemm(false, true, 1, span, md.rope, scale, qh[md.nope:], md.rope, seq[md.r:], kw, 1, sc, span)
				softmaxRow(sc, 0, span)
				ol := oLat[hd*md.r : (hd+1)*md.r]
				blas.Gemm(false, false, 1, md.r, span, 1, sc, span, seq, kw, 0, ol, md.r)
				// o = W_UV·o_lat: [1, r]·[r, v] with W_UV's rows [v, r].
				blas.Gemm(false, true, 1, md.vd, md.r, 1, ol, md.r, kvb[(hd*kvbW+md.nope)*md.r:], md.r, 0,
					m.o[r*md.H*md.vd+hd*md.vd:], md.vd)
			}
		}
	})
	return m.o[:n*md.H*md.vd]
}
