package nn

import (
	"fmt"
	"math"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/runtime/blas"
	"github.com/moec-dev/moec/runtime/internal/vec"
)

// Decoder generates incrementally: each Step feeds one token per sequence and returns the
// next-token logits, keeping keys and values of earlier positions in a cache. It always
// recomputes attention weights (no stochastic sharing) and routes without capacity limits,
// so its logits equal those of Logits on the same prefix with StepOptions{} on a dropless
// model. A Decoder belongs to one goroutine; it reads the Model's weights at each Step.
type Decoder struct {
	c             *core[float32]
	batch, maxLen int
	pos           int
	slotPos       []int       // Step's positions, all dec.pos
	kc, vc        [][]float32 // per layer [batch, maxLen, KV·Dh]
	tok           []int32
	rows          []float32 // [batch, RouterIn] the tokens' router-table rows (token-embedding routing)
	x, h, tmp     []float32 // [batch, D]
	hPar          []float32 // [batch, D] the experts' input under parallel_attention, else nil
	xhat, rstd    []float32
	q, k, v, o    []float32   // [batch, H·Dh] / [batch, KV·Dh]
	qkHat, qkRstd []float32   // qk_norm scratch
	scores        [][]float32 // per worker: 2·H·maxLen
	ffn           []*ffnWS[float32]
	moe           []*moeWS[float32]
	rope          *ropeTable[float32]
	logits        []float32  // [batch, V]
	feed          *feedWS    // Feed's rows (decode_prefill.go), made on first use
	mla           *mlaDecode // latent attention's caches (mla_decode.go), nil without
}

// NewDecoder prepares a decoder for batch sequences of up to maxLen positions.
func (m *Model) NewDecoder(batch, maxLen int) *Decoder {
	c := m.c
	d := c.d
	batch, maxLen = max(batch, 1), max(maxLen, 1)
	dec := &Decoder{c: c, batch: batch, maxLen: maxLen, tok: make([]int32, batch),
		x: make([]float32, batch*d.D), h: make([]float32, batch*d.D), tmp: make([]float32, batch*d.D), xhat: make([]float32, batch*d.D),
		rstd: make([]float32, batch), q: make([]float32, batch*d.QDim), k: make([]float32, batch*d.KVDim),
		v: make([]float32, batch*d.KVDim), o: make([]float32, batch*d.QDim), logits: make([]float32, batch*d.V)}
	if c.routerEmbed != nil {
		dec.rows = make([]float32, batch*d.RouterIn)
	}
	if c.cfg.Attention.QKNorm || c.cfg.Attention.QKL2Norm {
		dec.qkHat, dec.qkRstd = make([]float32, batch*d.QDim), make([]float32, batch*d.H)
	}
	if m := c.cfg.MoE; m != nil && m.ParallelAttention {
		dec.hPar = make([]float32, batch*d.D)
	}
	for li, l := range c.layers {
		switch {
		case l.mla != nil: // its cache is the latent one (mla_decode.go)
			dec.kc, dec.vc = append(dec.kc, nil), append(dec.vc, nil)
		case l.kvOwner == li:
			dec.kc = append(dec.kc, make([]float32, batch*maxLen*d.KVDim))
			dec.vc = append(dec.vc, make([]float32, batch*maxLen*d.KVDim))
		case c.normsAfterRope(): // each layer's keys normed by its own scale (qknorm_rope.go)
			dec.kc, dec.vc = append(dec.kc, make([]float32, batch*maxLen*d.KVDim)), append(dec.vc, dec.vc[l.kvOwner])
		default: // cross-layer attention: one cache per group
			dec.kc, dec.vc = append(dec.kc, dec.kc[l.kvOwner]), append(dec.vc, dec.vc[l.kvOwner])
		}
		var mw *moeWS[float32]
		var fw *ffnWS[float32]
		if l.moe != nil {
			mw = newMoEWS(d, l.moe, batch)
			mw.rows = dec.rows
		}
		if l.dense != nil {
			fw = newFFNWS(l.dense, batch)
		}
		markInference(mw, fw)
		dec.moe, dec.ffn = append(dec.moe, mw), append(dec.ffn, fw)
	}
	for range batch {
		dec.scores = append(dec.scores, make([]float32, 2*d.H*maxLen))
	}
	if c.cfg.Position == program.Rotary {
		dec.rope = newScaledRope[float32](c.cfg, maxLen, d.Dh)
	}
	if c.cfg.Attention.LatentAttention() {
		dec.mla = newMLADecode(c, batch, maxLen)
	}
	return dec
}

