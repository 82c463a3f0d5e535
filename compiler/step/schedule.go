package step

import (
	"fmt"

	"github.com/moec-dev/moec/compiler/params"
)

// microState is what a micro-batch's forward leaves for its backward.
type microState struct {
	tape     []tapeEntry
	gradSeed map[int]int
	in, out  int // the stage's input (tokens' embedding or the received activation) and output
	// probsIn and probsOut are, with attention-weight sharing under pp, the attention
	// weights received from the stage before (its last layer's) and sent to the stage
	// after (-1: none; share_pp.go).
	probsIn, probsOut int
}

// lower emits the whole step: the micro-batches' forward and backward (in pipeline
// order), the gradient reduction and the update.
func (lw *lowerer) lower() {
	lw.declareParams()
	if lw.cache != nil {
		lw.cacheDeclare()
	}
	lw.micros = make([]microState, lw.b.Micro)
	steps := schedule1F1B(lw.l.PP, lw.c.PP, lw.b.Micro)
	for i, step := range steps {
		if step.forward {
			lw.forwardMicro(step.micro)
		} else {
			if i == len(steps)-1 {
				lw.lastBackward = len(lw.p.Ops) // the gradients' last contributions follow (bucket.go)
			}
			lw.backwardMicro(step.micro)
		}
	}
	if lw.cache != nil {
		lw.cacheDrop()
	}
	lw.reduceAndUpdate()
}

// scheduleStep is one micro-batch's forward or backward in a pipeline stage's order.
type scheduleStep struct {
	forward bool
	micro   int
}

// schedule1F1B is the one-forward-one-backward schedule (PipeDream-Flush, as Megatron's
// non-interleaved schedule): stage s of pp runs pp−s−1 warm-up forwards, then alternates
// a forward and a backward, then drains the remaining backwards. With one stage it is
// forward then backward of each micro-batch in turn.
func schedule1F1B(pp, s, micro int) []scheduleStep {
	warm := min(pp-s-1, micro)
	var out []scheduleStep
	f, b := 0, 0
	for ; f < warm; f++ {
		out = append(out, scheduleStep{true, f})
	}
	for f < micro {
		out = append(out, scheduleStep{true, f})
		f++
		out = append(out, scheduleStep{false, b})
		b++
	}
	for ; b < micro; b++ {
		out = append(out, scheduleStep{false, b})
	}
	return out
}

// Pass is one micro-batch's forward or backward in a pipeline stage's order.
type Pass struct {
	Phase Phase // Forward or Backward
	Micro int
}

// PipelineOrder is the order stage of pp runs the micro-batches' passes in: the 1F1B
// schedule the programs are lowered in (a stage's sends and receives of micro-batch m sit
// in its passes of m). Backends that must pair one stage's messages with its neighbour's
// calls (codegen/cudastep's NCCL groups) read the neighbour's order here.
func PipelineOrder(pp, stage, micro int) []Pass {
	var out []Pass
	for _, st := range schedule1F1B(pp, stage, micro) {
		ph := Backward
		if st.forward {
			ph = Forward
		}
		out = append(out, Pass{Phase: ph, Micro: st.micro})
	}
	return out
}

func (lw *lowerer) peer(stage int) int {
	c := lw.c
	c.PP = stage
	return lw.l.RankOf(c)
}

