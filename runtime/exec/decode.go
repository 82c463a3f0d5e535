package exec

import (
	"fmt"
	"math"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/runtime/blas"
)

// Decode runs a decoding step program (step.LowerDecode) with every sequence at
// position pos: tokens[i] joins sequence i, and the next-token logits of every sequence
// come back ([batch, vocab], reused by the next call). The KV caches are the program's
// persistent buffers.
func (e *Executor) Decode(tokens []int32, pos int) ([]float32, error) {
	at := e.named("pos")
	if at < 0 {
		return nil, fmt.Errorf("exec: program %s is not a decoding step", e.p.Model)
	}
	for i := range e.i32[at] {
		e.i32[at][i] = int32(pos)
	}
	return e.decode(tokens, at)
}

// DecodeAt is Decode with sequence i at position pos[i]: each sequence attends to the
// cached positions [0, pos[i]] (a prefill of prompts of different lengths leaves each
// sequence at its own position).
func (e *Executor) DecodeAt(tokens []int32, pos []int) ([]float32, error) {
	at := e.named("pos")
	if at < 0 {
		return nil, fmt.Errorf("exec: program %s is not a decoding step", e.p.Model)
	}
	if len(pos) != len(e.i32[at]) {
		return nil, fmt.Errorf("exec: %d positions for %d sequences", len(pos), len(e.i32[at]))
	}
	for i, p := range pos {
		e.i32[at][i] = int32(p)
	}
	return e.decode(tokens, at)
}

func (e *Executor) decode(tokens []int32, at int) ([]float32, error) {
	p := e.p
	tok, logits := e.named("tokens@0"), e.named("logits@0")
	if tok < 0 || logits < 0 && p.Coord.PP == p.Layout.PP-1 {
		return nil, fmt.Errorf("exec: program %s is not a decoding step", p.Model)
	}
	if len(tokens) != p.Batch.MicroBatch {
		return nil, fmt.Errorf("exec: %d tokens for %d sequences", len(tokens), p.Batch.MicroBatch)
	}
	maxLen := e.p.Buffers[e.named(fmt.Sprintf("L%d.k_cache", p.FirstLayer))].Shape[1]
	for i, pos := range e.i32[at] {
		if pos < 0 || int(pos) >= maxLen || e.d.MaxPos > 0 && int(pos) >= e.d.MaxPos {
			return nil, fmt.Errorf("exec: position %d of sequence %d outside the cache of %d positions", pos, i, maxLen)
		}
	}
	if err := e.checkTokens(tokens); err != nil {
		return nil, err
	}
	copy(e.i32[tok], tokens) // nil on a later pipeline stage, which embeds nothing
	return e.runInference(logits)
}

// Prefill runs a prefill program (step.LowerPrefill): prompts[i], of 1 to the program's
// prompt positions, fills sequence i's KV caches from position 0, and the logits of each
// prompt's last position come back ([batch, vocab], reused by the next call). Shorter
// prompts are padded at the end: causal attention keeps the padding out of every real
// position, and decoding sequence i goes on at position len(prompts[i]), overwriting it.
func (e *Executor) Prefill(prompts [][]int32) ([]float32, error) {
	p := e.p
	tok, lengths, logits := e.named("tokens@0"), e.named("lengths"), e.named("logits@0")
	if tok < 0 || lengths < 0 || logits < 0 && p.Coord.PP == p.Layout.PP-1 {
		return nil, fmt.Errorf("exec: program %s is not a prefill", p.Model)
	}
	// Under pipeline parallelism the first stage alone reads the tokens, the last alone
	// the lengths: a stage's unread input has no place in its arena.
	toks, lens := e.i32[tok], e.i32[lengths]
	B, T := p.Batch.MicroBatch, p.Batch.SeqLen
	if len(prompts) != B {
		return nil, fmt.Errorf("exec: %d prompts for a prefill of %d sequences", len(prompts), B)
	}
	clear(toks)
	for i, pr := range prompts {
		if len(pr) < 1 || len(pr) > T {
			return nil, fmt.Errorf("exec: prompt %d has %d tokens, the prefill takes 1 to %d", i, len(pr), T)
		}
		if err := e.checkTokens(pr); err != nil {
			return nil, err
		}
		if toks != nil {
			copy(toks[i*T:], pr)
		}
		if lens != nil {
			lens[i] = int32(len(pr))
		}
	}
	return e.runInference(logits)
}