// Reset forgets every position so the decoder starts new sequences.
func (dec *Decoder) Reset() { dec.pos = 0 }

// Pos is the number of positions already fed.
func (dec *Decoder) Pos() int { return dec.pos }

// Step feeds tokens[i] to sequence i at the next position and returns batch·vocab logits
// (vocab after padding). The returned slice is reused by the next Step.
func (dec *Decoder) Step(tokens []int32) ([]float32, error) {
	if dec.pos >= dec.maxLen {
		return nil, fmt.Errorf("nn: decoder is full at %d positions", dec.maxLen)
	}
	if len(dec.slotPos) != dec.batch {
		dec.slotPos = make([]int, dec.batch)
	}
	for i := range dec.slotPos {
		dec.slotPos[i] = dec.pos
	}
	logits, err := dec.step(tokens, dec.slotPos)
	if err != nil {
		return nil, err
	}
	dec.pos++
	return logits, nil
}

// StepSlots feeds tokens[i] to sequence i at position pos[i] and returns batch·vocab
// logits, like Step, but every sequence keeps its own position: continuous batching
// starts a new sequence in a slot (pos 0) while the others go on. Sequence i attends to
// the cached positions [0, pos[i]) its earlier steps wrote; whatever a slot held beyond
// that is ignored, so a slot is reused without clearing. The caller tracks positions;
// Pos and Reset concern Step only.
func (dec *Decoder) StepSlots(tokens []int32, pos []int) ([]float32, error) {
	if len(pos) != dec.batch {
		return nil, fmt.Errorf("nn: decoder step got %d positions for %d sequences", len(pos), dec.batch)
	}
	for i, p := range pos {
		if p < 0 || p >= dec.maxLen {
			return nil, fmt.Errorf("nn: position %d of sequence %d is outside the decoder's [0, %d)", p, i, dec.maxLen)
		}
	}
	return dec.step(tokens, pos)
}

// step runs one decoding step with sequence i at position pos[i].
func (dec *Decoder) step(tokens []int32, positions []int) ([]float32, error) {
	c, d := dec.c, dec.c.d
	if len(tokens) != dec.batch {
		return nil, fmt.Errorf("nn: decoder step got %d tokens for %d sequences", len(tokens), dec.batch)
	}
	for i, p := range positions {
		if d.MaxPos > 0 && p >= d.MaxPos {
			return nil, fmt.Errorf("nn: position %d of sequence %d exceeds the %d learned positions", p, i, d.MaxPos)
		}
	}
	for i, t := range tokens {
		if t < 0 || int64(t) >= c.cfg.Vocab {
			return nil, fmt.Errorf("nn: token %d of sequence %d is outside the vocabulary [0, %d)", t, i, c.cfg.Vocab)
		}
	}
	copy(dec.tok, tokens)
	if c.routerEmbed != nil {
		c.gatherRouterRows(dec.rows, dec.tok)
	}
	n := dec.batch
	for i, id := range tokens {
		c.embedRow(dec.x[i*d.D:(i+1)*d.D], int(id))
		if c.pos != nil {
			pos := positions[i]
			axpy(dec.x[i*d.D:(i+1)*d.D], 1, c.pos.w[pos*d.D:(pos+1)*d.D])
		}
	}
	ln := c.cfg.Norm == program.LayerNorm
	sandwich := isSandwich(c.cfg)
	eps := c.d.NormEps
	for li, l := range c.layers {
		moeIn := dec.h
		if l.normR != nil {
			// parallel_attention (parallel.go): the experts read the layer's input.
			sublayerIn(dec.hPar, dec.xhat, dec.rstd, dec.x, n, d.D, l.norm2, l.norm2b, ln, eps)
			moeIn = dec.hPar
		}
		sublayerIn(dec.h, dec.xhat, dec.rstd, dec.x, n, d.D, l.norm1, l.norm1b, ln, eps)
		attnOut := dec.o
		if l.mla != nil { // mla_decode.go
			attnOut = dec.mlaAttend(l, li, dec.h, n, func(i int) int { return i }, func(i int) int { return positions[i] })
		} else {
			dec.stepAttention(l, li, n, positions)
		}
		target := sublayerTarget(sandwich, l.postA, dec.x, dec.tmp)
		linear(target, attnOut, n, l.attn.o, l.attn.ob, true)
		sublayerOut(sandwich, dec.x, dec.tmp, dec.xhat, dec.rstd, n, d.D, l.postA, l.postAb, ln, eps)
		if l.normR != nil {
			sublayerIn(dec.h, dec.xhat, dec.rstd, dec.x, n, d.D, l.normR, l.normRb, ln, eps)
		} else {
			sublayerIn(dec.h, dec.xhat, dec.rstd, dec.x, n, d.D, l.norm2, l.norm2b, ln, eps)
		}
		target = sublayerTarget(sandwich, l.postF, dec.x, dec.tmp)
		if l.moe != nil {
			c.moeForward(l.moe, dec.moe[li], moeIn, dec.tok, target, n, routeOptions{dropless: true})
		}
		if l.dense != nil {
			ffnForward(l.dense, dec.ffn[li], dec.h, target, n)
		}
		sublayerOut(sandwich, dec.x, dec.tmp, dec.xhat, dec.rstd, n, d.D, l.postF, l.postFb, ln, eps)
	}
	hF := dec.x
	if c.normF != nil {
		normFwd(dec.h, dec.xhat, dec.rstd, dec.x, n, d.D, c.normF, c.normFb, ln, eps)
		hF = dec.h
	}
	head := c.head
	if head == nil {
		head = c.embed
	}
	linear(dec.logits, hF, n, head, c.headB, false)
	return dec.logits, nil
}

