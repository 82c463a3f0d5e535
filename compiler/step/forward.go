package step

import (
	"fmt"

	"github.com/moec-dev/moec/compiler/params"
	"github.com/moec-dev/moec/compiler/program"
)

// tapeEntry is a forward op as its backward rule reads it. tpCopy marks Megatron's f
// operator: identity forward, all-reduce of the gradient over tp backward (the input of
// column-parallel products); the forward emits nothing for it.
type tapeEntry struct {
	op     Op
	tpCopy bool
	// share records an attention-sharing select: In[0] the layer's own weights (written
	// only when its die says recompute), In[1] the layer below's selected weights.
	share bool
	// comm records a forward all-reduce (the g operator): no backward, but a layer's
	// recomputation runs it again.
	comm bool
}

// fwd emits a forward op and records it for the backward.
func (lw *lowerer) fwd(op Op) {
	op.Phase = Forward
	lw.emit(op)
	lw.tape = append(lw.tape, tapeEntry{op: lw.p.Ops[len(lw.p.Ops)-1]})
}

// markTPCopy records that buf feeds column-parallel products.
func (lw *lowerer) markTPCopy(buf, layer int) {
	if lw.l.TP > 1 {
		lw.tape = append(lw.tape, tapeEntry{op: Op{Layer: layer, In: []int{buf}}, tpCopy: true})
	}
}

// reduceTP emits the forward all-reduce of a row-parallel product's partial sums
// (Megatron's g operator; its backward is the identity).
func (lw *lowerer) reduceTP(buf, layer int) {
	if lw.l.TP > 1 {
		lw.emit(Op{Kind: OpAllReduce, Phase: Forward, Layer: layer, In: []int{buf}, Out: []int{buf}, Group: "tp",
			Bytes: lw.p.Buffers[buf].Bytes(), Attr: "sum"})
		lw.tape = append(lw.tape, tapeEntry{op: lw.p.Ops[len(lw.p.Ops)-1], comm: true})
	}
}

// matmul emits y = x·Wᵀ (+ b) for the parameter role at layer (expert -1), with rows
// output features on this rank.
func (lw *lowerer) matmul(name string, x int, id params.ID, layer int) int {
	wShape := lw.shapes[id]
	n := int(lw.p.Buffers[x].Elements()) / wShape[1] // the tokens x holds (a sequence slice under sp)
	out := wShape[0]
	y := lw.act(name, KindActivation, n, out)
	in := []int{x, lw.w(id)}
	attr := ""
	bias := id
	bias.Bias = true
	if bias.Role == params.RoleEmbed {
		bias.Role = params.RoleHead // a tied head's bias is the head's own (head_bias)
	}
	if lw.has(bias) {
		in = append(in, lw.w(bias))
		attr = "bias"
		if lw.l.TP > 1 && rowParallel(id.Role) {
			// The partial products are summed over tp: one rank adds the bias.
			attr = "bias on tp rank 0"
		}
	}
	lw.fwd(Op{Kind: OpMatMul, Layer: layer, In: in, Out: []int{y}, Attr: attr, BiasOnTPRank0: attr == "bias on tp rank 0",
		FLOPs: 2 * int64(n) * int64(wShape[0]) * int64(wShape[1])})
	return y
}

func (lw *lowerer) norm(name string, x int, role params.Role, layer int) int {
	d := lw.d.D
	n := int(lw.p.Buffers[x].Elements()) / d
	id := params.ID{Role: role, Layer: layer, Expert: -1}
	h := lw.act(name, KindActivation, n, d)
	rstd := lw.act(name+".rstd", KindActivation, n)
	in := []int{x, lw.w(id)}
	kind := "rmsnorm"
	if lw.m.Norm == program.LayerNorm {
		kind = "layernorm"
		if b := (params.ID{Role: role, Layer: layer, Expert: -1, Bias: true}); lw.has(b) {
			in = append(in, lw.w(b))
		} else {
			kind = "layernorm without bias" // norm_bias = false
		}
	}
	lw.fwd(Op{Kind: OpNorm, Layer: layer, In: in, Out: []int{h, rstd}, Attr: fmt.Sprintf("%s eps=%g", kind, lw.d.NormEps),
		FLOPs: 5 * int64(n) * int64(d)})
	return h
}

