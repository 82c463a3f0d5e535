package step

import (
	"fmt"

	"github.com/moec-dev/moec/compiler/params"
	"github.com/moec-dev/moec/compiler/program"
)

// Inference ops (beside OpRotaryAt, OpKVAppend and OpAttnDecode).
const (
	OpKVWrite  OpKind = "kv_write"  // prefill: every prompt position's keys and values into the cache
	OpLastRows OpKind = "last_rows" // prefill: each sequence's row at its last prompt position
)

// AttrSkipEmptySlots marks a grouped product that computes only the dispatch slots a
// token filled: dropless routing sizes every expert for the worst case, so most slots of
// an inference step are empty (zero rows, whose product is the bias alone).
const AttrSkipEmptySlots = "filled slots only"

// AttrGatherVocab marks the all-gather of a vocabulary-parallel head's logits over tp.
const AttrGatherVocab = "logits over the vocabulary"

// Inference is what an inference program computes on each data-parallel replica: Batch
// sequences whose keys and values live in per-layer caches of MaxLen positions. With
// Prompt > 0 it is the prefill of prompts of up to Prompt positions; with Prompt 0, one
// decoding step.
type Inference struct {
	Batch, Prompt, MaxLen int
}

// LowerDecode builds the program of one decoding step on one rank: batch sequences each
// take one token (input `tokens`) at their own position (input `pos`, one per sequence),
// their keys and values join per-layer caches of maxLen positions (KindCache, kept from
// step to step), every layer attends over its cache, and the step ends with the
// next-token logits (`logits`, [batch, vocab]). As runtime/nn's Decoder, it always
// recomputes the attention weights (no sharing) and routes without a capacity limit.
func LowerDecode(m *program.Model, batch, maxLen int) (*Program, error) {
	ps, err := LowerInference(m, Inference{Batch: batch, MaxLen: maxLen}, Layout{DP: 1, EP: 1, TP: 1, PP: 1})
	if err != nil {
		return nil, err
	}
	return ps[0], nil
}

// LowerPrefill builds the prefill program on one rank: batch prompts of up to prompt
// positions (input `tokens`, [batch·prompt], each prompt from position 0, right-padded;
// input `lengths`, each prompt's length) run the forward with causal attention, every
// layer's keys and values are written to the caches LowerDecode's program reads (the
// same names and shapes), and the program ends with the logits of each prompt's last
// position (`logits`, [batch, vocab]). No backward, no loss; dropless routing.
func LowerPrefill(m *program.Model, batch, prompt, maxLen int) (*Program, error) {
	ps, err := LowerInference(m, Inference{Batch: batch, Prompt: prompt, MaxLen: maxLen}, Layout{DP: 1, EP: 1, TP: 1, PP: 1})
	if err != nil {
		return nil, err
	}
	return ps[0], nil
}

// LowerInference builds the prefill or decoding programs of every rank of l. Tensor
// parallelism splits the heads (and so the KV caches), the FFN and expert widths and the
// vocabulary as training does, with the row-parallel all-reduces, and all-gathers the
// vocabulary-parallel logits; expert parallelism (ep = dp: each replica decodes its own
// sequences) exchanges the routed tokens by all-to-all; pipeline parallelism gives each
// stage its layers and their caches, the first stage the embedding, the last the head:
// the hidden states go from stage to stage by send and receive, and only the last
// stage's programs have logits. A layout that does not divide the model is a
// *LayoutError (E0509/E0510, see Diagnose).
func LowerInference(m *program.Model, in Inference, l Layout) ([]*Program, error) {
	if in.Batch < 1 || in.MaxLen < 1 || in.Prompt < 0 || in.Prompt > in.MaxLen {
		return nil, fmt.Errorf("step: inference of %d sequences of %d positions (prompt %d)", in.Batch, in.MaxLen, in.Prompt)
	}
	if l.ZeRO != 0 || l.OffloadOpt || l.Cache.On() {
		return nil, fmt.Errorf("step: inference runs no ZeRO, offload or unified cache (layout %s): the weights are read every step, whole", l)
	}
	dm := *m
	dm.Attention.ShareWeights = 1 // inference always recomputes
	if m.MoE != nil {
		moe := *m.MoE
		moe.CapacityFactor = 0 // and routes dropless
		dm.MoE = &moe
	}
	b := Batch{MicroBatch: in.Batch, SeqLen: max(in.Prompt, 1), Micro: 1}
	l, d, walk, err := prepare(&dm, b, l)
	if err != nil {
		return nil, err
	}
	if in.Prompt > 0 && d.MaxPos > 0 && in.Prompt > d.MaxPos {
		return nil, fmt.Errorf("step: a prompt of %d positions exceeds the %d learned positions", in.Prompt, d.MaxPos)
	}
	out := make([]*Program, l.World())
	for r := range out {
		lw := newLowerer(&dm, d, b, l, r, walk)
		if d.E > 0 {
			lw.capacity = b.Tokens() * d.K // dropless
			lw.packed = packs(0, l.EP)
		}
		lw.declareInference()
		lw.micro, lw.phase = 0, Forward
		lw.inferStep(in.MaxLen, in.Prompt > 0)
		lw.p.Memory = planInference(lw.p)
		out[r] = lw.p
	}
	return out, nil
}

