package step

import (
	"fmt"

	"github.com/moec-dev/moec/compiler/params"
)

// The MoE variants of public families, lowered on the ops every MoE layer has where they
// fit and by one op kind of their own where none does:
//
//   - moe.routed_scale (DeepSeek-V3's routed_scaling_factor): the route op multiplies the
//     gates after any renormalisation, and its backward undoes it on their gradient; the
//     listing shows it on the route op (routed_scale=…).
//   - moe.gate_input (Llama 4): the permute op multiplies each assignment's row by its
//     gate (GateInput), the experts read g·x, and the combine op adds their outputs
//     unweighted. In the backward the combine passes the tokens' gradient to each slot,
//     and the permute's backward turns the slots' gradient into the tokens' (g·ds) and the
//     gates' (⟨ds, x⟩), which the route's backward reads.
//   - moe.swiglu_limit (gpt-oss): the experts' act and act_bwd ops carry the clamp
//     (SwigluLimit, SwigluAlpha): (u′ + 1)·g′·σ(α·g′) with g′ = min(g, limit) and u′ = u
//     clamped to ±limit; a clamped input passes no gradient. Shared experts are not
//     clamped (gpt-oss has none; runtime/nn clamps the routed experts alone).
//   - moe.shared_gate (Qwen2-MoE): the shared experts' summed output is scaled per token
//     by σ(x·g), g the layer's [1, d_model] shared_gate: a matmul for the logit and a
//     sigmoid_gate op, y = σ(z)·x row by row (backward: σ·dy for x, σ(1−σ)·⟨dy, x⟩ for z).
//   - moe.parallel_dense (Arctic's residual MoE): the layer's dense FFN runs beside the
//     experts on the same normalised stream, and its output joins theirs.
//   - moe.parallel_attention (Arctic): in an MoE layer the experts read the layer's input
//     through the FFN norm (post_attention_layernorm), beside attention, and the dense
//     FFN reads the stream after attention through its own norm (residual_layernorm).
//
// Each works under tensor, pipeline, sequence and expert parallelism, and in the inference
// programs: the gates and the shared gate's logits are per token, computed where the
// router's are, and the permute and combine run on the token's own rank on either side of
// the all-to-all. Under sequence parallelism the slots' gradient is each tp rank's partial
// sum, so gate_input's gates' gradient is all-reduced over tp before the route's backward.

// The shared-expert gate's ops.
const (
	OpSigmoidGate    OpKind = "sigmoid_gate"     // y = σ(z)·x, z one logit per row of x
	OpSigmoidGateBwd OpKind = "sigmoid_gate_bwd" // dx = σ(z)·dy, dz = σ(z)(1−σ(z))·⟨dy, x⟩
)

// routedScaleAttr is the route op's listing of routed_scale ("" when it is 1).
func (lw *lowerer) routedScaleAttr() string {
	if s := lw.m.MoE.RoutedScaleOrOne(); s != 1 {
		return fmt.Sprintf(" routed_scale=%g", s)
	}
	return ""
}

// permute emits the copy of layer l's tokens h into their experts' slots send; under
// gate_input each row is scaled by its gate.
func (lw *lowerer) permute(l, h, idx, slot, gates, send int) {
	op := Op{Kind: OpPermute, Layer: l, In: []int{h, idx, slot}, Out: []int{send}}
	if lw.m.MoE.GateInput {
		op.In = append(op.In, gates)
		op.GateInput = true
		op.Attr = "each row times its gate (gate_input)"
		op.FLOPs = int64(lw.b.Tokens()) * int64(lw.d.K) * int64(lw.d.D)
	}
	lw.fwd(op)
}

// combine emits the sum of each token's expert outputs (back) into y, weighted by the
// gates unless gate_input applied them to the inputs.
func (lw *lowerer) combine(l, back, idx, slot, gates, y int) {
	n, K, D := int64(lw.b.Tokens()), int64(lw.d.K), int64(lw.d.D)
	op := Op{Kind: OpCombine, Layer: l, In: []int{back, idx, slot, gates}, Out: []int{y}, FLOPs: 2 * n * K * D}
	if lw.m.MoE.GateInput {
		op.In = op.In[:3]
		op.GateInput = true
		op.Attr = "unweighted: the gates scaled the inputs (gate_input)"
		op.FLOPs = n * K * D
	}
	lw.fwd(op)
}