func (lw *lowerer) forwardMicro(m int) {
	lw.micro, lw.phase = m, Forward
	lw.tape, lw.gradSeed = nil, nil
	n, d := lw.b.Tokens(), lw.d.D
	first, last := lw.c.PP == 0, lw.c.PP == lw.l.PP-1
	var x, rows int
	rows = -1
	probs := -1
	probsIn, probsOut := -1, -1
	if first {
		tokens := lw.intAct("tokens", n)
		lw.gatherModel(params.RoleEmbed, params.RolePositions, params.RoleRouterEmbed)
		x, rows = lw.embed(tokens)
	} else {
		x = lw.act("x_in", KindComm, lw.seqTokens(), d)
		lw.emit(Op{Kind: OpRecv, Phase: Forward, Layer: lw.p.FirstLayer, Out: []int{x}, Peer: lw.peer(lw.c.PP - 1), Group: "pp",
			Attr: "activations", Bytes: lw.p.Buffers[x].Bytes()})
		// The attention weights come right after the activations: the CUDA step groups a
		// stage's receives with the sends before them only where no op lies between.
		probsIn = lw.recvProbs() // share_pp.go
		probs = probsIn
		if lw.has(routerTable()) {
			// A later stage that routes on the token-embedding table reads the
			// micro-batch's token ids and looks up its own copy's rows (router_table.go).
			tokens := lw.intAct("tokens", n)
			lw.gatherModel(params.RoleRouterEmbed)
			rows = lw.routerRows(tokens)
		}
	}
	in := x
	for l := lw.p.FirstLayer; l < lw.p.FirstLayer+lw.p.LayerCount; l++ {
		lw.gatherLayer(l)
		lw.prefetchLayer(l + 1)
		x, probs = lw.layer(l, x, rows, probs)
	}
	if last {
		targets := lw.intAct("targets", n)
		lw.gatherModel(params.RoleFinalNorm, params.RoleHead, params.RoleEmbed)
		lw.head(x, targets)
	} else {
		lw.emit(Op{Kind: OpSend, Phase: Forward, Layer: lw.p.FirstLayer + lw.p.LayerCount - 1, In: []int{x}, Peer: lw.peer(lw.c.PP + 1), Group: "pp",
			Attr: "activations", Bytes: lw.p.Buffers[x].Bytes()})
		probsOut = lw.sendProbs(probs) // share_pp.go
	}
	lw.micros[m] = microState{tape: lw.tape, gradSeed: lw.gradSeed, in: in, out: x, probsIn: probsIn, probsOut: probsOut}
}

func (lw *lowerer) backwardMicro(m int) {
	st := &lw.micros[m]
	lw.micro, lw.phase = m, Backward
	lw.tape = st.tape
	lw.gradOf, lw.written = map[int]int{}, map[int]bool{}
	for k, v := range st.gradSeed {
		lw.gradOf[k] = v
		lw.written[v] = true
	}
	first, last := lw.c.PP == 0, lw.c.PP == lw.l.PP-1
	if !last {
		dx := lw.act("dx_out", KindComm, lw.p.Buffers[st.out].Shape...)
		lw.emit(Op{Kind: OpRecv, Phase: Backward, Layer: lw.p.FirstLayer + lw.p.LayerCount - 1, Out: []int{dx}, Peer: lw.peer(lw.c.PP + 1), Group: "pp",
			Attr: "gradients", Bytes: lw.p.Buffers[dx].Bytes()})
		lw.gradOf[st.out] = dx
		lw.written[dx] = true
		lw.recvProbsGrad(st.probsOut) // share_pp.go
	}
	lw.backward()
	if lw.cache != nil {
		lw.cacheEndUse()
	}
	if !first {
		g, ok := lw.gradOf[st.in]
		if !ok {
			panic("step: internal error: the stage input has no gradient")
		}
		lw.emit(Op{Kind: OpSend, Phase: Backward, Layer: lw.p.FirstLayer, In: []int{g}, Peer: lw.peer(lw.c.PP - 1), Group: "pp",
			Attr: "gradients", Bytes: lw.p.Buffers[g].Bytes()})
		lw.sendProbsGrad(st.probsIn) // share_pp.go
	}
	st.tape = nil
}

// groupOf is the reduction group of a parameter.
func (lw *lowerer) groupOf(id params.ID) *group {
	if id.Role.Routed() && len(lw.groups) > 1 {
		return &lw.groups[1]
	}
	return &lw.groups[0]
}

// zeroOf is the ZeRO stage that applies to a group: none where the group has one rank.
func (lw *lowerer) zeroOf(g *group) int {
	if g.size <= 1 {
		return 0
	}
	return lw.l.ZeRO
}

// gatherParams emits, under ZeRO-3, the all-gathers that materialise ids for the current
// phase and micro-batch (one per reduction group), and records the gathered buffers.
func (lw *lowerer) gatherParams(layer int, ids []params.ID) {
	byGroup := map[*group][]int{}
	var order []*group
	for _, id := range ids {
		g := lw.groupOf(id)
		if lw.zeroOf(g) != 3 {
			continue
		}
		key := gatherKey{id, lw.phase, lw.micro}
		if _, done := lw.gathered[key]; done {
			continue
		}
		shape := lw.shapes[id]
		buf := lw.act(fmt.Sprintf("%s/%s", id, lw.phase), KindGathered, shape...)
		lw.p.Buffers[buf].Flat = lw.flat[id]
		lw.gathered[key] = buf
		lw.paramOfBuf[buf] = id
		pid := id
		lw.p.Buffers[buf].Param = &pid
		if _, seen := byGroup[g]; !seen {
			order = append(order, g)
		}
		byGroup[g] = append(byGroup[g], buf)
	}
	for _, g := range order {
		var bytes int64
		for _, b := range byGroup[g] {
			bytes += lw.p.Buffers[b].Bytes()
		}
		lw.emit(Op{Kind: OpAllGather, Phase: lw.phase, Layer: layer, In: []int{g.paramShard}, Out: byGroup[g], Group: g.axis,
			Attr: fmt.Sprintf("%s parameters", g.name), Bytes: bytes * int64(g.size-1) / int64(g.size)})
	}
}