// stepAttention computes layer li's attention output of the n sequences at positions into
// dec.o: their queries, keys and values (written into the cache), then each one's
// attention over its cached prefix.
func (dec *Decoder) stepAttention(l *layer[float32], li, n int, positions []int) {
	c, d := dec.c, dec.c.d
	eps := d.NormEps
	owns := l.kvOwner == li
	after := c.normsAfterRope()
	// Queries, keys and values of quantised weights quantise dec.h once (quantized.go).
	shared := owns && linearShared(dec.h, n, [3]*tensor[float32]{l.attn.q, l.attn.k, l.attn.v},
		[3]*tensor[float32]{l.attn.qb, l.attn.kb, l.attn.vb}, [3][]float32{dec.q, dec.k, dec.v})
	if !shared {
		linear(dec.q, dec.h, n, l.attn.q, l.attn.qb, false)
	}
	if l.attn.qNorm != nil && !after {
		c.qkNormFwd(dec.q, dec.qkHat, dec.qkRstd, n, d.H, l.attn.qNorm, eps)
	}
	if clip := c.cfg.Attention.ClipQKV; clip > 0 {
		clipFwd(dec.q, nil, clip) // clip.go
	}
	if owns {
		if !shared {
			linear(dec.k, dec.h, n, l.attn.k, l.attn.kb, false)
			linear(dec.v, dec.h, n, l.attn.v, l.attn.vb, false)
		}
		if l.attn.kNorm != nil && !after {
			c.qkNormFwd(dec.k, dec.qkHat, dec.qkRstd, n, d.KV, l.attn.kNorm, eps)
		}
		if clip := c.cfg.Attention.ClipQKV; clip > 0 {
			clipFwd(dec.k, nil, clip)
			clipFwd(dec.v, nil, clip)
		}
	}
	for i := 0; i < n; i++ { // decode_rules.go
		dec.positionRow(l, li, dec.q[i*d.QDim:(i+1)*d.QDim], dec.k[i*d.KVDim:(i+1)*d.KVDim], dec.v[i*d.KVDim:(i+1)*d.KVDim],
			i*dec.maxLen+positions[i], positions[i], dec.qkHat, dec.qkRstd)
	}
	if n == 1 { // batch 1: no closure to allocate
		dec.attend(l, li, 0, positions[0])
		return
	}
	parallel(n, func(_, lo, hi int) {
		for i := lo; i < hi; i++ {
			dec.attend(l, li, i, positions[i])
		}
	})
}

// scoresSplitWork is runtime/blas's work (span·head size, one query) from which it splits
// one head's q·Kᵀ over cores: from there attend keeps one product per head.
const scoresSplitWork = 1 << 18