func (e *Executor) checkTokens(tokens []int32) error {
	for i, t := range tokens {
		if t < 0 || int(t) >= e.d.V {
			return fmt.Errorf("exec: token %d at %d outside the vocabulary of %d", t, i, e.d.V)
		}
	}
	return nil
}

// runInference runs an inference program and returns its logits: nil on a pipeline stage
// before the last, which sends its hidden states on instead.
func (e *Executor) runInference(logits int) ([]float32, error) {
	for i := range e.p.Ops {
		if err := e.run(&e.p.Ops[i]); err != nil {
			return nil, fmt.Errorf("exec: rank %d op %d (%s): %w", e.p.Rank, i, e.p.Ops[i].Kind, err)
		}
	}
	if logits < 0 {
		return nil, nil
	}
	return e.f32[logits], nil
}

// NewSharing is New for a program whose persistent buffers (weights, KV caches) are
// base's of the same name: a prefill program shares its decoding program's weights and
// fills the caches the decoding steps read. Weights are loaded into base alone. An
// inference program's memory plan puts the persistent buffers below the rest
// (step.LowerInference), so only the arena above them is allocated.
func NewSharing(p *step.Program, m *program.Model, comm Comm, base *Executor) (*Executor, error) {
	var shared int64
	for _, b := range p.Buffers {
		if b.Kind.Persistent() {
			shared = max(shared, b.Offset+b.Bytes())
		}
	}
	shared = (shared + 63) / 64 * 64 // the arena's alignment, on which the rest begins
	own := *p
	own.Buffers = make([]*step.Buffer, len(p.Buffers))
	own.Memory.Lifetime = append([][2]int(nil), p.Memory.Lifetime...)
	own.Memory.Arena[step.Device] -= shared
	for i, b := range p.Buffers {
		c := *b
		own.Buffers[i] = &c
		switch {
		case b.Kind.Persistent():
			own.Memory.Lifetime[i] = [2]int{-1, -1} // not in this executor's arena
		case b.Tier == step.Device && own.Memory.Lifetime[i][0] >= 0:
			if b.Offset < shared {
				return nil, fmt.Errorf("exec: %s's buffer %s lies among the shared persistent buffers", p.Model, b.Name)
			}
			c.Offset -= shared
		}
	}
	e, err := New(&own, m, comm)
	if err != nil {
		return nil, err
	}
	for i, b := range p.Buffers {
		if !b.Kind.Persistent() || p.Memory.Lifetime[i][0] < 0 {
			continue
		}
		j := base.named(b.Name)
		if j < 0 || base.p.Buffers[j].Elements() != b.Elements() || base.f32[j] == nil {
			return nil, fmt.Errorf("exec: %s has no buffer %s %v to share", base.p.Model, b.Name, b.Shape)
		}
		e.f32[i] = base.f32[j]
	}
	return e, nil
}

func (e *Executor) named(name string) int {
	for i, b := range e.p.Buffers {
		if b.Name == name {
			return i
		}
	}
	return -1
}

// rotaryAt rotates sequence i's query and key rows by its position pos[i].
func (e *Executor) rotaryAt(q, k []float32, pos []int32) {
	half, dh := e.d.Dh/2, e.d.Dh
	for _, p := range pos {
		if (int(p)+1)*half > len(e.cos) {
			e.growRope(int(p) + 1)
		}
	}
	for _, x := range [][]float32{q, k} {
		n := len(x) / len(pos)
		for i, p := range pos {
			cs, sn := e.cos[int(p)*half:(int(p)+1)*half], e.sin[int(p)*half:(int(p)+1)*half]
			row := x[i*n : (i+1)*n]
			for h := 0; h < n/dh; h++ {
				v := row[h*dh : (h+1)*dh]
				for j := 0; j < half; j++ {
					c, s := float32(cs[j]), float32(sn[j])
					a, b := v[j], v[j+half]
					v[j] = a*c - b*s
					v[j+half] = b*c + a*s
				}
			}
		}
	}
}

