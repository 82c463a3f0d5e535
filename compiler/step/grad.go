package step

import (
	"fmt"
	"strings"

	"github.com/moec-dev/moec/compiler/params"
)

// The backward of a micro-batch is derived from its forward tape, op by op in reverse,
// by each op kind's rule below. A gradient buffer with two contributions is written by
// the first and accumulated (+=) by the second; parameter gradients always accumulate
// (over micro-batches), and are cleared after the update.

// gradFor returns the gradient buffer of forward buffer x, creating it.
func (lw *lowerer) gradFor(x int) int {
	if g, ok := lw.gradOf[x]; ok {
		return g
	}
	b := lw.p.Buffers[x]
	g := lw.act("d"+trimMicro(b.Name), KindActGrad, b.Shape...)
	lw.gradOf[x] = g
	return g
}

func trimMicro(name string) string {
	for i := len(name) - 1; i >= 0; i-- {
		if name[i] == '@' {
			return name[:i]
		}
	}
	return name
}

// paramGrad returns the gradient buffer of a parameter buffer (persistent or gathered).
func (lw *lowerer) paramGrad(w int) (int, bool) {
	id, ok := lw.paramOfBuf[w]
	if !ok {
		return 0, false
	}
	if lw.cache != nil {
		return lw.cacheGrad(id), true
	}
	return lw.grad[id], true
}

// writeGrads records how op writes its gradient outputs (outs, in the op's output
// order): it adds to a buffer that already holds a contribution and overwrites it
// otherwise.
func (lw *lowerer) writeGrads(op *Op, outs ...int) {
	op.Acc = make([]bool, len(op.Out))
	for i, g := range op.Out {
		if !contains(outs, g) {
			continue
		}
		if lw.paramGradBufs[g] {
			// A parameter's gradient collects over layers that share it and over
			// micro-batches: the step's first contribution writes it.
			op.Acc[i] = lw.paramWritten[g]
			lw.paramWritten[g] = true
			continue
		}
		op.Acc[i] = lw.written[g]
		lw.written[g] = true
	}
}

func contains(xs []int, x int) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

// bwd emits a backward op. Under ZeRO-3 the forward's gathered parameters were freed:
// the op reads the backward's own gathered copies, gathered a layer at a time at the
// layer's first backward op, together with the next layer back's (one layer ahead).
func (lw *lowerer) bwd(op Op) {
	op.Phase = Backward
	op.WhenRecompute = op.WhenRecompute || lw.cond
	if lw.cache != nil {
		lw.cacheRemap(&op)
	} else if lw.l.ZeRO == 3 {
		if l := op.Layer; l >= lw.p.FirstLayer && l < lw.p.FirstLayer+lw.p.LayerCount {
			// The layer's first backward op: its weights (if not prefetched) and the
			// next layer back's, one layer ahead (schedule.go's prefetchLayer).
			lw.prefetchLayer(l)
			lw.prefetchLayer(l - 1)
		}
		for i, x := range op.In {
			id, ok := lw.paramOfBuf[x]
			if !ok || lw.p.Buffers[x].Kind != KindGathered {
				continue
			}
			key := gatherKey{id, Backward, lw.micro}
			if _, done := lw.gathered[key]; !done {
				if id.Layer >= 0 {
					lw.gatherLayer(id.Layer)
				} else {
					lw.gatherParams(-1, []params.ID{id})
				}
			}
			if g, ok := lw.gathered[key]; ok {
				op.In[i] = g
			}
		}
	}
	lw.emit(op)
}

