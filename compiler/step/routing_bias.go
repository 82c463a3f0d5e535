package step

import (
	"fmt"

	"github.com/moec-dev/moec/compiler/params"
)

// Auxiliary-loss-free balancing (DeepSeek-V3's noaux_tc, moe.aux_free_bias), as runtime/nn
// computes it (routing_bias.go there):
//
//   - the route op reads the layer's selection bias (e_score_correction_bias, a [E]
//     parameter) as its second input: a token's experts are the top_k of score + bias
//     (with groups, a group scores the sum of its two best biased scores), its gates the
//     unbiased scores of the chosen experts;
//   - the bias takes no gradient: router_bias_bwd writes its gradient's zeros, so AdamW,
//     which does not decay vectors, leaves it where the update below puts it;
//   - after the step each MoE layer sums its kept assignments per expert over the step's
//     micro-batches (expert_load), all-reduced over the data-parallel ranks, which route
//     different tokens (tensor-parallel ranks route the same ones, pipeline stages hold
//     other layers), so every rank moves the same bias; router_bias_update, after the
//     optimizer, moves b_e by aux_free_bias·sign(mean load − load_e).
//
// The update writes the bias in place on every rank that holds it: the whole tensor, or
// under ZeRO-3 the elements of it the rank's flat parameter shard holds (BiasAt: where the
// bias starts in the shard); with an offloaded optimizer the host master copy moves too
// (to_device copies it over the device's). The unified cache is refused (E0510).

// Ops of auxiliary-loss-free balancing.
const (
	OpExpertLoad       OpKind = "expert_load"        // loads (+)= a micro-batch's kept assignments per expert
	OpRouterBiasBwd    OpKind = "router_bias_bwd"    // the selection bias's gradient: zeros (it moves by its update only)
	OpRouterBiasUpdate OpKind = "router_bias_update" // b_e += rate·sign(mean load − load_e)
)

// auxFree reports whether the model's MoE layers route with a selection bias.
func (lw *lowerer) auxFree() bool {
	return lw.m.MoE != nil && lw.d.E > 0 && lw.m.MoE.AuxFreeBias > 0
}

// routerBiasInputs is what the route op of layer l reads besides its logits: the layer's
// selection bias under aux-free balancing.
func (lw *lowerer) routerBiasInputs(l int) []int {
	if !lw.auxFree() {
		return nil
	}
	return []int{lw.w(params.ID{Role: params.RoleRouterCorrection, Layer: l, Expert: -1})}
}

// routerBiasAttr is the route op's listing of its selection bias ("" without).
func (lw *lowerer) routerBiasAttr() string {
	if !lw.auxFree() {
		return ""
	}
	return " selection_bias"
}

// routerBiasGrad emits, for a route op reading a selection bias, the zeros of the bias's
// gradient (the gradient the reduction and the optimizer read).
func (lw *lowerer) routerBiasGrad(op Op) {
	if len(op.In) < 2 {
		return
	}
	db, ok := lw.paramGrad(op.In[1])
	if !ok {
		return
	}
	b := Op{Kind: OpRouterBiasBwd, Layer: op.Layer, Out: []int{db}, Attr: "no gradient: the bias moves by router_bias_update"}
	lw.writeGrads(&b, db)
	lw.bwd(b)
}

// layerLoads is an MoE layer's expert loads over the step, the buffer its bias moves by.
type layerLoads struct{ layer, loads int }

// routerBiasLoads emits, before the gradients' reduction, each held MoE layer's load count
// over the step and its sum over the data-parallel ranks.
func (lw *lowerer) routerBiasLoads() []layerLoads {
	if !lw.auxFree() {
		return nil
	}
	E := lw.d.E
	var out []layerLoads
	for l := lw.p.FirstLayer; l < lw.p.FirstLayer+lw.p.LayerCount; l++ {
		if !lw.m.IsMoELayer(l) {
			continue
		}
		loads := lw.buf(fmt.Sprintf("L%d.expert_load", l), KindScalar, E)
		for m := 0; m < lw.b.Micro; m++ {
			kept, ok := lw.byName[fmt.Sprintf("L%d.expert_kept@%d", l, m)]
			if !ok {
				panic(fmt.Sprintf("step: internal error: layer %d has no kept counts for micro-batch %d", l, m))
			}
			lw.emit(Op{Kind: OpExpertLoad, Phase: Reduce, Layer: l, In: []int{kept}, Out: []int{loads}, Acc: []bool{m > 0},
				Attr: fmt.Sprintf("kept assignments per expert, micro-batch %d", m), FLOPs: int64(E)})
		}
		if lw.l.DP > 1 {
			lw.emit(Op{Kind: OpAllReduce, Phase: Reduce, Layer: l, In: []int{loads}, Out: []int{loads}, Group: "dp",
				Attr: "expert loads, sum (each replica routes its own tokens)", Bytes: 2 * int64(E) * 4 * int64(lw.l.DP-1) / int64(lw.l.DP)})
		}
		out = append(out, layerLoads{l, loads})
	}
	return out
}

// routerBiasUpdates emits, after the optimizer (and its gathers), each layer's bias move.
// The ops belong to the step's update, outside any layer (Layer -1), as AdamW's.
func (lw *lowerer) routerBiasUpdates(ls []layerLoads) {
	rate := 0.0
	if lw.auxFree() {
		rate = lw.m.MoE.AuxFreeBias
	}
	for _, ll := range ls {
		id := params.ID{Role: params.RoleRouterCorrection, Layer: ll.layer, Expert: -1}
		g := lw.groupOf(id)
		zero := lw.zeroOf(g)
		var lo int64 // the first element of the group's flat vector this rank's shard holds
		if zero >= 1 {
			lo = int64(lw.shardIndex(g)) * lw.shardElems(g)
		}
		type target struct {
			buf   int
			at    int64 // the bias's first element in buf (outside it where buf is a shard without it)
			where string
		}
		ts := []target{{lw.param[id], 0, ""}}
		if zero == 3 {
			ts[0] = target{g.paramShard, lw.flat[id] - lo, fmt.Sprintf(" (its elements in shard %d of %d)", lw.shardIndex(g), g.size)}
		}
		if lw.l.OffloadOpt {
			// The host master copy, which to_device copies over the device's each step.
			ts = append(ts, target{lw.byName[fmt.Sprintf("params[%s]@host", g.name)], lw.flat[id] - lo, " (host master copy)"})
		}
		for _, t := range ts {
			lw.emit(Op{Kind: OpRouterBiasUpdate, Phase: Update, Layer: -1, In: []int{ll.loads, t.buf}, Out: []int{t.buf}, BiasRate: rate, BiasAt: t.at,
				Attr: fmt.Sprintf("L%d selection bias += %g·sign(mean load − load)%s", ll.layer, rate, t.where), FLOPs: 3 * int64(lw.d.E)})
		}
	}
}

// auxFreeUnsupported lists the layouts under which aux-free balancing's in-place bias
// update is not lowered (see above).
func auxFreeUnsupported(moeAuxFree bool, l Layout) []Unsupported {
	if !moeAuxFree {
		return nil
	}
	const feature = "auxiliary-loss-free bias balancing (moe.aux_free_bias)"
	if l.Cache.On() {
		return []Unsupported{{feature, "the unified cache moves the weights between the host and device tiers by unit; the selection bias's update is not lowered into its pages"}}
	}
	return nil
}