// declareInference adds the weights alone: no gradients, no optimizer states.
func (lw *lowerer) declareInference() {
	lw.groups = []group{{name: "dense", axis: "dp", size: 1, paramShard: -1, gradShard: -1}}
	for _, p := range lw.walk {
		ok, shape, shard := lw.holds(p)
		if !ok {
			continue
		}
		key := p.ID
		id := key
		id.Shard = shard
		lw.order = append(lw.order, key)
		lw.shapes[key] = shape
		lw.param[key] = lw.buf(id.String(), KindParam, shape...)
		lw.paramOfBuf[lw.param[key]] = key
		pid := id
		lw.p.Buffers[lw.param[key]].Param = &pid
	}
}

// inferStep emits a prefill (the whole prompt) or one decoding step (one token per
// sequence at its position).
func (lw *lowerer) inferStep(maxLen int, prefill bool) {
	d, B, T := lw.d, lw.b.MicroBatch, lw.b.SeqLen
	n := B * T
	tokens := lw.intAct("tokens", n)
	where := "pos" // decoding: each sequence's position
	if prefill {
		where = "lengths" // prefill: each prompt's length
	}
	at := lw.buf(where, KindInput, B)
	lw.p.Buffers[at].Int = true
	first, last := lw.c.PP == 0, lw.c.PP == lw.l.PP-1
	layers := lw.p.FirstLayer + lw.p.LayerCount
	var x int
	rows := -1
	if first {
		x, rows = lw.inferEmbed(tokens, at, prefill)
	} else {
		x = lw.act("x_in", KindComm, n, d.D)
		lw.emit(Op{Kind: OpRecv, Phase: Forward, Layer: lw.p.FirstLayer, Out: []int{x}, Peer: lw.peer(lw.c.PP - 1), Group: "pp",
			Attr: "hidden states", Bytes: lw.p.Buffers[x].Bytes()})
		rows = lw.inferRouterRows(tokens) // a later stage's copy of the router table (router_table.go)
	}
	for l := lw.p.FirstLayer; l < layers; l++ {
		x = lw.inferLayer(l, x, rows, at, maxLen, prefill)
	}
	if !last {
		lw.emit(Op{Kind: OpSend, Phase: Forward, Layer: layers - 1, In: []int{x}, Peer: lw.peer(lw.c.PP + 1), Group: "pp",
			Attr: "hidden states", Bytes: lw.p.Buffers[x].Bytes()})
		return
	}
	lw.inferHead(lw.pickRows(x), at, prefill) // feed.go: a feeding program's last rows
}