// backward emits the backward of the current micro-batch's tape.
func (lw *lowerer) backward() {
	recomputed := map[int]bool{}
	for i := len(lw.tape) - 1; i >= 0; i-- {
		if l := lw.tape[i].op.Layer; l >= 0 && !recomputed[l] && lw.recomputesHere(lw.tape[i]) {
			recomputed[l] = true
			lw.recomputeLayer(l, lw.recomputed)
		}
		e := lw.tape[i]
		op := e.op
		if e.comm {
			continue // the g operator: the gradient passes as it is
		}
		if e.tpCopy {
			if g, ok := lw.gradOf[op.In[0]]; ok {
				lw.bwd(Op{Kind: OpAllReduce, Layer: op.Layer, In: []int{g}, Out: []int{g}, Group: "tp", Attr: "sum (column-parallel input)",
					Bytes: lw.p.Buffers[g].Bytes()})
			}
			continue
		}
		if e.share {
			dsel, ok := lw.gradOf[op.Out[0]]
			if !ok {
				continue
			}
			// The selected weights' gradient goes to whichever weights were used.
			dp, dprev := lw.gradFor(op.In[0]), lw.gradFor(op.In[1])
			b := Op{Kind: "share_select_bwd", Layer: op.Layer, In: []int{dsel}, Out: []int{dp, dprev}, Attr: op.Attr}
			lw.writeGrads(&b, dp, dprev)
			lw.bwd(b)
			continue
		}
		lw.backwardOf(op)
	}
}

func (lw *lowerer) needsGrad(x int) bool {
	k := lw.p.Buffers[x].Kind
	return k != KindInput && k != KindDispatch && k != KindScalar
}