func (lw *lowerer) add(name string, a, b, layer int) int {
	y := lw.act(name, KindActivation, lw.p.Buffers[a].Shape...)
	lw.fwd(Op{Kind: OpAdd, Layer: layer, In: []int{a, b}, Out: []int{y}, FLOPs: lw.p.Buffers[a].Elements()})
	return y
}

// embed emits the token embedding (and learned positions, and the router table's rows).
func (lw *lowerer) embed(tokens int) (x, routerRows int) {
	n, d := lw.b.Tokens(), lw.d.D
	x = lw.act("x0", KindActivation, n, d)
	in := []int{tokens, lw.w(params.ID{Role: params.RoleEmbed, Layer: -1, Expert: -1})}
	attr, rows := "", RowsOfTokens
	if lw.l.TP > 1 {
		attr, rows = "vocab-parallel", RowsOfVocabParallel
	}
	lw.fwd(Op{Kind: OpEmbed, Layer: -1, In: in, Out: []int{x}, Attr: attr, Rows: rows})
	x = lw.rowOut(x, -1)
	if lw.d.MaxPos > 0 {
		pos := lw.act("pos", KindActivation, n, d)
		lw.fwd(Op{Kind: OpEmbed, Layer: -1, In: []int{tokens, lw.w(params.ID{Role: params.RolePositions, Layer: -1, Expert: -1})},
			Out: []int{pos}, Attr: "positions", Rows: RowsOfPositions})
		pos = lw.seqSlice(pos, -1)
		x = lw.add("x0+pos", x, pos, -1)
	}
	return x, lw.routerRows(tokens)
}

// routerRows emits the lookup of the micro-batch's rows of the token-embedding router
// table (-1 when this rank holds none: no router reads it, or its stage has no MoE layer).
func (lw *lowerer) routerRows(tokens int) int {
	id := routerTable()
	if !lw.has(id) {
		return -1
	}
	rows := lw.act("router_rows", KindActivation, lw.b.Tokens(), lw.d.RouterIn)
	lw.fwd(Op{Kind: OpEmbed, Layer: -1, In: []int{tokens, lw.w(id)}, Out: []int{rows}, Attr: "router table"})
	return lw.seqSlice(rows, -1)
}

