package step

import (
	"fmt"

	"github.com/moec-dev/moec/compiler/params"
	"github.com/moec-dev/moec/compiler/program"
)

// Where a layer's norms sit (norm_placement), as runtime/nn places them. A sublayer
// (attention, or the FFN or MoE) reads h and gives y:
//
//	pre:      h = norm(x);  x ← x + y
//	sandwich: h = norm(x);  x ← x + norm′(y)
//	post:     h = x;        x ← norm′(x + y)
//
// The norms are the parameters compiler/params names for the placement: attention reads
// input_layernorm (pre, sandwich), the FFN post_attention_layernorm (pre) or
// pre_feedforward_layernorm (sandwich); the outputs' norm′ are post_attention_layernorm
// and post_feedforward_layernorm (post, sandwich). They are ordinary norm, add and copy
// ops, so the backward, recomputation and every parallel layout follow from their rules.
//
// Under post placement a sublayer reads the residual stream itself, through a copy in a
// training program: the residual sum's backward gives its two inputs one gradient buffer
// (the stream's and the sublayer output's), so the sublayer's products must add their
// input gradient to it only after every op that reads it as the output's gradient, which
// the copy's backward, the sublayer's last, does. (A dense FFN or a shared expert beside
// the routed experts would otherwise add to it before the experts' combine reads it.)

// placement is the model's norm placement (pre when unset).
func (lw *lowerer) placement() program.NormPlacement { return lw.d.Placement }

// attnIn is what layer l's attention reads of the residual stream x.
func (lw *lowerer) attnIn(l, x int) int {
	return lw.sublayerIn(fmt.Sprintf("L%d.attn_in", l), x, params.RoleAttnInNorm, l, true)
}

// ffnIn is what layer l's FFN or MoE reads of the residual stream x.
func (lw *lowerer) ffnIn(l, x int) int {
	return lw.sublayerIn(fmt.Sprintf("L%d.ffn_in", l), x, lw.ffnNorm(), l, true)
}

// inferAttnIn and inferFFNIn are attnIn and ffnIn in an inference program, which has no
// backward: the stream needs no copy.
func (lw *lowerer) inferAttnIn(l, x int) int {
	return lw.sublayerIn(fmt.Sprintf("L%d.attn_in", l), x, params.RoleAttnInNorm, l, false)
}

func (lw *lowerer) inferFFNIn(l, x int) int {
	return lw.sublayerIn(fmt.Sprintf("L%d.ffn_in", l), x, lw.ffnNorm(), l, false)
}

// ffnNorm is the role of the FFN's input norm: pre_feedforward_layernorm under sandwich
// placement, post_attention_layernorm (Llama's name) under pre.
func (lw *lowerer) ffnNorm() params.Role {
	if lw.placement() == program.SandwichNorm {
		return params.RolePreFFNNorm
	}
	return params.RolePostAttnNorm
}

// sublayerIn is norm(x) for the role's norm, or under post placement x itself, copied
// where a backward follows (see above).
func (lw *lowerer) sublayerIn(name string, x int, role params.Role, l int, backward bool) int {
	switch {
	case lw.placement() != program.PostNorm:
		return lw.norm(name, x, role, l)
	case !backward:
		return x
	}
	y := lw.act(name, KindActivation, lw.p.Buffers[x].Shape...)
	lw.fwd(Op{Kind: OpCopy, Layer: l, In: []int{x}, Out: []int{y}, Attr: "the residual stream (norm_placement = post)"})
	return y
}

// attnOut adds layer l's attention output o to the residual stream x.
func (lw *lowerer) attnOut(l, x, o int) int {
	return lw.sublayerOut(fmt.Sprintf("L%d.x_attn", l), x, o, params.RolePostAttnNorm, l)
}

// ffnOut adds layer l's FFN or MoE output y to the residual stream x.
func (lw *lowerer) ffnOut(l, x, y int) int {
	return lw.sublayerOut(fmt.Sprintf("L%d.x_out", l), x, y, params.RolePostFFNNorm, l)
}

// sublayerOut is x + y (pre), x + norm′(y) (sandwich) or norm′(x + y) (post), norm′ the
// parameter role's norm.
func (lw *lowerer) sublayerOut(name string, x, y int, role params.Role, l int) int {
	switch lw.placement() {
	case program.SandwichNorm:
		return lw.add(name, x, lw.norm(name+".normed", y, role, l), l)
	case program.PostNorm:
		return lw.norm(name, lw.add(name+".sum", x, y, l), role, l)
	}
	return lw.add(name, x, y, l)
}

// groupsAttr is the route op's listing of node-limited routing ("" without groups): the
// route kernel chooses a token's experts among its top_k_groups best groups', a group
// scored by its best expert (runtime/exec's chooseExperts).
func (lw *lowerer) groupsAttr() string {
	if lw.d.Groups > 0 {
		return fmt.Sprintf(" groups=%d topk_groups=%d", lw.d.Groups, lw.d.TopKGroups)
	}
	return ""
}
