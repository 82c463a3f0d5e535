package nn

import (
	"fmt"
	"math"
	"runtime"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/runtime/blas"
	"github.com/moec-dev/moec/runtime/internal/vec"
)

// attnBlockRows is how many of one sequence's rows Feed's attention takes in one product:
// it bounds a worker's score scratch (2·H·attnBlockRows·maxLen) and splits a long prompt
// chunk into work items the cores share.
const attnBlockRows = 32

// feedWS holds Feed's activations for up to rows rows: every token one Feed reads, the
// sequences' runs one after another. It is made on first use and grows with the largest
// Feed.
type feedWS struct {
	rows          int
	tok           []int32 // [rows] the rows' tokens
	seqOf, posOf  []int   // [rows] each row's sequence and position
	router        []float32
	x, h, tmp     []float32 // [rows, D]
	hPar          []float32 // [rows, D] the experts' input under parallel_attention, else nil
	xhat, rstd    []float32
	q, k, v, o    []float32 // [rows, H·Dh] / [rows, KV·Dh]
	qkHat, qkRstd []float32
	// The layers' feed-forward workspaces: layers whose networks have the same shape
	// share one, since a Feed runs them one after another and keeps nothing between.
	ffn    []*ffnWS[float32]
	moe    []*moeWS[float32]
	last   []float32 // [batch, D] the last row of each sequence that fed, compact
	lastH  []float32 // [batch, D] it after the final norm
	logits []float32 // [batch, V] compact
	lastOf []int     // sequences whose rows last holds, in order
	items  []feedItem
	scores [][]float32 // per worker: 2·H·attnBlockRows·maxLen
}

// feedItem is one block of a sequence's rows for attention: rows [row, row+n) at positions
// [pos, pos+n) of sequence seq.
type feedItem struct {
	seq, row, pos, n int
}

// Feed writes tokens[i] into sequence i's cache at positions pos[i], pos[i]+1, … and
// returns batch·vocab logits whose row i follows sequence i's last token (the next-token
// logits); a sequence with no tokens sits the step out and its row is left as it was.
// One call reads every sequence's tokens as one batch of rows: the projections, the
// feed-forward networks and the experts are matrix products over all rows, and each row
// attends causally to its sequence's cache, which holds the run's earlier rows. A prompt
// is therefore read in chunks (chunked prefill) while other sequences decode one token in
// the same call, and the logits equal those of feeding the same tokens one StepSlots at a
// time, within float32 rounding. Like StepSlots, the caller tracks positions; the
// returned slice is the one Step returns, reused by the next call.
func (dec *Decoder) Feed(tokens [][]int32, pos []int) ([]float32, error) {
	c, d := dec.c, dec.c.d
	if len(tokens) != dec.batch || len(pos) != dec.batch {
		return nil, fmt.Errorf("nn: decoder feed got %d token runs and %d positions for %d sequences", len(tokens), len(pos), dec.batch)
	}
	rows := 0
	for i, run := range tokens {
		if len(run) == 0 {
			continue
		}
		if p := pos[i]; p < 0 || p+len(run) > dec.maxLen {
			return nil, fmt.Errorf("nn: sequence %d's %d tokens at position %d pass the decoder's %d positions", i, len(run), p, dec.maxLen)
		}
		if end := pos[i] + len(run); d.MaxPos > 0 && end > d.MaxPos {
			return nil, fmt.Errorf("nn: position %d of sequence %d exceeds the %d learned positions", end-1, i, d.MaxPos)
		}
		for _, t := range run {
			if t < 0 || int64(t) >= c.cfg.Vocab {
				return nil, fmt.Errorf("nn: token %d of sequence %d is outside the vocabulary [0, %d)", t, i, c.cfg.Vocab)
			}
		}
		rows += len(run)
	}
	if rows == 0 {
		return dec.logits, nil
	}
	f := dec.feedFor(rows)
	f.items = f.items[:0]
	r := 0
	for i, run := range tokens {
		for at := 0; at < len(run); at += attnBlockRows {
			f.items = append(f.items, feedItem{seq: i, row: r + at, pos: pos[i] + at, n: min(attnBlockRows, len(run)-at)})
		}
		for j, t := range run {
			f.tok[r], f.seqOf[r], f.posOf[r] = t, i, pos[i]+j
			r++
		}
	}
	dec.feedLayers(f, rows)
	return dec.feedLogits(f, tokens, rows), nil
}