// attention emits layer l's attention sublayer on the residual stream x; prevProbs is
// the layer below's attention weights (-1 for the first), for attention-weight sharing.
func (lw *lowerer) attention(l, x, prevProbs int) (out, probs int) {
	if lw.m.Attention.LatentAttention() {
		return lw.latentAttention(l, x), -1 // mla.go
	}
	n, T, B := lw.b.Tokens(), lw.b.SeqLen, lw.b.MicroBatch
	at := func(r params.Role) params.ID { return params.ID{Role: r, Layer: l, Expert: -1} }
	pre := fmt.Sprintf("L%d.", l)
	h := lw.colIn(lw.attnIn(l, x), l) // placement.go
	share := lw.m.Attention.RecomputeProbability()
	sharing := lw.m.Attention.SharesWeights() && prevProbs >= 0
	cond := ""
	if sharing {
		cond = fmt.Sprintf("when=recompute(p=%g)", share)
	}
	q, k, v := lw.qkv(l, h, -1, sharing, cond) // attention_qk.go
	hs := lw.hLocal
	scoreFLOPs := 2 * int64(B) * int64(hs) * int64(T) * int64(T) * int64(lw.d.Dh)
	q, k = lw.qkVariants(l, q, k, -1, sharing, cond) // attention.go
	s := lw.act(pre+"scores", KindActivation, B, hs, T, T)
	lw.fwd(Op{WhenRecompute: sharing, Kind: OpScores, Layer: l, In: []int{q, k}, Out: []int{s}, Attr: join("causal", cond), FLOPs: scoreFLOPs / 2})
	if lw.m.Attention.TalkingHeads {
		s2 := lw.act(pre+"scores_mixed", KindActivation, B, hs, T, T)
		lw.fwd(Op{WhenRecompute: sharing, Kind: OpHeadMix, Layer: l, In: []int{s, lw.w(at(params.RoleTalkingPre))}, Out: []int{s2}, Attr: join("pre-softmax", cond),
			FLOPs: 2 * int64(B) * int64(hs) * int64(hs) * int64(T) * int64(T) / 2})
		s = s2
	}
	p := lw.act(pre+"probs", KindActivation, B, hs, T, T)
	sm := lw.softmaxOp(l, s, p, cond)
	sm.WhenRecompute = sharing
	lw.fwd(sm)
	if lw.m.Attention.TalkingHeads {
		p2 := lw.act(pre+"probs_mixed", KindActivation, B, hs, T, T)
		lw.fwd(Op{WhenRecompute: sharing, Kind: OpHeadMix, Layer: l, In: []int{p, lw.w(at(params.RoleTalkingPost))}, Out: []int{p2}, Attr: join("post-softmax", cond),
			FLOPs: 2 * int64(B) * int64(hs) * int64(hs) * int64(T) * int64(T) / 2})
		p = p2
	}
	if sharing {
		sel := lw.act(pre+"probs_used", KindActivation, B, hs, T, T)
		op := Op{Kind: "share_select", Phase: Forward, Layer: l, In: []int{p, prevProbs}, Out: []int{sel},
			Attr: fmt.Sprintf("recompute with p=%g, else the weights of L%d", share, l-1), Bytes: 0}
		lw.p.Ops = append(lw.p.Ops, op)
		lw.p.Ops[len(lw.p.Ops)-1].Micro = lw.micro
		lw.tape = append(lw.tape, tapeEntry{op: lw.p.Ops[len(lw.p.Ops)-1], share: true})
		p = sel
	}
	a := lw.act(pre+"attn", KindActivation, n, lw.qLocal)
	lw.fwd(Op{Kind: OpAttnAV, Layer: l, In: []int{p, v}, Out: []int{a}, FLOPs: scoreFLOPs / 2})
	o := lw.rowOut(lw.matmul(pre+"attn_out", a, at(params.RoleO), l), l)
	return lw.attnOut(l, x, o), p
}

// ffn emits a dense FFN or a shared expert on h (already marked for tp, or gathered under
// sp), returning its output (reduced over tp, or reduce-scattered to the rank's tokens).
func (lw *lowerer) ffn(name string, h int, in, up, down params.ID, act program.Activation, l int) int {
	n := lw.b.Tokens()
	g := lw.matmul(name+".in", h, in, l)
	ins := []int{g}
	if act.Gated() {
		ins = append(ins, lw.matmul(name+".up", h, up, l))
	}
	width := lw.shapes[in][0]
	a := lw.act(name+".act", KindActivation, n, width)
	lw.fwd(Op{Kind: OpAct, Layer: l, In: ins, Out: []int{a}, Attr: string(act), Activation: act, FLOPs: 8 * int64(n) * int64(width)})
	return lw.rowOut(lw.matmul(name+".out", a, down, l), l)
}