// growRope extends the rotary tables to n positions.
func (e *Kernels) growRope(n int) {
	from := len(e.cos) / (e.d.Dh / 2)
	if n <= from {
		return
	}
	cos, sin := e.m.RopeTable(e.d.Dh, from, n)
	e.cos, e.sin = append(e.cos, cos...), append(e.sin, sin...)
}

// kvAppend writes each sequence's key and value row at its position in the caches.
func (e *Executor) kvAppend(op *step.Op) {
	k, pos, kc := e.f32[op.In[0]], e.i32[op.In[len(op.In)-1]], e.f32[op.Out[0]]
	var v, vc []float32 // none where a layer caches its own keys alone (qk_norm_after_rope)
	if len(op.Out) > 1 {
		v, vc = e.f32[op.In[1]], e.f32[op.Out[1]]
	}
	sh := e.p.Buffers[op.Out[0]].Shape // [batch, maxLen, local KV·Dh]
	maxLen, w := sh[1], sh[2]
	for i := 0; i < sh[0]; i++ {
		at := (i*maxLen + int(pos[i])) * w
		copy(kc[at:at+w], k[i*w:(i+1)*w])
		if vc != nil {
			copy(vc[at:at+w], v[i*w:(i+1)*w])
		}
	}
}

// kvWrite writes every prompt position's key and value rows to the caches' positions
// 0..T−1.
func (e *Executor) kvWrite(op *step.Op) {
	k, kc := e.f32[op.In[0]], e.f32[op.Out[0]]
	var v, vc []float32 // none where a layer caches its own keys alone (qk_norm_after_rope)
	if len(op.Out) > 1 {
		v, vc = e.f32[op.In[1]], e.f32[op.Out[1]]
	}
	sh := e.p.Buffers[op.Out[0]].Shape
	maxLen, w, T := sh[1], sh[2], e.p.Batch.SeqLen
	for i := 0; i < sh[0]; i++ {
		copy(kc[i*maxLen*w:(i*maxLen+T)*w], k[i*T*w:(i+1)*T*w])
		if vc != nil {
			copy(vc[i*maxLen*w:(i*maxLen+T)*w], v[i*T*w:(i+1)*T*w])
		}
	}
}

// lastRows copies each sequence's row at its last prompt position.
func (e *Executor) lastRows(op *step.Op) {
	x, lengths, y := e.f32[op.In[0]], e.i32[op.In[1]], e.f32[op.Out[0]]
	T := e.p.Batch.SeqLen
	w := len(y) / len(lengths)
	for i, n := range lengths {
		r := i*T + int(n) - 1
		copy(y[i*w:(i+1)*w], x[r*w:(r+1)*w])
	}
}

// gatherVocab assembles the logits from the tp ranks' vocabulary slices: rank r's
// [rows, V/tp] become columns r·V/tp.. of [rows, V].
func (e *Executor) gatherVocab(op *step.Op, members []int, _ int) error {
	vals, err := e.comm.Share(members, e.f32[op.In[0]])
	if err != nil {
		return err
	}
	dst := e.f32[op.Out[0]]
	part := len(e.f32[op.In[0]])
	rows := e.p.Buffers[op.Out[0]].Shape[0]
	w := part / rows
	V := w * len(members)
	for r, v := range vals {
		src := v.([]float32)
		for i := 0; i < rows; i++ {
			copy(dst[i*V+r*w:i*V+(r+1)*w], src[i*w:(i+1)*w])
		}
	}
	return e.comm.Barrier(members)
}

// attnDecode: each sequence's query against its cached keys 0..pos[i], or those of the
// op's mask (per head, with talking-heads mixing around the softmax when the op has the
// mixing weights, and a sink logit per head in its denominator when it has the sinks),
// then the weighted sum of the cached values.
func (e *Executor) attnDecode(op *step.Op) {
	positions := e.i32[op.In[3]]
	for i, p := range positions {
		e.attendRow(op, i, i, int(p))
	}
}

