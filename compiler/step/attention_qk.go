package step

import (
	"fmt"

	"github.com/moec-dev/moec/compiler/params"
)

// The query/key/value projections of a layer with the attention features of Qwen3, OLMoE
// and the cross-layer models, as runtime/nn computes them:
//
//   - q/k norms (attention.qk_norm): an RMSNorm with a learned scale of the projected
//     queries and keys before rotary positions, per head over head_dim with one scale
//     shared by the heads (qk_norm = true, Qwen3), or over each token's whole projection
//     (qk_norm = full, OLMoE): qk_norm and its backward. Under tensor parallelism a
//     per-head norm splits with the heads and its scale's gradient, each rank's heads'
//     part, is summed over tp before the update; a norm over the whole projection splits
//     its scale with the heads and all-reduces its statistics over tp (qknorm_tp.go);
//   - q/k norms after rotary positions (attention.qk_norm_after_rope, HunYuan's): the same
//     qk_norm ops on the rotated queries and keys; every layer has its own key norm, which
//     a layer sharing its group's K/V applies to the owner's rotated keys, and in inference
//     caches its own normed keys (the values' cache stays the group's);
//   - clipped projections (attention.clip_qkv, DBRX's and OLMo's): the queries and keys
//     after their norms, and the values, clamped to [−c, c] into new buffers before
//     rotary positions; the backward passes the gradient where the clamp did not cut;
//   - cross-layer K/V sharing (attention.share_kv): of each group of share_kv layers only
//     the first projects (and norms and rotates) keys and values; the others read the
//     first's, and their scores' and products' gradients add into its keys' and values'
//     gradients, which its backward then carries through its projections. In inference
//     the others read the first's KV cache. The features table refuses a pipeline split
//     inside a group and attention-weight sharing with it.

// Ops of the q/k norms and the clipped projections.
const (
	OpQKNorm    OpKind = "qk_norm"     // y = x/rms(x)·w per piece of len(w); keeps 1/rms
	OpQKNormBwd OpKind = "qk_norm_bwd" // dx (+)= rstd·(g − x̂·mean(g ⊙ x̂)), g = dy ⊙ w; dw (+)= Σ dy ⊙ x̂
	OpClip      OpKind = "clip"        // y = min(max(x, −Clip), Clip)
	OpClipBwd   OpKind = "clip_bwd"    // dx (+)= dy where |x| ≤ Clip, else 0
)

// sharedKV is the keys and values of the layer that owns the current cross-layer group:
// the buffers its layers' scores and products read (training and prefill), and its KV
// caches (inference).
type sharedKV struct {
	k, v, kCache, vCache int
}

// ownsKV reports whether layer l projects its own keys and values (the first layer of
// its share_kv group).
func (lw *lowerer) ownsKV(l int) bool { return l%max(lw.d.ShareKV, 1) == 0 }

// qkv emits layer l's query, key and value projections of h, the q/k norms and the
// rotary positions (rotary_at at the decoding positions at; at is -1 in training and
// prefill). A layer that does not own its K/V projects and rotates its queries alone and
// returns its group owner's keys and values. Under attention-weight sharing the Q/K ops
// run only when the layer recomputes its weights.
func (lw *lowerer) qkv(l, h, at int, sharing bool, cond string) (q, k, v int) {
	id := func(r params.Role) params.ID { return params.ID{Role: r, Layer: l, Expert: -1} }
	pre := fmt.Sprintf("L%d.", l)
	owns := lw.ownsKV(l)
	// Q and K first, then V: in the backward V's product is the first (unconditional)
	// writer of the input's gradient and the conditional Q/K products add to it.
	q = lw.matmul(pre+"q", h, id(params.RoleQ), l)
	lw.markConditional(sharing, cond)
	if owns {
		k = lw.matmul(pre+"k", h, id(params.RoleK), l)
		lw.markConditional(sharing, cond)
		v = lw.matmul(pre+"v", h, id(params.RoleV), l)
	} else {
		k, v = lw.kvShared.k, lw.kvShared.v
	}
	after := lw.normsAfterRope()
	if lw.m.Attention.QKNorm && !after {
		q = lw.qkNorm(pre+"q_normed", q, id(params.RoleQNorm), l, sharing, cond)
		if owns {
			k = lw.qkNorm(pre+"k_normed", k, id(params.RoleKNorm), l, sharing, cond)
		}
	}
	if c := lw.m.Attention.ClipQKV; c > 0 {
		q = lw.clip(pre+"q_clipped", q, c, l, sharing, cond)
		if owns {
			k = lw.clip(pre+"k_clipped", k, c, l, sharing, cond)
			v = lw.clip(pre+"v_clipped", v, c, l, false, "")
		}
	}
	if lw.rotates(l) {
		in, width := []int{q, k}, lw.qLocal+lw.kvDimLocal
		if !owns {
			in, width = []int{q}, lw.qLocal
		}
		out := append([]int(nil), in...)
		flops := 3 * int64(lw.p.Buffers[q].Shape[0]) * int64(width)
		if at >= 0 {
			lw.fwd(Op{Kind: OpRotaryAt, Layer: l, In: append(in, at), Out: out, Attr: ropeAttr(lw.m), FLOPs: flops})
		} else {
			lw.fwd(Op{WhenRecompute: sharing, Kind: OpRotary, Layer: l, In: in, Out: out, Attr: join(ropeAttr(lw.m), cond), FLOPs: flops})
		}
	}
	if owns {
		lw.kvShared.k, lw.kvShared.v = k, v
	}
	if after { // every layer norms its group's rotated keys with its own key norm
		q = lw.qkNorm(pre+"q_normed", q, id(params.RoleQNorm), l, sharing, cond)
		k = lw.qkNorm(pre+"k_normed", lw.kvShared.k, id(params.RoleKNorm), l, sharing, cond)
	}
	return q, k, v
}