// moe emits layer l's MoE FFN on h (the normalised stream); routerIn is what the router
// reads (h, or the token-embedding router table's rows). Under sp both are the rank's
// tokens: see sequence.go for how the experts and the router see the whole micro-batch.
func (lw *lowerer) moe(l, h, routerIn int) int {
	n, d := lw.b.Tokens(), lw.d.D
	moe := lw.m.MoE
	pre := fmt.Sprintf("L%d.", l)
	at := func(r params.Role) params.ID { return params.ID{Role: r, Layer: l, Expert: -1} }
	logits := lw.matmul(pre+"router_logits", routerIn, at(params.RoleRouter), l)
	hRouted := h // the stream as the router reads it: this rank's tokens under sp
	h, logits = lw.seqMoEInputs(h, logits, l)
	K, E := lw.d.K, lw.d.E
	idx := lw.intAct(pre+"route_index", n, K)
	gates := lw.act(pre+"gates", KindDispatch, n, K)
	scores := lw.act(pre+"router_scores", KindDispatch, n, E)
	lse := lw.act(pre+"router_lse", KindDispatch, n)
	slot := lw.intAct(pre+"route_slot", n, K)
	kept := lw.intAct(pre+"expert_kept", E)
	routed := lw.intAct(pre+"expert_routed", E)
	aux := lw.act(pre+"router_loss", KindScalar, 2)
	capAttr := "dropless"
	if moe.CapacityFactor > 0 {
		capAttr = fmt.Sprintf("capacity_factor=%g", moe.CapacityFactor)
	}
	slotsAttr := fmt.Sprintf("slots=%d", lw.capacity)
	if lw.packed {
		slotsAttr = fmt.Sprintf("packed rows=%d", lw.capacity)
	}
	lw.fwd(Op{Kind: OpRouter, Layer: l, In: append([]int{logits}, lw.routerBiasInputs(l)...), Out: []int{idx, gates, scores, lse, slot, kept, routed, aux}, Slots: lw.capacity, Packed: lw.packed,
		Attr:  fmt.Sprintf("%s top_k=%d %s %s normalize=%v balance=%g z=%g%s%s", moe.Score, lw.d.K, capAttr, slotsAttr, moe.Normalize, moe.BalanceLoss, moe.ZLoss, lw.routedScaleAttr(), lw.groupsAttr()+lw.sparsemixerAttr()+lw.routerBiasAttr()),
		FLOPs: 6 * int64(n) * int64(lw.d.E)})
	C, ep := lw.capacity, lw.l.EP
	send := lw.act(pre+"dispatch", KindDispatch, lw.dispatchShape(E, C, d)...)
	lw.permute(l, h, idx, slot, gates, send)
	recv := send
	if ep > 1 {
		recv = lw.act(pre+"dispatch_recv", KindDispatch, lw.eLocal, ep*C, d)
		lw.fwd(Op{Kind: OpAllToAllV, Layer: l, In: []int{send}, Out: []int{recv}, Group: "ep", Attr: "tokens to their experts' ranks",
			Bytes: lw.p.Buffers[send].Bytes() * int64(ep-1) / int64(ep)})
	}
	if !lw.l.SP() {
		lw.markTPCopy(recv, l) // under sp the gather of h sums the partial gradients
	}
	rows := ep * C
	blocks := lw.eLocal // expert blocks of rows each; packed, one block of every row
	if lw.packed {
		blocks = 1
	}
	expertIDs := func(r params.Role) []int {
		var out []int
		for e := lw.firstExpert; e < lw.firstExpert+lw.eLocal; e++ {
			id := params.ID{Role: r, Layer: l, Expert: e}
			out = append(out, lw.w(id))
			if b := (params.ID{Role: r, Layer: l, Expert: e, Bias: true}); lw.has(b) {
				out = append(out, lw.w(b))
			}
		}
		return out
	}
	ehl := lw.eHiddenLocal
	mmFLOPs := func(outDim, inDim int) int64 {
		return 2 * int64(blocks) * int64(rows) * int64(outDim) * int64(inDim)
	}
	g := lw.act(pre+"experts.in", KindActivation, lw.dispatchShape(lw.eLocal, rows, ehl)...)
	lw.fwd(Op{Kind: OpGroupedMM, Layer: l, In: append([]int{recv}, expertIDs(params.RoleExpertIn)...), Out: []int{g},
		Attr: fmt.Sprintf("experts %d..%d", lw.firstExpert, lw.firstExpert+lw.eLocal-1), FLOPs: mmFLOPs(ehl, d)})
	actIn := []int{g}
	if lw.d.ExpertActivation.Gated() {
		u := lw.act(pre+"experts.up", KindActivation, lw.dispatchShape(lw.eLocal, rows, ehl)...)
		lw.fwd(Op{Kind: OpGroupedMM, Layer: l, In: append([]int{recv}, expertIDs(params.RoleExpertUp)...), Out: []int{u},
			Attr: fmt.Sprintf("experts %d..%d", lw.firstExpert, lw.firstExpert+lw.eLocal-1), FLOPs: mmFLOPs(ehl, d)})
		actIn = append(actIn, u)
	}
	a := lw.act(pre+"experts.act", KindActivation, lw.dispatchShape(lw.eLocal, rows, ehl)...)
	actOp := Op{Kind: OpAct, Layer: l, In: actIn, Out: []int{a}, Attr: string(lw.d.ExpertActivation), Activation: lw.d.ExpertActivation, FLOPs: 8 * int64(blocks*rows*ehl)}
	lw.clampExperts(&actOp)
	lw.fwd(actOp)
	eo := lw.act(pre+"experts.out", KindActivation, lw.dispatchShape(lw.eLocal, rows, d)...)
	downAttr := fmt.Sprintf("experts %d..%d", lw.firstExpert, lw.firstExpert+lw.eLocal-1)
	if lw.l.TP > 1 && lw.m.MoE.ExpertBias {
		downAttr += " bias on tp rank 0"
	}
	lw.fwd(Op{Kind: OpGroupedMM, Layer: l, In: append([]int{a}, expertIDs(params.RoleExpertDown)...), Out: []int{eo},
		Attr: downAttr, BiasOnTPRank0: lw.l.TP > 1 && lw.m.MoE.ExpertBias, FLOPs: mmFLOPs(d, ehl)})
	lw.reduceTP(eo, l)
	back := eo
	if ep > 1 {
		back = lw.act(pre+"combine_recv", KindDispatch, E, C, d)
		lw.fwd(Op{Kind: OpAllToAllV, Layer: l, In: []int{eo}, Out: []int{back}, Group: "ep", Attr: "expert outputs back to their tokens",
			Bytes: lw.p.Buffers[eo].Bytes() * int64(ep-1) / int64(ep)})
	}
	y := lw.act(pre+"moe_out", KindActivation, n, d)
	lw.combine(l, back, idx, slot, gates, y)
	y = lw.seqSlice(y, l)
	hs := h
	if lw.d.Shared > 0 && lw.l.TP > 1 && !lw.l.SP() {
		// The shared experts' column-parallel products give partial input gradients: they
		// read a copy of h whose gradient is all-reduced over tp before it joins dh.
		hs = lw.act(pre+"shared_in", KindActivation, n, d)
		lw.fwd(Op{Kind: OpCopy, Layer: l, In: []int{h}, Out: []int{hs}})
		lw.markTPCopy(hs, l)
	}
	return lw.sharedExperts(l, hRouted, hs, y) // moe_variants.go
}

