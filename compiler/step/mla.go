package step

import (
	"fmt"

	"github.com/moec-dev/moec/compiler/params"
	"github.com/moec-dev/moec/compiler/program"
)

// Multi-head latent attention (DeepSeek-V2/V3; attention.kv_lora_rank), as runtime/nn
// computes it (mla.go there):
//
//	q     = q_b_proj(latent_norm(q_a_proj(h)))       (q_proj(h) without q_lora_rank)
//	kv_a  = kv_a_proj_with_mqa(h) = [latent | k_pe]   mla_split
//	c     = latent_norm(latent)                       kv_a_layernorm
//	kv_b  = kv_b_proj(c)                              per head [k_nope | v]
//	q_h, k_h, v_h                                     mla_heads: rotary on the rope features
//	                                                  only (rotate-half), k_pe shared by the heads
//	o     = o_proj(mla_attention(q_h, k_h, v_h))      causal softmax(q·kᵀ·scale)·v per head
//
// latent_norm is an RMSNorm with DeepSeek's epsilon 1e-6 (its backward is norm_bwd); the
// attention op keeps its weights for its backward, so recompute = selective keeps them too
// (full recompute runs the layer again as for any layer).
//
// Under tensor parallelism the heads split as Megatron splits MLA's: q_proj or q_b_proj
// and kv_b_proj column-parallel by heads, o_proj row-parallel, and the latent projections
// and their norms replicated: the replicated latents (the query's after its norm, c) are
// the column-parallel products' inputs, so their gradients are all-reduced over tp there
// (Megatron's f operator) and everything below them is whole on every rank; the shared
// rope key's gradient, the rank's heads' part, is all-reduced likewise. Under sequence
// parallelism the normalised stream is gathered from the ranks' tokens before the
// projections (its gradient, whole on every rank, sliced back) and o_proj's partial sums
// are reduce-scattered to them.
//
// The prefill, decoding and feeding programs cache each local head's keys (qk_nope+qk_rope
// features, the rope part rotated) and values (mla_kv_write, mla_kv_append) and attend
// one query per sequence to them (mla_attn_decode): the simplest correct cache, as the
// other attentions keep theirs. runtime/nn's decoder caches the compressed latent and the
// shared rope key instead (smaller by about heads·(qk+v)/(kv_lora_rank+rope)); the
// logits are the same.

// Ops of latent attention.
const (
	OpLatentNorm   OpKind = "latent_norm"       // RMSNorm of a latent, eps 1e-6 (backward: norm_bwd)
	OpMLASplit     OpKind = "mla_split"         // [latent | k_pe] into the latent and the shared rope key
	OpMLASplitBwd  OpKind = "mla_split_bwd"     // the two gradients back into one
	OpMLAHeads     OpKind = "mla_heads"         // per-head q, k, v; rotary on the rope features
	OpMLAHeadsBwd  OpKind = "mla_heads_bwd"     // dq, dkv_b and dk_pe (summed over heads), rotated back
	OpMLAAttention OpKind = "mla_attention"     // causal softmax(q·kᵀ·scale)·v per head; keeps the weights
	OpMLAAttnBwd   OpKind = "mla_attention_bwd" // dq, dk, dv
)

// LatentNormEps is the epsilon of latent attention's norms (DeepseekV3RMSNorm's default,
// whatever the model's norm_eps), as runtime/nn.
const LatentNormEps = 1e-6

// MLADims are latent attention's sizes as an op reads them.
type MLADims struct {
	Nope, Rope, V int
}

// mlaDims is m's latent-attention head sizes.
func mlaDims(m *program.Model) MLADims {
	a := m.Attention
	return MLADims{Nope: int(a.QKNopeHeadDim), Rope: int(a.QKRopeHeadDim), V: int(a.VHeadDim)}
}

// latentAttention emits layer l's latent attention on the residual stream x.
func (lw *lowerer) latentAttention(l, x int) int {
	at := func(r params.Role) params.ID { return params.ID{Role: r, Layer: l, Expert: -1} }
	pre := fmt.Sprintf("L%d.", l)
	md := mlaDims(lw.m)
	n, B, T := lw.b.Tokens(), lw.b.MicroBatch, lw.b.SeqLen
	hs := lw.d.H / lw.l.TP
	h := lw.attnIn(l, x) // replicated over tp: the latent projections read it whole
	if lw.l.SP() {
		// The rank's tokens gathered; their gradient is whole on every rank (the f
		// operators below), so its backward is the rank's rows.
		h = lw.seqGather(h, l, attrSequenceWhole)
	}
	qh, kh, vh := lw.mlaHeads(l, h, -1)
	p := lw.act(pre+"probs", KindActivation, B, hs, T, T)
	o := lw.act(pre+"attn", KindActivation, n, hs*md.V)
	lw.mlaCausal(l, qh, kh, vh, o, p)
	out := lw.rowOut(lw.matmul(pre+"attn_out", o, at(params.RoleO), l), l)
	return lw.attnOut(l, x, out)
}