// feedLayers runs every layer over the rows of f, writing their keys and values into the
// cache.
func (dec *Decoder) feedLayers(f *feedWS, n int) {
	c, d := dec.c, dec.c.d
	tok := f.tok[:n]
	if c.routerEmbed != nil {
		c.gatherRouterRows(f.router, tok)
	}
	x, h, tmp := f.x[:n*d.D], f.h[:n*d.D], f.tmp[:n*d.D]
	for r, id := range tok {
		c.embedRow(x[r*d.D:(r+1)*d.D], int(id))
		if c.pos != nil {
			p := f.posOf[r]
			axpy(x[r*d.D:(r+1)*d.D], 1, c.pos.w[p*d.D:(p+1)*d.D])
		}
	}
	ln := c.cfg.Norm == program.LayerNorm
	sandwich := isSandwich(c.cfg)
	eps := d.NormEps
	workers := runtime.GOMAXPROCS(0)
	for len(f.scores) < workers {
		f.scores = append(f.scores, nil)
	}
	for li, l := range c.layers {
		moeIn := h
		if l.normR != nil {
			// parallel_attention (parallel.go): the experts read the layer's input.
			sublayerIn(f.hPar[:n*d.D], f.xhat, f.rstd, x, n, d.D, l.norm2, l.norm2b, ln, eps)
			moeIn = f.hPar[:n*d.D]
		}
		sublayerIn(h, f.xhat, f.rstd, x, n, d.D, l.norm1, l.norm1b, ln, eps)
		attnOut := f.o[:n*d.QDim]
		if l.mla != nil { // mla_decode.go
			attnOut = dec.mlaAttend(l, li, h, n, func(r int) int { return f.seqOf[r] }, func(r int) int { return f.posOf[r] })
		} else {
			dec.feedAttention(f, l, li, n)
		}
		target := sublayerTarget(sandwich, l.postA, x, tmp)
		linear(target, attnOut, n, l.attn.o, l.attn.ob, true)
		sublayerOut(sandwich, x, tmp, f.xhat, f.rstd, n, d.D, l.postA, l.postAb, ln, eps)
		if l.normR != nil {
			sublayerIn(h, f.xhat, f.rstd, x, n, d.D, l.normR, l.normRb, ln, eps)
		} else {
			sublayerIn(h, f.xhat, f.rstd, x, n, d.D, l.norm2, l.norm2b, ln, eps)
		}
		target = sublayerTarget(sandwich, l.postF, x, tmp)
		if l.moe != nil {
			c.moeForward(l.moe, f.moe[li], moeIn, tok, target, n, routeOptions{dropless: true})
		}
		if l.dense != nil {
			ffnForward(l.dense, f.ffn[li], h, target, n)
		}
		sublayerOut(sandwich, x, tmp, f.xhat, f.rstd, n, d.D, l.postF, l.postFb, ln, eps)
	}
}

// feedAttention computes layer li's attention output of f's n rows into f.o: their
// queries, keys and values (written into the cache), then each block of rows' attention.
func (dec *Decoder) feedAttention(f *feedWS, l *layer[float32], li, n int) {
	c, d := dec.c, dec.c.d
	eps := d.NormEps
	q, k, v := f.q[:n*d.QDim], f.k[:n*d.KVDim], f.v[:n*d.KVDim]
	h := f.h[:n*d.D]
	owns := l.kvOwner == li
	after := c.normsAfterRope()
	linear(q, h, n, l.attn.q, l.attn.qb, false)
	if l.attn.qNorm != nil && !after {
		c.qkNormFwd(q, f.qkHat, f.qkRstd, n, d.H, l.attn.qNorm, eps)
	}
	if clip := c.cfg.Attention.ClipQKV; clip > 0 {
		clipFwd(q, nil, clip) // clip.go
	}
	if owns {
		linear(k, h, n, l.attn.k, l.attn.kb, false)
		linear(v, h, n, l.attn.v, l.attn.vb, false)
		if l.attn.kNorm != nil && !after {
			c.qkNormFwd(k, f.qkHat, f.qkRstd, n, d.KV, l.attn.kNorm, eps)
		}
		if clip := c.cfg.Attention.ClipQKV; clip > 0 {
			clipFwd(k, nil, clip)
			clipFwd(v, nil, clip)
		}
	}
	for r := 0; r < n; r++ { // decode_rules.go
		p := f.posOf[r]
		dec.positionRow(l, li, q[r*d.QDim:(r+1)*d.QDim], k[r*d.KVDim:(r+1)*d.KVDim], v[r*d.KVDim:(r+1)*d.KVDim],
			f.seqOf[r]*dec.maxLen+p, p, f.qkHat, f.qkRstd)
	}
	parallel(len(f.items), func(w, lo, hi int) {
		for _, it := range f.items[lo:hi] {
			dec.attendBlock(f, l, li, it, w)
		}
	})
}