// inferEmbed emits the first stage's embedding of the tokens (and their positions, and
// the router's table rows); rows is -1 without a router table.
func (lw *lowerer) inferEmbed(tokens, at int, prefill bool) (x, rows int) {
	d, n := lw.d, lw.b.Tokens()
	x = lw.act("x0", KindActivation, n, d.D)
	attr, embedRows := "", RowsOfTokens
	if lw.l.TP > 1 {
		attr, embedRows = "vocab-parallel", RowsOfVocabParallel
	}
	lw.fwd(Op{Kind: OpEmbed, Layer: -1, In: []int{tokens, lw.w(params.ID{Role: params.RoleEmbed, Layer: -1, Expert: -1})}, Out: []int{x}, Attr: attr, Rows: embedRows})
	lw.reduceTP(x, -1)
	if d.MaxPos > 0 {
		pe := lw.act("pos_embed", KindActivation, n, d.D)
		table := lw.w(params.ID{Role: params.RolePositions, Layer: -1, Expert: -1})
		if prefill {
			lw.fwd(Op{Kind: OpEmbed, Layer: -1, In: []int{tokens, table}, Out: []int{pe}, Attr: "positions", Rows: RowsOfPositions})
		} else {
			lw.fwd(Op{Kind: OpEmbed, Layer: -1, In: []int{at, table}, Out: []int{pe}, Attr: "position_at", Rows: RowsAtPosition})
		}
		x = lw.add("x0+pos", x, pe, -1)
	}
	return x, lw.inferRouterRows(tokens)
}

// inferRouterRows emits the lookup of the tokens' rows of the router table (-1 where this
// rank holds none).
func (lw *lowerer) inferRouterRows(tokens int) int {
	id := routerTable()
	if !lw.has(id) {
		return -1
	}
	rows := lw.act("router_rows", KindActivation, lw.b.Tokens(), lw.d.RouterIn)
	lw.fwd(Op{Kind: OpEmbed, Layer: -1, In: []int{tokens, lw.w(id)}, Out: []int{rows}, Attr: "router table"})
	return rows
}

// inferLayer emits decoder layer l of a prefill or a decoding step over x.
func (lw *lowerer) inferLayer(l, x, rows, at, maxLen int, prefill bool) int {
	B, T := lw.b.MicroBatch, lw.b.SeqLen
	n := B * T
	id := func(r params.Role) params.ID { return params.ID{Role: r, Layer: l, Expert: -1} }
	pre := fmt.Sprintf("L%d.", l)
	beside := lw.expertsBesideAttention(l) // moe.parallel_attention (moe_variants.go)
	hExperts := -1
	if beside {
		hExperts = lw.norm(pre+"ffn_in", x, params.RolePostAttnNorm, l)
	}
	h := lw.inferAttnIn(l, x) // placement.go
	rotaryAt := at
	if prefill {
		rotaryAt = -1
	}
	if lw.m.Attention.LatentAttention() {
		return lw.inferAfterAttention(l, x, rows, hExperts, lw.mlaInfer(l, h, at, maxLen, prefill)) // mla.go
	}
	q, k, v := lw.qkv(l, h, rotaryAt, false, "") // attention_qk.go
	// A layer sharing its group's K/V reads the owner's caches; with the q/k norms after
	// rotary positions it caches its own normed keys (attention_qk.go).
	owns, ownKeys := lw.ownsKV(l), lw.ownsKV(l) || lw.normsAfterRope()
	if owns {
		lw.kvShared.kCache = lw.buf(pre+"k_cache", KindCache, lw.cacheSeqs(), maxLen, lw.kvDimLocal)
		lw.kvShared.vCache = lw.buf(pre+"v_cache", KindCache, lw.cacheSeqs(), maxLen, lw.kvDimLocal)
	}
	kc, vc := lw.kvShared.kCache, lw.kvShared.vCache
	if ownKeys && !owns {
		kc = lw.buf(pre+"k_cache", KindCache, lw.cacheSeqs(), maxLen, lw.kvDimLocal)
	}
	// What the layer writes: its keys and values, or its own keys alone.
	ins, outs := []int{k, v}, []int{kc, vc}
	var a int
	if prefill {
		q, k = lw.qkVariants(l, q, k, -1, false, "") // attention.go
		ins[0] = k
		if !owns {
			ins, outs = ins[:1], outs[:1]
		}
		if ownKeys {
			lw.fwd(Op{Kind: OpKVWrite, Layer: l, In: ins, Out: outs, Attr: fmt.Sprintf("positions 0..%d", T-1)})
		}
		a = lw.causalAttention(l, q, k, v)
	} else {
		q, k = lw.qkVariants(l, q, k, at, false, "") // attention.go
		ins[0] = k
		if !owns {
			ins, outs = ins[:1], outs[:1]
		}
		if ownKeys {
			lw.fwd(lw.rowsOp(Op{Kind: OpKVAppend, Layer: l, In: append(ins, at), Out: outs})) // feed.go
		}
		// In: the queries, the caches, the positions, then the talking-heads mixers and the
		// sink logits where the model has them.
		in := []int{q, kc, vc, at}
		if lw.m.Attention.TalkingHeads {
			in = append(in, lw.w(id(params.RoleTalkingPre)), lw.w(id(params.RoleTalkingPost)))
		}
		mask := lw.maskOf(l)
		attr := ""
		if !mask.Causal() {
			attr = mask.String()
		}
		if lw.m.Attention.Sinks {
			in = append(in, lw.w(id(params.RoleSinks)))
			attr = join(attr, "sinks")
		}
		a = lw.act(pre+"attn", KindActivation, n, lw.qLocal)
		lw.fwd(lw.rowsOp(Op{Kind: OpAttnDecode, Layer: l, In: in, Out: []int{a}, Mask: mask, Attr: attr, FLOPs: 4 * int64(n) * int64(maxLen) * int64(lw.qLocal)}))
	}
	return lw.inferAfterAttention(l, x, rows, hExperts, a)
}