// clampExperts makes op, the routed experts' act op, gpt-oss's clamped SwiGLU where the
// model says so.
func (lw *lowerer) clampExperts(op *Op) {
	moe := lw.m.MoE
	if moe.SwigluLimit <= 0 || !op.Activation.Gated() {
		return
	}
	op.SwigluLimit, op.SwigluAlpha = moe.SwigluLimit, moe.SwigluAlpha
	op.Attr = fmt.Sprintf("%s clamped limit=%g alpha=%g", op.Attr, moe.SwigluLimit, moe.SwigluAlpha)
}

// sharedExperts emits layer l's shared experts on hs (marked for tp, or gathered under
// sp) and adds their output to y. With a shared gate their summed output is scaled per
// token by σ(x·g), the logit computed from h, the layer's normalised stream as the router
// reads it (this rank's tokens under sp, whole and replicated under tp).
func (lw *lowerer) sharedExperts(l, h, hs, y int) int {
	pre := fmt.Sprintf("L%d.", l)
	gated := lw.m.MoE.SharedGate
	sum := -1
	for s := 0; s < lw.d.Shared; s++ {
		sh := func(r params.Role) params.ID { return params.ID{Role: r, Layer: l, Expert: s} }
		sy := lw.ffn(fmt.Sprintf("%sshared%d", pre, s), hs, sh(params.RoleSharedIn), sh(params.RoleSharedUp), sh(params.RoleSharedDown), lw.d.ExpertActivation, l)
		switch {
		case !gated:
			y = lw.add(fmt.Sprintf("%smoe_out+shared%d", pre, s), y, sy, l)
		case sum < 0:
			sum = sy
		default:
			sum = lw.add(fmt.Sprintf("%sshared_sum%d", pre, s), sum, sy, l)
		}
	}
	if sum < 0 {
		return y
	}
	z := lw.matmul(pre+"shared_gate_logit", h, params.ID{Role: params.RoleSharedGate, Layer: l, Expert: -1}, l)
	rows, width := lw.p.Buffers[sum].Shape[0], lw.p.Buffers[sum].Shape[1]
	g := lw.act(pre+"shared_gated", KindActivation, rows, width)
	lw.fwd(Op{Kind: OpSigmoidGate, Layer: l, In: []int{sum, z}, Out: []int{g}, Attr: "σ(shared_gate·x) per token (shared_gate)",
		FLOPs: 2 * int64(rows) * int64(width)})
	return lw.add(pre+"moe_out+shared", y, g, l)
}

// denseBeside adds to y, layer l's MoE output, the dense FFN that runs beside the
// experts (moe.parallel_dense) on h, the normalised stream they read. Under tp the FFN
// reads a copy of h, marked for tp (or gathered under sp) on its own: the experts' and
// the router's contributions to h's gradient are whole, the FFN's partial.
func (lw *lowerer) denseBeside(l, h, y int) int {
	if !lw.m.MoE.ParallelDense {
		return y
	}
	pre := fmt.Sprintf("L%d.", l)
	hd := h
	if lw.l.TP > 1 {
		b := lw.p.Buffers[h]
		hd = lw.act(pre+"dense_in", KindActivation, b.Shape...)
		lw.fwd(Op{Kind: OpCopy, Layer: l, In: []int{h}, Out: []int{hd}})
	}
	return lw.addDense(l, lw.colIn(hd, l), y)
}

// addDense emits layer l's dense FFN on hd (ready for its column-parallel products) and
// adds its output to y.
func (lw *lowerer) addDense(l, hd, y int) int {
	pre := fmt.Sprintf("L%d.", l)
	at := func(r params.Role) params.ID { return params.ID{Role: r, Layer: l, Expert: -1} }
	yd := lw.ffn(pre+"ffn", hd, at(params.RoleFFNIn), at(params.RoleFFNUp), at(params.RoleFFNDown), lw.d.FFNActivation, l)
	return lw.add(pre+"moe_out+ffn", y, yd, l)
}