// feedLogits computes the logits of each sequence's last row (only those: a prompt chunk's
// earlier rows need none) and places them in the decoder's [batch, V] logits.
func (dec *Decoder) feedLogits(f *feedWS, tokens [][]int32, n int) []float32 {
	c, d := dec.c, dec.c.d
	f.lastOf = f.lastOf[:0]
	r := 0
	for i, run := range tokens {
		if len(run) == 0 {
			continue
		}
		r += len(run)
		m := len(f.lastOf)
		copy(f.last[m*d.D:(m+1)*d.D], f.x[(r-1)*d.D:r*d.D])
		f.lastOf = append(f.lastOf, i)
	}
	m := len(f.lastOf)
	hF := f.last[:m*d.D]
	if c.normF != nil {
		normFwd(f.lastH, f.xhat, f.rstd, hF, m, d.D, c.normF, c.normFb, c.cfg.Norm == program.LayerNorm, d.NormEps)
		hF = f.lastH[:m*d.D]
	}
	head := c.head
	if head == nil {
		head = c.embed
	}
	linear(f.logits[:m*d.V], hF, m, head, c.headB, false)
	for j, i := range f.lastOf {
		copy(dec.logits[i*d.V:(i+1)*d.V], f.logits[j*d.V:(j+1)*d.V])
	}
	return dec.logits
}

// attendBlock computes the attention output of one block of a sequence's rows from the
// cache: per head one product of the block's queries with the keys the block can see,
// a causal (and windowed) softmax per row, and one product with the values. A block of one
// row is a decoding step, computed as Step computes it.
func (dec *Decoder) attendBlock(f *feedWS, l *layer[float32], li int, it feedItem, worker int) {
	d := dec.c.d
	lo, _ := l.keyRange(it.pos) // the block's first row sees the earliest keys
	hi := it.pos + it.n
	span := hi - lo
	cells := it.n * span
	need := 2 * d.H * cells
	if len(f.scores[worker]) < need {
		f.scores[worker] = make([]float32, 2*d.H*attnBlockRows*dec.maxLen)
	}
	sc := f.scores[worker][:d.H*cells]
	mix := f.scores[worker][d.H*cells : need]
	scale := float32(1 / math.Sqrt(float64(d.Dh)))
	base := it.seq * dec.maxLen * d.KVDim
	kc, vc := dec.kc[li][base:], dec.vc[li][base:]
	q := f.q[it.row*d.QDim:]
	for h := 0; h < d.H; h++ {
		g := h / d.HeadsPerKV
		blas.Gemm(false, true, it.n, span, d.Dh, scale, q[h*d.Dh:], d.QDim,
			kc[lo*d.KVDim+g*d.Dh:], d.KVDim, 0, sc[h*cells:], span)
	}
	probs := sc
	if l.attn.thPre != nil {
		mixHeads(mix, sc, l.attn.thPre.w, d.H, cells)
		probs = mix
	}
	for h := 0; h < d.H; h++ {
		var sink float32
		if l.attn.sinks != nil {
			sink = l.attn.sinks.w[h]
		}
		for j := 0; j < it.n; j++ {
			rlo, rhi := l.keyRange(it.pos + j)
			softmaxRowSink(probs[h*cells+j*span:h*cells+(j+1)*span], rlo-lo, rhi-lo, l.attn.sinks != nil, sink)
		}
	}
	if l.attn.thPost != nil {
		mixHeads(sc, probs, l.attn.thPost.w, d.H, cells)
		probs = sc
	}
	o := f.o[it.row*d.QDim:]
	for h := 0; h < d.H; h++ {
		g := h / d.HeadsPerKV
		ph := probs[h*cells : (h+1)*cells]
		if it.n == 1 {
			oh := o[h*d.Dh : (h+1)*d.Dh]
			if vec.WeightedRows(oh, ph, vc[lo*d.KVDim+g*d.Dh:], d.Dh, d.KVDim) {
				continue
			}
			clear(oh)
			for j := lo; j < hi; j++ {
				axpy(oh, ph[j-lo], vc[j*d.KVDim+g*d.Dh:j*d.KVDim+(g+1)*d.Dh])
			}
			continue
		}
		blas.Gemm(false, false, it.n, d.Dh, span, 1, ph, span, vc[lo*d.KVDim+g*d.Dh:], d.KVDim,
			0, o[h*d.Dh:], d.QDim)
	}
}