// gatherLayer gathers layer l's parameters (ZeRO-3).
func (lw *lowerer) gatherLayer(l int) {
	if lw.cache != nil {
		lw.cacheUse(l+1, []int{l + 1})
		return
	}
	if lw.l.ZeRO != 3 {
		return
	}
	var ids []params.ID
	for _, id := range lw.order {
		if id.Layer == l {
			ids = append(ids, id)
		}
	}
	lw.gatherParams(l, ids)
}

// prefetchLayer gathers, under ZeRO-3, layer l's parameters one layer ahead of their use
// (as DeepSpeed ZeRO-3 and FSDP's forward_prefetch / BACKWARD_PRE): the forward gathers
// layer l+1 before layer l's compute and the backward layer l−1 before layer l's, so the
// all-gather runs beside the current layer's compute and exactly two layers' gathered
// weights are live at once (the planner's zero3_live_layers). A layer outside this stage
// is not gathered; the unified cache keeps its own residency (cache.go).
func (lw *lowerer) prefetchLayer(l int) {
	if lw.cache != nil || lw.l.ZeRO != 3 || l < lw.p.FirstLayer || l >= lw.p.FirstLayer+lw.p.LayerCount {
		return
	}
	lw.gatherLayer(l)
}

// gatherModel gathers the model-level parameters of the given roles (ZeRO-3).
func (lw *lowerer) gatherModel(roles ...params.Role) {
	if lw.cache != nil {
		lw.cacheModel(roles)
		return
	}
	if lw.l.ZeRO != 3 {
		return
	}
	want := map[params.Role]bool{}
	for _, r := range roles {
		want[r] = true
	}
	var ids []params.ID
	for _, id := range lw.order {
		if id.Layer < 0 && want[id.Role] {
			ids = append(ids, id)
		}
	}
	lw.gatherParams(-1, ids)
}