// expertsBesideAttention reports whether layer l runs its experts beside attention
// (moe.parallel_attention in an MoE layer).
func (lw *lowerer) expertsBesideAttention(l int) bool {
	return lw.m.MoE != nil && lw.m.MoE.ParallelAttention && lw.m.IsMoELayer(l)
}

// parallelAttentionLayer emits decoder layer l of Arctic's form: the experts read the
// layer's input x through the FFN norm, attention runs beside them, and the dense FFN
// reads the stream after attention through residual_layernorm:
// x_out = x + attn(x) + moe(norm(x)) + ffn(norm_r(x + attn(x))).
func (lw *lowerer) parallelAttentionLayer(l, x, routerRows, prevProbs int) (int, int) {
	pre := fmt.Sprintf("L%d.", l)
	h := lw.norm(pre+"ffn_in", x, params.RolePostAttnNorm, l)
	xa, probs := lw.attention(l, x, prevProbs)
	hd := lw.colIn(lw.norm(pre+"dense_in", xa, params.RoleResidualNorm, l), l)
	rin := h
	if routerRows >= 0 {
		rin = routerRows
	}
	y := lw.addDense(l, hd, lw.moe(l, h, rin))
	return lw.add(pre+"x_out", xa, y, l), probs
}

// moeVariantBackward emits the backward of a forward op of the variants above and reports
// whether op was one: the gated permute and the unweighted combine of gate_input, and the
// shared gate's sigmoid_gate. The act op's clamp travels on its own rule (grad.go).
func (lw *lowerer) moeVariantBackward(op Op) bool {
	switch {
	case op.Kind == OpPermute && op.GateInput:
		ds, ok := lw.gradOf[op.Out[0]]
		if !ok {
			return true
		}
		h, idx, slot, gates := op.In[0], op.In[1], op.In[2], op.In[3]
		dh, dgates := lw.gradFor(h), lw.gradFor(gates)
		b := Op{Kind: OpPermuteBwd, Layer: op.Layer, In: []int{ds, idx, slot, gates, h}, Out: []int{dh, dgates}, GateInput: true,
			Attr: "the tokens' gradient g·ds and the gates' ⟨ds, x⟩ (gate_input)", FLOPs: 4 * op.FLOPs}
		lw.writeGrads(&b, dh, dgates)
		lw.bwd(b)
		if lw.l.SP() {
			// Under sp the slots' gradient is each tp rank's partial sum (the gather of h
			// sums the tokens' share): so is the gates'. The route's backward needs it whole.
			lw.bwd(Op{Kind: OpAllReduce, Layer: op.Layer, In: []int{dgates}, Out: []int{dgates}, Group: "tp",
				Attr: "sum: the gates' gradient from each rank's partial slots (sequence parallel)", Bytes: lw.p.Buffers[dgates].Bytes()})
		}
	case op.Kind == OpCombine && op.GateInput:
		dy, ok := lw.gradOf[op.Out[0]]
		if !ok {
			return true
		}
		dback := lw.gradFor(op.In[0])
		b := Op{Kind: OpCombineBwd, Layer: op.Layer, In: []int{dy, op.In[0], op.In[1], op.In[2]}, Out: []int{dback}, GateInput: true,
			Attr: "each slot gets its token's gradient (gate_input)", FLOPs: op.FLOPs}
		lw.writeGrads(&b, dback)
		lw.bwd(b)
	case op.Kind == OpSigmoidGate:
		dy, ok := lw.gradOf[op.Out[0]]
		if !ok {
			return true
		}
		dx, dz := lw.gradFor(op.In[0]), lw.gradFor(op.In[1])
		b := Op{Kind: OpSigmoidGateBwd, Layer: op.Layer, In: []int{dy, op.In[0], op.In[1]}, Out: []int{dx, dz}, Attr: op.Attr, FLOPs: 2 * op.FLOPs}
		lw.writeGrads(&b, dx, dz)
		lw.bwd(b)
	default:
		return false
	}
	return true
}