// attendRow is attn_decode's (and attn_rows's) row: query row r against sequence seq's
// cache up to position pos.
func (e *Executor) attendRow(op *step.Op, r, seq, pos int) {
	in := step.AttnInputsOf(op)
	q, kc, vc := e.f32[in.Q], e.f32[in.KCache], e.f32[in.VCache]
	var pre, post, sinks []float32
	if in.Pre >= 0 {
		pre, post = e.f32[in.Pre], e.f32[in.Post]
	}
	if in.Sinks >= 0 {
		sinks = e.f32[in.Sinks]
	}
	out := e.f32[op.Out[0]]
	sh := e.p.Buffers[in.KCache].Shape
	maxLen, kvd := sh[1], sh[2]
	Dh := e.d.Dh
	H := len(out) / (len(e.i32[in.Pos]) * Dh)
	KV := kvd / Dh
	scale := float32(1 / math.Sqrt(float64(Dh)))
	lo, hi := op.Mask.Keys(pos)
	span := hi - lo
	sc := grow(&e.scratch.dst, 2*H*span)
	s, mix := sc[:H*span], sc[H*span:]
	kci, vci := kc[(seq*maxLen+lo)*kvd:], vc[(seq*maxLen+lo)*kvd:]
	for h := 0; h < H; h++ {
		g := h / (H / KV)
		blas.Gemm(false, true, 1, span, Dh, scale, q[r*H*Dh+h*Dh:], Dh, kci[g*Dh:], kvd, 0, s[h*span:], span)
	}
	probs := s
	if pre != nil {
		mixRows(mix, s, pre, H, span)
		probs = mix
	}
	for h := 0; h < H; h++ {
		if sinks != nil {
			softmaxSinkInPlace(probs[h*span:(h+1)*span], sinks[h])
			continue
		}
		softmaxInPlace(probs[h*span : (h+1)*span])
	}
	if post != nil {
		mixRows(s, probs, post, H, span)
		probs = s
	}
	o := out[r*H*Dh : (r+1)*H*Dh]
	for h := 0; h < H; h++ {
		// Σ_j p_j·v_j in Go: one row is too small a product to hand to blas.
		g := h / (H / KV)
		oh := o[h*Dh : (h+1)*Dh]
		clear(oh)
		for j, pj := range probs[h*span : (h+1)*span] {
			for c, v := range vci[j*kvd+g*Dh : j*kvd+(g+1)*Dh] {
				oh[c] += pj * v
			}
		}
	}
}

// mixRows sets dst[h] = Σ_g w[h,g]·src[g] for rows of length span.
func mixRows(dst, src, w []float32, heads, span int) {
	clear(dst[:heads*span])
	for h := 0; h < heads; h++ {
		for g := 0; g < heads; g++ {
			c := w[h*heads+g]
			row, in := dst[h*span:(h+1)*span], src[g*span:(g+1)*span]
			for j, v := range in {
				row[j] += c * v
			}
		}
	}
}

// softmaxInPlace replaces a row by its softmax (the sum in float64).
func softmaxInPlace(row []float32) {
	mx := row[0]
	for _, v := range row {
		mx = max(mx, v)
	}
	var sum float64
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

// filledRowsMM is y = x·wᵀ over R rows of which only the non-zero ones are multiplied, in
// runs of consecutive rows: a zero row's product is zero.
func filledRowsMM(x, w, y []float32, R, o, k int) {
	zero := func(r int) bool {
		for _, v := range x[r*k : (r+1)*k] {
			if v != 0 {
				return false
			}
		}
		return true
	}
	for r := 0; r < R; {
		if zero(r) {
			clear(y[r*o : (r+1)*o])
			r++
			continue
		}
		s := r
		for r < R && !zero(r) {
			r++
		}
		blas.Gemm(false, true, r-s, o, k, 1, x[s*k:], k, w, k, 0, y[s*o:], o)
	}
}