// reduceAndUpdate emits the gradient reduction and the optimizer update of each group.
func (lw *lowerer) reduceAndUpdate() {
	lw.micro = -1
	late := lw.lateReduced()
	lw.reduceSequenceGrads()
	lw.reduceQKNormGrads()        // attention_qk.go
	lw.reduceTiedEmbedding()      // tied.go
	lw.reduceRouterTable()        // router_table.go
	loads := lw.routerBiasLoads() // routing_bias.go
	type reduced struct {
		g      *group
		ps     []int // the group's whole parameter tensors (none under ZeRO-3)
		grads  []int // what the update reads: the reduced tensors, or the shard
		bytes  int64
		active bool
	}
	var rs []reduced
	for gi := range lw.groups {
		g := &lw.groups[gi]
		r := reduced{g: g}
		var gs []int
		for _, id := range lw.order {
			if lw.groupOf(id) != g {
				continue
			}
			if lw.param[id] >= 0 {
				r.ps = append(r.ps, lw.param[id])
			}
			gs = append(gs, lw.grad[id])
			r.bytes += lw.p.Buffers[lw.grad[id]].Bytes()
		}
		if len(gs) == 0 {
			continue
		}
		r.active, r.grads = true, gs
		switch zero := lw.zeroOf(g); {
		case g.size > 1 && zero <= 1:
			// The buckets reduced during the last backward (bucket.go); the rest here.
			gs = lw.reduceInBuckets(g, gs, late)
			if len(gs) == 0 {
				break
			}
			var bytes int64
			for _, b := range gs {
				bytes += lw.p.Buffers[b].Bytes()
			}
			lw.emit(Op{Kind: OpAllReduce, Phase: Reduce, Layer: -1, In: gs, Out: gs, Group: g.axis, Attr: fmt.Sprintf("%s gradients, sum (the loss is a mean over replicas)", g.name),
				Bytes: 2 * bytes * int64(g.size-1) / int64(g.size)})
		case g.size > 1:
			lw.emit(Op{Kind: OpReduceScatter, Phase: Reduce, Layer: -1, In: gs, Out: []int{g.gradShard}, Group: g.axis, Attr: fmt.Sprintf("%s gradients, sum", g.name),
				Bytes: r.bytes * int64(g.size-1) / int64(g.size)})
			r.grads = []int{g.gradShard}
		}
		rs = append(rs, r)
	}
	// The global gradient norm (for clipping) reads every group's reduced gradients:
	// each rank sums the squares of its data-parallel partition (tensors every tp rank
	// holds whole count on tp rank 0), then the sums are reduced over dp, tp and pp.
	var all []int
	for _, r := range rs {
		all = append(all, r.grads...)
	}
	norm := lw.buf("grad_norm_sq", KindScalar, 1)
	lw.emit(Op{Kind: OpGradNorm, Phase: Update, Layer: -1, In: all, Out: []int{norm}, Attr: "sum of squares of this rank's partition"})
	for _, axis := range []struct {
		name string
		size int
	}{{"dp", lw.l.DP}, {"tp", lw.l.TP}, {"pp", lw.l.PP}} {
		if axis.size > 1 {
			lw.emit(Op{Kind: OpAllReduce, Phase: Update, Layer: -1, In: []int{norm}, Out: []int{norm}, Group: axis.name, Attr: "sum", Bytes: 4})
		}
	}
	// One optimizer step over every group (the clipping norm is global): the offloaded
	// gradients all reach the host first, then the groups update, then the weights return.
	type update struct {
		r         reduced
		target    []int
		shardAttr string
		hostGrads int
		hostW     int
	}
	var us []update
	for _, r := range rs {
		g := r.g
		zero := lw.zeroOf(g)
		u := update{r: r, target: r.ps}
		if zero == 3 {
			u.target = []int{g.paramShard}
		}
		if zero >= 1 {
			u.shardAttr = fmt.Sprintf(" on shard %d of %d", lw.shardIndex(g), g.size)
		}
		if lw.l.OffloadOpt {
			u.hostGrads = lw.buf(fmt.Sprintf("grads[%s]@host", g.name), KindComm, int(lw.shardElems(g)))
			lw.p.Buffers[u.hostGrads].Tier = Host
			u.hostW = lw.buf(fmt.Sprintf("params[%s]@host", g.name), KindOptimizer, int(lw.shardElems(g)))
			lw.p.Buffers[u.hostW].Tier = Host
			lw.emit(Op{Kind: OpToHost, Phase: Update, Layer: -1, In: r.grads, Out: []int{u.hostGrads}, Attr: g.name + " gradients" + u.shardAttr,
				Bytes: lw.shardElems(g) * 4})
		}
		us = append(us, u)
	}
	for _, u := range us {
		g := u.r.g
		if lw.l.OffloadOpt {
			lw.emit(Op{Kind: OpAdamW, Phase: Update, Layer: -1, In: []int{u.hostW, u.hostGrads, g.m, g.v, norm}, Out: []int{u.hostW, g.m, g.v},
				Attr: g.name + " on the host" + u.shardAttr, FLOPs: 12 * lw.shardElems(g)})
			continue
		}
		in := append(append(append([]int(nil), u.target...), u.r.grads...), g.m, g.v, norm)
		out := append(append([]int(nil), u.target...), g.m, g.v)
		lw.emit(Op{Kind: OpAdamW, Phase: Update, Layer: -1, In: in, Out: out, Attr: g.name + u.shardAttr, FLOPs: 12 * lw.shardElems(g)})
	}
	for _, u := range us {
		g := u.r.g
		zero := lw.zeroOf(g)
		if lw.l.OffloadOpt {
			lw.emit(Op{Kind: OpToDevice, Phase: Update, Layer: -1, In: []int{u.hostW}, Out: u.target, Attr: g.name + " parameters" + u.shardAttr,
				Bytes: lw.shardElems(g) * 4})
		}
		if zero == 1 || zero == 2 {
			lw.emit(Op{Kind: OpAllGather, Phase: Update, Layer: -1, In: u.r.ps, Out: u.r.ps, Group: g.axis, Attr: g.name + " updated shards",
				Bytes: u.r.bytes * int64(g.size-1) / int64(g.size)})
		}
	}
	lw.routerBiasUpdates(loads) // routing_bias.go
}

func (lw *lowerer) shardElems(g *group) int64 {
	if lw.zeroOf(g) == 0 {
		return g.elements
	}
	return ceilDiv(g.elements, int64(g.size))
}

func (lw *lowerer) shardIndex(g *group) int {
	if g.axis == "edp" {
		return lw.c.EDP
	}
	return lw.c.DP
}
