package step

import (
	"fmt"

	"github.com/moec-dev/moec/compiler/params"
	"github.com/moec-dev/moec/compiler/program"
)

// LowerDecode builds the program of one decoding step on one rank: batch sequences each
// take one token (input `tokens`) at the position in input `pos`, their keys and values
// join per-layer caches of maxLen positions (KindCache, kept from step to step), every
// layer attends over its cache, and the step ends with the next-token logits (`logits`,
// [batch, vocab]). As runtime/nn's Decoder, it always recomputes the attention weights
// (no sharing) and routes without a capacity limit.
func LowerDecode(m *program.Model, batch, maxLen int) (*Program, error) {
	if batch < 1 || maxLen < 1 {
		return nil, fmt.Errorf("step: decoding %d sequences of %d positions", batch, maxLen)
	}
	dm := *m
	dm.Attention.ShareWeights = 1 // the decoder always recomputes
	l := Layout{DP: 1, EP: 1, TP: 1, PP: 1}
	b := Batch{MicroBatch: batch, SeqLen: 1, Micro: 1}
	l, d, walk, err := prepare(&dm, b, l)
	if err != nil {
		return nil, err
	}
	lw := newLowerer(&dm, d, b, l, 0, walk)
	if d.E > 0 {
		lw.capacity = batch * d.K // dropless
	}
	lw.declareInference()
	lw.micro, lw.phase = 0, Forward
	lw.decodeStep(maxLen)
	lw.p.Memory = planMemory(lw.p)
	return lw.p, nil
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

// decodeStep emits the ops of one decoding step.
func (lw *lowerer) decodeStep(maxLen int) {
	d, n := lw.d, lw.b.MicroBatch
	tokens := lw.intAct("tokens", n)
	pos := lw.buf("pos", KindInput, 1)
	lw.p.Buffers[pos].Int = true
	x := lw.act("x0", KindActivation, n, d.D)
	lw.fwd(Op{Kind: OpEmbed, Layer: -1, In: []int{tokens, lw.w(params.ID{Role: params.RoleEmbed, Layer: -1, Expert: -1})}, Out: []int{x}})
	if d.MaxPos > 0 {
		pe := lw.act("pos_embed", KindActivation, n, d.D)
		lw.fwd(Op{Kind: OpEmbed, Layer: -1, In: []int{pos, lw.w(params.ID{Role: params.RolePositions, Layer: -1, Expert: -1})}, Out: []int{pe}, Attr: "position_at"})
		x = lw.add("x0+pos", x, pe, -1)
	}
	rows := -1
	if id := (params.ID{Role: params.RoleRouterEmbed, Layer: -1, Expert: -1}); lw.has(id) {
		rows = lw.act("router_rows", KindActivation, n, d.RouterIn)
		lw.fwd(Op{Kind: OpEmbed, Layer: -1, In: []int{tokens, lw.w(id)}, Out: []int{rows}, Attr: "router table"})
	}
	for l := 0; l < d.L; l++ {
		at := func(r params.Role) params.ID { return params.ID{Role: r, Layer: l, Expert: -1} }
		pre := fmt.Sprintf("L%d.", l)
		h := lw.norm(pre+"attn_in", x, params.RoleAttnInNorm, l)
		q := lw.matmul(pre+"q", h, at(params.RoleQ), l)
		k := lw.matmul(pre+"k", h, at(params.RoleK), l)
		v := lw.matmul(pre+"v", h, at(params.RoleV), l)
		if lw.m.Position == program.Rotary {
			lw.fwd(Op{Kind: OpRotaryAt, Layer: l, In: []int{q, k, pos}, Out: []int{q, k}, Attr: fmt.Sprintf("base=%g", lw.m.RopeBase)})
		}
		kc := lw.buf(pre+"k_cache", KindCache, n, maxLen, d.KVDim)
		vc := lw.buf(pre+"v_cache", KindCache, n, maxLen, d.KVDim)
		lw.fwd(Op{Kind: OpKVAppend, Layer: l, In: []int{k, v, pos}, Out: []int{kc, vc}})
		in := []int{q, kc, vc, pos}
		if lw.m.Attention.TalkingHeads {
			in = append(in, lw.w(at(params.RoleTalkingPre)), lw.w(at(params.RoleTalkingPost)))
		}
		a := lw.act(pre+"attn", KindActivation, n, d.QDim)
		lw.fwd(Op{Kind: OpAttnDecode, Layer: l, In: in, Out: []int{a}, FLOPs: 4 * int64(n) * int64(maxLen) * int64(d.QDim)})
		o := lw.matmul(pre+"attn_out", a, at(params.RoleO), l)
		x = lw.add(pre+"x_attn", x, o, l)
		h2 := lw.norm(pre+"ffn_in", x, params.RolePostAttnNorm, l)
		var y int
		if lw.m.IsMoELayer(l) {
			rin := h2
			if rows >= 0 {
				rin = rows
			}
			y = lw.moe(l, h2, rin)
		} else {
			y = lw.ffn(pre+"ffn", h2, at(params.RoleFFNIn), at(params.RoleFFNUp), at(params.RoleFFNDown), d.FFNActivation, l)
		}
		x = lw.add(pre+"x_out", x, y, l)
	}
	if lw.m.FinalNorm {
		x = lw.norm("final", x, params.RoleFinalNorm, -1)
	}
	id := params.ID{Role: params.RoleHead, Layer: -1, Expert: -1}
	if lw.m.TieEmbeddings {
		id = params.ID{Role: params.RoleEmbed, Layer: -1, Expert: -1}
	}
	lw.matmul("logits", x, id, -1)
}