// inferAfterAttention emits the rest of decoder layer l of a prefill or a decoding step
// from a, its attention before the output projection.
func (lw *lowerer) inferAfterAttention(l, x, rows, hExperts, a int) int {
	d := lw.d
	id := func(r params.Role) params.ID { return params.ID{Role: r, Layer: l, Expert: -1} }
	pre := fmt.Sprintf("L%d.", l)
	beside := hExperts >= 0
	o := lw.matmul(pre+"attn_out", a, id(params.RoleO), l)
	lw.reduceTP(o, l)
	x = lw.attnOut(l, x, o)
	var h2 int
	if beside {
		h2 = hExperts
	} else {
		h2 = lw.inferFFNIn(l, x)
	}
	var y int
	if lw.m.IsMoELayer(l) {
		rin := h2
		if rows >= 0 {
			rin = rows
		}
		first := len(lw.p.Ops)
		y = lw.moe(l, h2, rin)
		for i := first; i < len(lw.p.Ops); i++ {
			if op := &lw.p.Ops[i]; op.Kind == OpGroupedMM {
				op.Attr, op.SkipEmptySlots = join(op.Attr, AttrSkipEmptySlots), true
			}
		}
		if beside {
			y = lw.addDense(l, lw.norm(pre+"dense_in", x, params.RoleResidualNorm, l), y)
		} else {
			y = lw.denseBeside(l, h2, y)
		}
	} else {
		y = lw.ffn(pre+"ffn", h2, id(params.RoleFFNIn), id(params.RoleFFNUp), id(params.RoleFFNDown), d.FFNActivation, l)
	}
	return lw.ffnOut(l, x, y)
}

// inferHead emits the last stage's head: each prompt's last row (prefill), the final
// norm and the logits (all-gathered over a vocabulary-parallel tp).
func (lw *lowerer) inferHead(x, at int, prefill bool) {
	d, B := lw.d, lw.b.MicroBatch
	if prefill {
		last := lw.act("last", KindActivation, B, d.D)
		lw.fwd(Op{Kind: OpLastRows, Layer: -1, In: []int{x, at}, Out: []int{last}, Attr: "each prompt's last position"})
		x = last
		// The head reads one row per sequence: its buffers take the shapes of a
		// decoding step's.
		lw.b = Batch{MicroBatch: B, SeqLen: 1, Micro: 1}
	}
	if lw.m.FinalNorm {
		x = lw.norm("final", x, params.RoleFinalNorm, -1)
	}
	head := params.ID{Role: params.RoleHead, Layer: -1, Expert: -1}
	if lw.m.TieEmbeddings {
		head = params.ID{Role: params.RoleEmbed, Layer: -1, Expert: -1}
	}
	if lw.l.TP == 1 {
		lw.matmul("logits", x, head, -1)
		return
	}
	part := lw.matmul("logits_shard", x, head, -1)
	logits := lw.act("logits", KindActivation, B, d.V)
	lw.emit(Op{Kind: OpAllGather, Phase: Forward, Layer: -1, In: []int{part}, Out: []int{logits}, Group: "tp", Attr: AttrGatherVocab, GatherVocab: true,
		Bytes: lw.p.Buffers[part].Bytes() * int64(lw.l.TP-1)})
}