func (lw *lowerer) backwardOf(op Op) {
	lw.cond = op.WhenRecompute
	defer func() { lw.cond = false }()
	if lw.moeVariantBackward(op) || lw.qkBackward(op) || lw.mlaBackward(op) { // moe_variants.go, attention_qk.go, mla.go
		return
	}
	flops := op.FLOPs
	switch op.Kind {
	case OpMatMul:
		dy, ok := lw.gradOf[op.Out[0]]
		if !ok {
			return
		}
		x, w := op.In[0], op.In[1]
		dw, _ := lw.paramGrad(w)
		outs := []int{dw}
		if len(op.In) > 2 {
			db, _ := lw.paramGrad(op.In[2])
			outs = append(outs, db)
		}
		b := Op{Kind: OpMatMulDW, Layer: op.Layer, In: []int{dy, lw.regather(x, op.Layer)}, Out: outs, Attr: condOf(op.Attr), BiasOnTPRank0: op.BiasOnTPRank0, FLOPs: flops}
		lw.writeGrads(&b, outs...)
		lw.bwd(b)
		if lw.needsGrad(x) {
			dx := lw.gradFor(x)
			b := Op{Kind: OpMatMulDX, Layer: op.Layer, In: []int{dy, w}, Out: []int{dx}, Attr: condOf(op.Attr), FLOPs: flops}
			lw.writeGrads(&b, dx)
			lw.bwd(b)
		}
	case OpNorm:
		dh, ok := lw.gradOf[op.Out[0]]
		if !ok {
			return
		}
		outs := []int{lw.gradFor(op.In[0])}
		for _, w := range op.In[1:] {
			g, _ := lw.paramGrad(w)
			outs = append(outs, g)
		}
		b := Op{Kind: OpNormBwd, Layer: op.Layer, In: []int{dh, op.In[0], op.In[1], op.Out[1]}, Out: outs, Attr: op.Attr, FLOPs: 2 * flops}
		lw.writeGrads(&b, outs...)
		lw.bwd(b)
	case OpAdd:
		// The residual sum passes its gradient to both inputs: they share the buffer
		// where they have no gradient yet, else it is accumulated.
		dy, ok := lw.gradOf[op.Out[0]]
		if !ok {
			return
		}
		for _, x := range op.In {
			if g, ok := lw.gradOf[x]; ok {
				b := Op{Kind: OpAccumulate, Layer: op.Layer, In: []int{dy}, Out: []int{g}, FLOPs: lw.p.Buffers[dy].Elements()}
				lw.writeGrads(&b, g)
				b.Acc[0] = true // the residual's own gradient is already there
				lw.bwd(b)
				continue
			}
			lw.gradOf[x] = dy
		}
	case OpCopy:
		dy, ok := lw.gradOf[op.Out[0]]
		if !ok {
			return
		}
		dx := lw.gradFor(op.In[0])
		b := Op{Kind: OpAccumulate, Layer: op.Layer, In: []int{dy}, Out: []int{dx}, FLOPs: lw.p.Buffers[dy].Elements()}
		lw.writeGrads(&b, dx)
		lw.bwd(b)
	case OpRotary:
		dq, okq := lw.gradOf[op.Out[0]]
		dk, okk := lw.gradOf[op.Out[1]]
		if okq && okk {
			lw.bwd(Op{Kind: OpRotaryBwd, Layer: op.Layer, In: []int{dq, dk}, Out: []int{dq, dk}, Attr: op.Attr, FLOPs: flops})
		}
	case OpScores:
		ds, ok := lw.gradOf[op.Out[0]]
		if !ok {
			return
		}
		dq, dk := lw.gradFor(op.In[0]), lw.gradFor(op.In[1])
		b := Op{Kind: OpScoresBwd, Layer: op.Layer, In: []int{ds, op.In[0], op.In[1]}, Out: []int{dq, dk}, Attr: condOf(op.Attr), FLOPs: 2 * flops}
		lw.writeGrads(&b, dq, dk)
		lw.bwd(b)
	case OpHeadMix:
		dy, ok := lw.gradOf[op.Out[0]]
		if !ok {
			return
		}
		dx := lw.gradFor(op.In[0])
		dw, _ := lw.paramGrad(op.In[1])
		b := Op{Kind: OpHeadMixBwd, Layer: op.Layer, In: []int{dy, op.In[0], op.In[1]}, Out: []int{dx, dw}, Attr: op.Attr, FLOPs: 2 * flops}
		lw.writeGrads(&b, dx, dw)
		lw.bwd(b)
	case OpSoftmax:
		lw.softmaxBackward(op) // attention.go
	case OpAttnAV:
		da, ok := lw.gradOf[op.Out[0]]
		if !ok {
			return
		}
		dp, dv := lw.gradFor(op.In[0]), lw.gradFor(op.In[1])
		b := Op{Kind: OpAttnAVBwd, Layer: op.Layer, In: []int{da, op.In[0], op.In[1]}, Out: []int{dp, dv}, FLOPs: 2 * flops}
		lw.writeGrads(&b, dp, dv)
		lw.bwd(b)
	case OpAct:
		da, ok := lw.gradOf[op.Out[0]]
		if !ok {
			return
		}
		var outs []int
		for _, x := range op.In {
			outs = append(outs, lw.gradFor(x))
		}
		b := Op{Kind: OpActBwd, Layer: op.Layer, In: append([]int{da}, op.In...), Out: outs, Attr: op.Attr, Activation: op.Activation,
			SwigluLimit: op.SwigluLimit, SwigluAlpha: op.SwigluAlpha, FLOPs: flops}
		lw.writeGrads(&b, outs...)
		lw.bwd(b)
	case OpRouter:
		lw.routerBiasGrad(op) // routing_bias.go
		dgates, ok := lw.gradOf[op.Out[1]]
		if !ok {
			return
		}
		dl := lw.gradFor(op.In[0])
		// In: the gates' gradient, the logits, then the route's own outputs (index,
		// gates, scores, lse, slots, kept and routed counts).
		b := Op{Kind: OpRouterBwd, Layer: op.Layer, In: append([]int{dgates, op.In[0]}, op.Out[:7]...), Out: []int{dl},
			Attr: "gates' gradient plus the balance and z-loss terms", FLOPs: flops}
		lw.writeGrads(&b, dl)
		lw.bwd(b)
	case OpPermute:
		ds, ok := lw.gradOf[op.Out[0]]
		if !ok {
			return
		}
		dh := lw.gradFor(op.In[0])
		b := Op{Kind: OpPermuteBwd, Layer: op.Layer, In: []int{ds, op.In[1], op.In[2]}, Out: []int{dh}}
		lw.writeGrads(&b, dh)
		lw.bwd(b)
	case OpAllToAllV:
		dr, ok := lw.gradOf[op.Out[0]]
		if !ok {
			return
		}
		ds := lw.gradFor(op.In[0])
		lw.written[ds] = true
		lw.bwd(Op{Kind: OpAllToAllV, Layer: op.Layer, In: []int{dr}, Out: []int{ds}, Group: op.Group, Attr: "gradients back (reverse exchange)",
			Bytes: op.Bytes * lw.p.Buffers[dr].Bytes() / max(lw.p.Buffers[op.Out[0]].Bytes(), 1)})
	case OpGroupedMM:
		dy, ok := lw.gradOf[op.Out[0]]
		if !ok {
			return
		}
		var dws []int
		for _, w := range op.In[1:] {
			g, _ := lw.paramGrad(w)
			dws = append(dws, g)
		}
		b := Op{Kind: OpGroupedMMDW, Layer: op.Layer, In: []int{dy, op.In[0]}, Out: dws, Attr: op.Attr, BiasOnTPRank0: op.BiasOnTPRank0, FLOPs: flops}
		lw.writeGrads(&b, dws...)
		lw.bwd(b)
		dx := lw.gradFor(op.In[0])
		b = Op{Kind: OpGroupedMMDX, Layer: op.Layer, In: append([]int{dy}, op.In[1:]...), Out: []int{dx}, Attr: op.Attr, FLOPs: flops}
		lw.writeGrads(&b, dx)
		lw.bwd(b)
	case OpCombine:
		dy, ok := lw.gradOf[op.Out[0]]
		if !ok {
			return
		}
		dback, dgates := lw.gradFor(op.In[0]), lw.gradFor(op.In[3])
		b := Op{Kind: OpCombineBwd, Layer: op.Layer, In: []int{dy, op.In[0], op.In[1], op.In[2], op.In[3]}, Out: []int{dback, dgates}, FLOPs: 2 * flops}
		lw.writeGrads(&b, dback, dgates)
		lw.bwd(b)
	case OpEmbed:
		dx, ok := lw.gradOf[op.Out[0]]
		if !ok {
			return
		}
		dw, _ := lw.paramGrad(op.In[1])
		b := Op{Kind: OpEmbedBwd, Layer: op.Layer, In: []int{dx, op.In[0]}, Out: []int{dw}, Attr: op.Attr, Rows: op.Rows}
		lw.writeGrads(&b, dw)
		lw.bwd(b)
	case OpAllGather, OpReduceScatter, OpSeqSlice:
		lw.sequenceBackward(op) // sequence parallelism's conjugate pairs (sequence.go)
	case OpCrossEntropy, OpDistillLoss:
		// Fused: the forward wrote the logits' gradient (gradSeed).
	default:
		if !lw.attnVariantBackward(op) { // attention.go
			panic(fmt.Sprintf("step: internal error: no backward rule for %s", op.Kind))
		}
	}
}