// mlaCausal emits the causal attention of the heads qh, kh, vh into o, keeping the
// weights in p.
func (lw *lowerer) mlaCausal(l, qh, kh, vh, o, p int) {
	md := mlaDims(lw.m)
	qk := md.Nope + md.Rope
	B, T, hs := lw.b.MicroBatch, lw.b.SeqLen, lw.d.H/lw.l.TP
	mask := lw.maskOf(l)
	lw.fwd(Op{Kind: OpMLAAttention, Layer: l, In: []int{qh, kh, vh}, Out: []int{o, p}, Mask: mask,
		Attr:  fmt.Sprintf("%s scale=%g qk=%d v=%d", mask, lw.m.LatentSoftmaxScale(), qk, md.V),
		FLOPs: int64(B) * int64(hs) * int64(T) * int64(T) * int64(qk+md.V)})
}

// mlaHeads emits layer l's projections of h (the normalised stream, whole on every tp
// rank) to the rank's heads' queries, keys and values; pos is the decoding step's
// positions (-1 where a row's position is its index in its sequence).
func (lw *lowerer) mlaHeads(l, h, pos int) (qh, kh, vh int) {
	at := func(r params.Role) params.ID { return params.ID{Role: r, Layer: l, Expert: -1} }
	pre := fmt.Sprintf("L%d.", l)
	md := mlaDims(lw.m)
	n := lw.b.Tokens()
	hs := lw.d.H / lw.l.TP
	qk := md.Nope + md.Rope
	var q int
	if lw.m.Attention.QLoraRank > 0 {
		qa := lw.matmul(pre+"q_a", h, at(params.RoleQA), l)
		qan := lw.latentNorm(pre+"q_a_norm", qa, at(params.RoleQANorm), l)
		lw.markTPCopy(qan, l)
		q = lw.matmul(pre+"q", qan, at(params.RoleQB), l)
	} else {
		hq := h
		if lw.l.TP > 1 {
			// q_proj reads a copy of h whose gradient, the rank's heads' part, is all-reduced
			// over tp before it joins kv_a_proj_with_mqa's, which is whole.
			hq = lw.act(pre+"q_in", KindActivation, n, lw.d.D)
			lw.fwd(Op{Kind: OpCopy, Layer: l, In: []int{h}, Out: []int{hq}})
			lw.markTPCopy(hq, l)
		}
		q = lw.matmul(pre+"q", hq, at(params.RoleQ), l)
	}
	kva := lw.matmul(pre+"kv_a", h, at(params.RoleKVA), l)
	r := int(lw.m.Attention.KVLoraRank)
	lat := lw.act(pre+"latent", KindActivation, n, r)
	kpe := lw.act(pre+"k_pe", KindActivation, n, md.Rope)
	lw.fwd(Op{Kind: OpMLASplit, Layer: l, In: []int{kva}, Out: []int{lat, kpe}, Attr: fmt.Sprintf("kv_lora_rank=%d rope=%d", r, md.Rope)})
	lw.markTPCopy(kpe, l) // the rank's heads' part of its gradient
	c := lw.latentNorm(pre+"kv_a_norm", lat, at(params.RoleKVANorm), l)
	lw.markTPCopy(c, l)
	kvb := lw.matmul(pre+"kv_b", c, at(params.RoleKVB), l)
	qh = lw.act(pre+"q_heads", KindActivation, n, hs*qk)
	kh = lw.act(pre+"k_heads", KindActivation, n, hs*qk)
	vh = lw.act(pre+"v_heads", KindActivation, n, hs*md.V)
	rot := "rotary on the rope features"
	if lw.m.Position != program.Rotary {
		rot = "no rotary positions"
	}
	in := []int{q, kvb, kpe}
	if pos >= 0 {
		in = append(in, pos)
		rot += " at each sequence's position"
	}
	lw.fwd(Op{Kind: OpMLAHeads, Layer: l, In: in, Out: []int{qh, kh, vh},
		Attr: fmt.Sprintf("heads=%d nope=%d rope=%d v=%d, %s", hs, md.Nope, md.Rope, md.V, rot), FLOPs: 6 * int64(n) * int64(hs) * int64(md.Rope)})
	return qh, kh, vh
}

// Ops of latent attention's inference: its per-head K/V caches (the heads' keys of
// qk_nope+qk_rope features and values of v_head_dim: the simplest correct cache, as the
// other attentions' decoding keeps; runtime/nn's decoder keeps the latent instead).
const (
	OpMLAKVWrite    OpKind = "mla_kv_write"    // prefill: positions 0..T−1 of each sequence's caches
	OpMLAKVAppend   OpKind = "mla_kv_append"   // decoding: each sequence's row at its position
	OpMLAAttnDecode OpKind = "mla_attn_decode" // one query per sequence against its caches
)