// attend computes sequence i's attention output at position pos from the cache.
func (dec *Decoder) attend(l *layer[float32], li, i, pos int) {
	d := dec.c.d
	lo, hi := l.keyRange(pos)
	span := hi - lo
	sc := dec.scores[i][:d.H*span]
	mix := dec.scores[i][d.H*dec.maxLen : d.H*dec.maxLen+d.H*span]
	scale := float32(1 / math.Sqrt(float64(d.Dh)))
	kc, vc := dec.kc[li][i*dec.maxLen*d.KVDim:], dec.vc[li][i*dec.maxLen*d.KVDim:]
	// Every head's q·Kᵀ in one vector call (bit for bit the per-head products), unless one
	// head's keys are enough work for blas to split over cores.
	heads := d.H
	if span*d.Dh < scoresSplitWork && vec.ScoresHeads(sc, dec.q[i*d.QDim:(i+1)*d.QDim], kc[lo*d.KVDim:], d.H, d.HeadsPerKV, span, d.Dh, d.KVDim, scale) {
		heads = 0
	}
	for h := 0; h < heads; h++ {
		g := h / d.HeadsPerKV
		// One product per head, q·Kᵀ over the cached keys: a single row against the keys'
		// strided rows, which blas streams (its kernel for few rows) instead of looping
		// over dot products.
		blas.Gemm(false, true, 1, span, d.Dh, scale, dec.q[i*d.QDim+h*d.Dh:], d.Dh,
			kc[lo*d.KVDim+g*d.Dh:], d.KVDim, 0, sc[h*span:], span)
	}
	probs := sc
	if l.attn.thPre != nil {
		mixHeads(mix, sc, l.attn.thPre.w, d.H, span)
		probs = mix
	}
	// Without sinks, every head's row in one vector call (bit for bit the row-by-row one).
	heads = d.H
	if l.attn.sinks == nil && span >= softmaxVecMin && vec.SoftmaxRows(probs[:d.H*span], d.H, span, span, false, 0, false, 0) {
		heads = 0
	}
	for h := 0; h < heads; h++ {
		var sink float32
		if l.attn.sinks != nil {
			sink = l.attn.sinks.w[h]
		}
		softmaxRowSink(probs[h*span:(h+1)*span], 0, span, l.attn.sinks != nil, sink)
	}
	if l.attn.thPost != nil {
		mixHeads(sc, probs, l.attn.thPost.w, d.H, span)
		probs = sc
	}
	o := dec.o[i*d.QDim : (i+1)*d.QDim]
	// Every head's weighted sum of its group's values in one call (vec), or head by head.
	if vec.WeightedRowsHeads(o, probs, vc[lo*d.KVDim:], d.H, d.HeadsPerKV, span, d.Dh, d.KVDim, d.Dh, span, d.Dh) {
		return
	}
	for h := 0; h < d.H; h++ {
		g := h / d.HeadsPerKV
		oh := o[h*d.Dh : (h+1)*d.Dh]
		ph := probs[h*span : (h+1)*span]
		// The weighted sum of the values, Σ_j p_j·v_j, with the head's output held in
		// registers across all keys (vec), or key by key in Go.
		if vec.WeightedRows(oh, ph, vc[lo*d.KVDim+g*d.Dh:], d.Dh, d.KVDim) {
			continue
		}
		clear(oh)
		for j := lo; j < hi; j++ {
			axpy(oh, ph[j-lo], vc[j*d.KVDim+g*d.Dh:j*d.KVDim+(g+1)*d.Dh])
		}
	}
}

// mixHeads sets dst[h] = Σ_h' w[h,h']·src[h'] for rows of length span: a head at a time
// on vector lanes (vec), else in Go.
func mixHeads(dst, src, w []float32, heads, span int) {
	if vec.WeightedRowsHeads(dst, w, src, heads, heads, heads, span, span, span, heads, 0) {
		return
	}
	for h := 0; h < heads; h++ {
		if vec.WeightedRows(dst[h*span:(h+1)*span], w[h*heads:(h+1)*heads], src, span, span) {
			continue
		}
		clear(dst[h*span : (h+1)*span])
		for g := 0; g < heads; g++ {
			axpy(dst[h*span:(h+1)*span], w[h*heads+g], src[g*span:(g+1)*span])
		}
	}
}