// recomputeLayer runs layer l's forward again, into new buffers, just before its backward
// (recompute = full): the forward kept only what later layers read. The layer's tape
// entries are rewritten to the new buffers, so its backward reads them, and gradients
// already given to the old buffers (the layer's output, weights a later layer reused)
// are the new buffers' too.
//
// Only the tape entries keep selects run again (every one under full recompute, the
// attention core under selective: selective.go); the others keep their forward values and
// read the recomputed buffers where their inputs were recomputed.
func (lw *lowerer) recomputeLayer(l int, keep func(tapeEntry) bool) {
	remap := map[int]int{}
	re := func(b int) int {
		if n, ok := remap[b]; ok {
			return n
		}
		return b
	}
	for i := range lw.tape {
		e := &lw.tape[i]
		if e.op.Layer != l {
			continue
		}
		op := e.op
		op.In = append([]int(nil), op.In...)
		for k, b := range op.In {
			op.In[k] = re(b)
		}
		if e.tpCopy || !keep(*e) {
			e.op = op
			continue
		}
		op.Out = append([]int(nil), op.Out...)
		for k, b := range op.Out {
			if contains(e.op.In, b) { // in place
				op.Out[k] = re(b)
				continue
			}
			old := lw.p.Buffers[b]
			n := lw.act(trimMicro(old.Name)+"/re", old.Kind, old.Shape...)
			lw.p.Buffers[n].Int = old.Int
			remap[b] = n
			op.Out[k] = n
		}
		op.Recomputed = true
		op.Acc = nil
		lw.bwd(op)
		emitted := lw.p.Ops[len(lw.p.Ops)-1]
		e.op = op
		e.op.In = emitted.In // the backward's gathered weights under ZeRO-3
		e.op.Phase = Forward
	}
	for old, n := range remap {
		if g, ok := lw.gradOf[old]; ok {
			lw.gradOf[n] = g
		}
	}
}

// condOf keeps the attention-sharing condition of a forward op for its backward.
func condOf(attr string) string {
	if i := strings.Index(attr, "when="); i >= 0 {
		return attr[i:]
	}
	return ""
}