// layer emits decoder layer l.
func (lw *lowerer) layer(l, x, routerRows, prevProbs int) (int, int) {
	if lw.expertsBesideAttention(l) {
		return lw.parallelAttentionLayer(l, x, routerRows, prevProbs) // moe_variants.go
	}
	pre := fmt.Sprintf("L%d.", l)
	x, probs := lw.attention(l, x, prevProbs)
	h := lw.ffnIn(l, x) // placement.go
	var y int
	if lw.m.IsMoELayer(l) {
		// Not marked for tp: the router runs replicated and the experts' inputs carry
		// their own all-reduce (dispatch_recv), so every contribution to dh is whole.
		rin := h
		if routerRows >= 0 {
			rin = routerRows
		}
		y = lw.denseBeside(l, h, lw.moe(l, h, rin))
	} else {
		h = lw.colIn(h, l)
		at := func(r params.Role) params.ID { return params.ID{Role: r, Layer: l, Expert: -1} }
		y = lw.ffn(pre+"ffn", h, at(params.RoleFFNIn), at(params.RoleFFNUp), at(params.RoleFFNDown), lw.d.FFNActivation, l)
	}
	return lw.ffnOut(l, x, y), probs
}

// head emits the final norm, the head and the loss; returns the loss buffer.
func (lw *lowerer) head(x, targets int) int {
	n := lw.b.Tokens()
	if lw.m.FinalNorm {
		x = lw.norm("final", x, params.RoleFinalNorm, -1)
	}
	x = lw.colIn(x, -1)
	id := params.ID{Role: params.RoleHead, Layer: -1, Expert: -1}
	if lw.m.TieEmbeddings {
		id = params.ID{Role: params.RoleEmbed, Layer: -1, Expert: -1}
	}
	logits := lw.matmul("logits", x, id, -1)
	if lw.l.Distill.On() {
		loss, dlogits := lw.distillHead(logits, targets) // distill.go
		lw.gradSeed = map[int]int{logits: dlogits}
		return loss
	}
	loss := lw.act("loss", KindScalar, 1)
	dlogits := lw.act("dlogits", KindActGrad, n, lw.vLocal)
	in := []int{logits, targets}
	attr := fmt.Sprintf("mean over %d tokens × %d micro-batches × %d replicas; writes the logits' gradient", n, lw.b.Micro, lw.l.DP)
	if lw.l.TP > 1 {
		// Vocabulary-parallel softmax: each rank holds V/tp logits. The row maxima are
		// reduced (max) over tp, then each row's sum of exponentials and its target's
		// logit (held by one rank) are summed over tp before the loss.
		mx := lw.act("ce_max", KindScalar, n)
		lw.fwd(Op{Kind: OpCrossEntropy, Layer: -1, In: []int{logits}, Out: []int{mx}, Attr: "pass=max", Pass: LossMax, FLOPs: int64(n) * int64(lw.vLocal)})
		lw.emit(Op{Kind: OpAllReduce, Phase: Forward, Layer: -1, In: []int{mx}, Out: []int{mx}, Group: "tp", Attr: "max", ReduceMax: true,
			Bytes: lw.p.Buffers[mx].Bytes()})
		st := lw.act("ce_sum", KindScalar, n, 2)
		lw.fwd(Op{Kind: OpCrossEntropy, Layer: -1, In: []int{logits, targets, mx}, Out: []int{st}, Attr: "pass=sum", Pass: LossSum, FLOPs: 2 * int64(n) * int64(lw.vLocal)})
		lw.emit(Op{Kind: OpAllReduce, Phase: Forward, Layer: -1, In: []int{st}, Out: []int{st}, Group: "tp", Attr: "sum",
			Bytes: lw.p.Buffers[st].Bytes()})
		in = append(in, mx, st)
		attr = "pass=loss " + attr
	}
	lw.fwd(Op{Kind: OpCrossEntropy, Layer: -1, In: in, Out: []int{loss, dlogits}, Attr: attr, FLOPs: 4 * int64(n) * int64(lw.vLocal)})
	lw.gradSeed = map[int]int{logits: dlogits}
	return loss
}

// markConditional makes the op just emitted (and its tape entry) run only when the
// layer recomputes its attention weights.
func (lw *lowerer) markConditional(sharing bool, cond string) {
	if !sharing {
		return
	}
	op := &lw.p.Ops[len(lw.p.Ops)-1]
	op.WhenRecompute = true
	op.Attr = join(op.Attr, cond)
	lw.tape[len(lw.tape)-1].op = *op
}

// rowParallel reports whether role's product splits its input over tp (its output is
// a partial sum, all-reduced after).
func rowParallel(r params.Role) bool {
	switch r {
	case params.RoleO, params.RoleFFNDown, params.RoleExpertDown, params.RoleSharedDown:
		return true
	}
	return false
}

// intAct names a per-micro-batch buffer of int32 values.
func (lw *lowerer) intAct(name string, shape ...int) int {
	kind := KindDispatch
	if name == "tokens" || name == "targets" {
		kind = KindInput
	}
	i := lw.act(name, kind, shape...)
	lw.p.Buffers[i].Int = true
	return i
}

func join(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + " " + b
}