// mlaInfer emits layer l's latent attention in a prefill or a decoding step: the heads'
// keys and values into the layer's caches, and the attention before o_proj.
func (lw *lowerer) mlaInfer(l, h, at, maxLen int, prefill bool) int {
	pre := fmt.Sprintf("L%d.", l)
	md := mlaDims(lw.m)
	qk := md.Nope + md.Rope
	B, T, hs := lw.b.MicroBatch, lw.b.SeqLen, lw.d.H/lw.l.TP
	n := B * T
	kc := lw.buf(pre+"k_cache", KindCache, lw.cacheSeqs(), maxLen, hs*qk)
	vc := lw.buf(pre+"v_cache", KindCache, lw.cacheSeqs(), maxLen, hs*md.V)
	o := lw.act(pre+"attn", KindActivation, n, hs*md.V)
	if prefill {
		qh, kh, vh := lw.mlaHeads(l, h, -1)
		lw.fwd(Op{Kind: OpMLAKVWrite, Layer: l, In: []int{kh, vh}, Out: []int{kc, vc}, Attr: fmt.Sprintf("positions 0..%d", T-1)})
		lw.mlaCausal(l, qh, kh, vh, o, lw.act(pre+"probs", KindActivation, B, hs, T, T))
		return o
	}
	qh, kh, vh := lw.mlaHeads(l, h, at)
	// A feeding program's rows name their sequences (feed.go's rowsOp).
	lw.fwd(lw.rowsOp(Op{Kind: OpMLAKVAppend, Layer: l, In: []int{kh, vh, at}, Out: []int{kc, vc}}))
	mask := lw.maskOf(l)
	lw.fwd(lw.rowsOp(Op{Kind: OpMLAAttnDecode, Layer: l, In: []int{qh, kc, vc, at}, Out: []int{o}, Mask: mask,
		Attr: fmt.Sprintf("%s scale=%g qk=%d v=%d", mask, lw.m.LatentSoftmaxScale(), qk, md.V), FLOPs: 2 * int64(n) * int64(maxLen) * int64(hs) * int64(qk+md.V)}))
	return o
}

// latentNorm emits the RMSNorm of a latent x with the scale role.
func (lw *lowerer) latentNorm(name string, x int, id params.ID, layer int) int {
	sh := lw.p.Buffers[x].Shape
	rows, width := sh[0], sh[1]
	y := lw.act(name, KindActivation, rows, width)
	rstd := lw.act(name+".rstd", KindActivation, rows)
	lw.fwd(Op{Kind: OpLatentNorm, Layer: layer, In: []int{x, lw.w(id)}, Out: []int{y, rstd}, Attr: fmt.Sprintf("rmsnorm eps=%g", LatentNormEps),
		FLOPs: 5 * int64(rows) * int64(width)})
	return y
}

// mlaBackward emits the backward of a latent-attention op; it reports whether op was one.
func (lw *lowerer) mlaBackward(op Op) bool {
	switch op.Kind {
	case OpLatentNorm:
		// norm_bwd: the input's and the scale's gradients from the saved 1/rms.
		dh, ok := lw.gradOf[op.Out[0]]
		if !ok {
			return true
		}
		dw, _ := lw.paramGrad(op.In[1])
		outs := []int{lw.gradFor(op.In[0]), dw}
		b := Op{Kind: OpNormBwd, Layer: op.Layer, In: []int{dh, op.In[0], op.In[1], op.Out[1]}, Out: outs, Attr: op.Attr, FLOPs: 2 * op.FLOPs}
		lw.writeGrads(&b, outs...)
		lw.bwd(b)
	case OpMLASplit:
		dlat, okL := lw.gradOf[op.Out[0]]
		dkpe, okP := lw.gradOf[op.Out[1]]
		if !okL || !okP {
			return true
		}
		dkva := lw.gradFor(op.In[0])
		b := Op{Kind: OpMLASplitBwd, Layer: op.Layer, In: []int{dlat, dkpe}, Out: []int{dkva}, Attr: op.Attr}
		lw.writeGrads(&b, dkva)
		lw.bwd(b)
	case OpMLAHeads:
		dq, okQ := lw.gradOf[op.Out[0]]
		dk, okK := lw.gradOf[op.Out[1]]
		dv, okV := lw.gradOf[op.Out[2]]
		if !okQ || !okK || !okV {
			return true
		}
		outs := []int{lw.gradFor(op.In[0]), lw.gradFor(op.In[1]), lw.gradFor(op.In[2])}
		b := Op{Kind: OpMLAHeadsBwd, Layer: op.Layer, In: []int{dq, dk, dv}, Out: outs, Attr: op.Attr, FLOPs: 2 * op.FLOPs}
		lw.writeGrads(&b, outs...)
		lw.bwd(b)
	case OpMLAAttention:
		do, ok := lw.gradOf[op.Out[0]]
		if !ok {
			return true
		}
		outs := []int{lw.gradFor(op.In[0]), lw.gradFor(op.In[1]), lw.gradFor(op.In[2])}
		b := Op{Kind: OpMLAAttnBwd, Layer: op.Layer, In: []int{do, op.In[0], op.In[1], op.In[2], op.Out[1]}, Out: outs, Mask: op.Mask,
			Attr: op.Attr, FLOPs: 2 * op.FLOPs}
		lw.writeGrads(&b, outs...)
		lw.bwd(b)
	default:
		return false
	}
	return true
}