// causalAttention emits layer l's attention over the prompt (q and the cached k already
// rotated): causal scores, talking-heads mixing around the softmax, weights times values.
func (lw *lowerer) causalAttention(l, q, k, v int) int {
	n, T, B := lw.b.Tokens(), lw.b.SeqLen, lw.b.MicroBatch
	id := func(r params.Role) params.ID { return params.ID{Role: r, Layer: l, Expert: -1} }
	pre := fmt.Sprintf("L%d.", l)
	hs := lw.hLocal
	scoreFLOPs := 2 * int64(B) * int64(hs) * int64(T) * int64(T) * int64(lw.d.Dh)
	mixFLOPs := 2 * int64(B) * int64(hs) * int64(hs) * int64(T) * int64(T) / 2
	s := lw.act(pre+"scores", KindActivation, B, hs, T, T)
	lw.fwd(Op{Kind: OpScores, Layer: l, In: []int{q, k}, Out: []int{s}, Attr: "causal", FLOPs: scoreFLOPs / 2})
	if lw.m.Attention.TalkingHeads {
		s2 := lw.act(pre+"scores_mixed", KindActivation, B, hs, T, T)
		lw.fwd(Op{Kind: OpHeadMix, Layer: l, In: []int{s, lw.w(id(params.RoleTalkingPre))}, Out: []int{s2}, Attr: "pre-softmax", FLOPs: mixFLOPs})
		s = s2
	}
	p := lw.act(pre+"probs", KindActivation, B, hs, T, T)
	lw.fwd(lw.softmaxOp(l, s, p, ""))
	if lw.m.Attention.TalkingHeads {
		p2 := lw.act(pre+"probs_mixed", KindActivation, B, hs, T, T)
		lw.fwd(Op{Kind: OpHeadMix, Layer: l, In: []int{p, lw.w(id(params.RoleTalkingPost))}, Out: []int{p2}, Attr: "post-softmax", FLOPs: mixFLOPs})
		p = p2
	}
	a := lw.act(pre+"attn", KindActivation, n, lw.qLocal)
	lw.fwd(Op{Kind: OpAttnAV, Layer: l, In: []int{p, v}, Out: []int{a}, FLOPs: scoreFLOPs / 2})
	return a
}

// planInference is planMemory with the persistent buffers (weights, KV caches) first, in
// declaration order, and the rest above them: the prefill program and the decoding
// step's hold the same persistent buffers in the same places, so an executor of one can
// share the other's and allocate only the arena above them.
func planInference(p *Program) MemoryPlan {
	var shared int64
	shadow := *p
	shadow.Buffers = make([]*Buffer, len(p.Buffers))
	for i, b := range p.Buffers {
		shadow.Buffers[i] = b
		if b.Kind.Persistent() {
			b.Offset = shared
			shared += align(b.Bytes())
			empty := *b // placed by the loop above, not by planMemory
			empty.Shape = []int{0}
			shadow.Buffers[i] = &empty
		}
	}
	mp := planMemory(&shadow)
	for _, b := range p.Buffers {
		if !b.Kind.Persistent() {
			b.Offset += shared
		} else if b.Tier == Device {
			mp.Persistent[Device] += b.Bytes()
			mp.ByKind[b.Kind] += b.Bytes()
		}
	}
	mp.Arena[Device] += shared
	mp.Peak[Device] += shared
	return mp
}