// ReserveFeed makes room for Feeds of up to rows tokens in all, so that the first long
// Feed does not allocate (a server reserves its largest step when it starts).
func (dec *Decoder) ReserveFeed(rows int) { dec.feedFor(max(rows, 1)) }

// feedFor returns the feed workspace, grown to hold at least rows rows.
func (dec *Decoder) feedFor(rows int) *feedWS {
	if f := dec.feed; f != nil && f.rows >= rows {
		return f
	}
	c, d := dec.c, dec.c.d
	f := &feedWS{rows: rows, tok: make([]int32, rows), seqOf: make([]int, rows), posOf: make([]int, rows),
		x: make([]float32, rows*d.D), h: make([]float32, rows*d.D), tmp: make([]float32, rows*d.D),
		xhat: make([]float32, rows*d.D), rstd: make([]float32, max(rows, dec.batch)),
		q: make([]float32, rows*d.QDim), k: make([]float32, rows*d.KVDim), v: make([]float32, rows*d.KVDim),
		o: make([]float32, rows*d.QDim), last: make([]float32, dec.batch*d.D), lastH: make([]float32, dec.batch*d.D),
		logits: make([]float32, dec.batch*d.V)}
	if dec.feed != nil {
		f.scores = dec.feed.scores
	}
	if c.routerEmbed != nil {
		f.router = make([]float32, rows*d.RouterIn)
	}
	if m := c.cfg.MoE; m != nil && m.ParallelAttention {
		f.hPar = make([]float32, rows*d.D)
	}
	if c.cfg.Attention.QKNorm || c.cfg.Attention.QKL2Norm {
		f.qkHat, f.qkRstd = make([]float32, rows*d.QDim), make([]float32, rows*d.H)
	}
	var moeShared map[int]*moeWS[float32]
	ffnShared := map[ffnShape]*ffnWS[float32]{}
	for _, l := range c.layers {
		var mw *moeWS[float32]
		var fw *ffnWS[float32]
		if l.moe != nil {
			// newMoEWS sizes its buffers by the model's dims and the layer's shared experts.
			if moeShared == nil {
				moeShared = map[int]*moeWS[float32]{}
			}
			if mw = moeShared[len(l.moe.shared)]; mw == nil {
				mw = newMoEWS(d, l.moe, rows)
				mw.rows = f.router
				moeShared[len(l.moe.shared)] = mw
			}
		}
		if l.dense != nil {
			key := ffnShape{hidden: l.dense.hidden, gated: l.dense.up != nil}
			if fw = ffnShared[key]; fw == nil {
				fw = newFFNWS(l.dense, rows)
				ffnShared[key] = fw
			}
		}
		markInference(mw, fw)
		f.moe, f.ffn = append(f.moe, mw), append(f.ffn, fw)
	}
	dec.feed = f
	return f
}

// ffnShape is what an ffnWS's size depends on.
type ffnShape struct {
	hidden int
	gated  bool
}

// Prefill starts a one-sequence decoder over and reads tokens in one Feed (a chunked
// prefill of a single chunk): it returns the logits that follow the last token, and the
// next Step continues after it. generate.Generate reads a prompt this way.
func (dec *Decoder) Prefill(tokens []int32) ([]float32, error) {
	if dec.batch != 1 {
		return nil, fmt.Errorf("nn: Prefill reads one sequence; this decoder holds %d (use Feed)", dec.batch)
	}
	if len(tokens) == 0 {
		return nil, fmt.Errorf("nn: Prefill of no tokens")
	}
	dec.pos = 0
	logits, err := dec.Feed([][]int32{tokens}, []int{0})
	if err != nil {
		return nil, err
	}
	dec.pos = len(tokens)
	return logits, nil
}