// normsAfterRope reports whether the q/k norms read the rotated queries and keys
// (attention.qk_norm_after_rope): then every layer norms its group's rotated keys with its
// own key norm, and in inference caches its own normed keys.
func (lw *lowerer) normsAfterRope() bool {
	a := lw.m.Attention
	return a.QKNorm && a.QKNormAfterRope
}

// clip emits x clamped to [−c, c] into a new buffer (the backward reads x).
func (lw *lowerer) clip(name string, x int, c float64, l int, sharing bool, cond string) int {
	y := lw.act(name, KindActivation, lw.p.Buffers[x].Shape...)
	lw.fwd(Op{WhenRecompute: sharing, Kind: OpClip, Layer: l, In: []int{x}, Out: []int{y}, Clip: c,
		Attr: join(fmt.Sprintf("to ±%g", c), cond), FLOPs: lw.p.Buffers[x].Elements()})
	return y
}

// qkNorm emits the RMSNorm of x by the scale id into a new buffer: rows of the scale's
// width (head_dim, or the whole projection with qk_norm = full).
func (lw *lowerer) qkNorm(name string, x int, id params.ID, l int, sharing bool, cond string) int {
	w := lw.w(id)
	width := lw.shapes[id][0]
	y := lw.act(name, KindActivation, lw.p.Buffers[x].Shape...)
	rstd := lw.act(name+".rstd", KindActivation, int(lw.p.Buffers[x].Elements())/width)
	what, in := "per head", []int{x, w}
	if lw.m.Attention.QKNormFull {
		what = "whole projection"
	}
	if lw.qkNormSplit() { // qknorm_tp.go
		in = append(in, lw.qkNormStats(name, x, l, sharing, cond))
		what, width = "whole projection over tp", width*lw.l.TP
	}
	lw.fwd(Op{WhenRecompute: sharing, Kind: OpQKNorm, Layer: l, In: in, Out: []int{y, rstd},
		Attr: join(fmt.Sprintf("rmsnorm %s width=%d eps=%g", what, width, lw.d.NormEps), cond), FLOPs: 4 * lw.p.Buffers[x].Elements()})
	return y
}

// qkBackward emits the backward of the q/k norms, and of a rotary op that rotates the
// queries alone (a layer that reads its group owner's keys); it reports whether op was
// one of them.
func (lw *lowerer) qkBackward(op Op) bool {
	switch {
	case op.Kind == OpQKNorm:
		dy, ok := lw.gradOf[op.Out[0]]
		if !ok {
			return true
		}
		if len(op.In) == 3 { // the statistics span the tp ranks (qknorm_tp.go)
			lw.qkNormSplitBackward(op, dy)
			return true
		}
		dx := lw.gradFor(op.In[0])
		dw, _ := lw.paramGrad(op.In[1])
		b := Op{Kind: OpQKNormBwd, Layer: op.Layer, In: []int{dy, op.In[0], op.In[1], op.Out[1]}, Out: []int{dx, dw}, Attr: op.Attr, FLOPs: 2 * op.FLOPs}
		lw.writeGrads(&b, dx, dw)
		lw.bwd(b)
		return true
	case op.Kind == OpQKNormSumSq:
		return true // its part of the gradient is in qk_norm's backward (qknorm_tp.go)
	case op.Kind == OpClip:
		dy, ok := lw.gradOf[op.Out[0]]
		if !ok {
			return true
		}
		dx := lw.gradFor(op.In[0])
		b := Op{Kind: OpClipBwd, Layer: op.Layer, In: []int{dy, op.In[0]}, Out: []int{dx}, Clip: op.Clip, Attr: op.Attr, FLOPs: op.FLOPs}
		lw.writeGrads(&b, dx)
		lw.bwd(b)
		return true
	case op.Kind == OpRotary && len(op.Out) == 1:
		if dq, ok := lw.gradOf[op.Out[0]]; ok {
			lw.bwd(Op{Kind: OpRotaryBwd, Layer: op.Layer, In: []int{dq}, Out: []int{dq}, Attr: op.Attr, FLOPs: op.FLOPs})
		}
		return true
	}
	return false
}

// reduceQKNormGrads emits, under tensor parallelism, the all-reduce over tp of the
// per-head q/k norm scales' gradients: each rank's holds its own heads' part.
func (lw *lowerer) reduceQKNormGrads() {
	if lw.l.TP == 1 || !lw.m.Attention.QKNorm || lw.qkNormSplit() { // a split scale's gradient is the rank's own
		return
	}
	var gs []int
	var bytes int64
	for _, id := range lw.order {
		if id.Role == params.RoleQNorm || id.Role == params.RoleKNorm {
			gs = append(gs, lw.grad[id])
			bytes += lw.p.Buffers[lw.grad[id]].Bytes()
		}
	}
	if len(gs) == 0 {
		return
	}
	lw.emit(Op{Kind: OpAllReduce, Phase: Reduce, Layer: -1, In: gs, Out: gs, Group: "tp",
		Attr:  "sum: the q/k norms' gradients from each rank's heads",
		Bytes: 2 * bytes * int64(lw.l.TP-1) / int64(lw.l.TP)})
}
