package step

import (
	"github.com/moec-dev/moec/compiler/params"
)

// Sequence parallelism (Korthikanti et al. 2022, Megatron-LM's --sequence-parallel).
//
// With tp > 1 and Layout.SequenceParallel, the values between the tensor-parallel
// column/row pairs (the residual stream, the norms and their outputs, the router's input)
// are held by token: tp rank r holds rows [r·n/tp, (r+1)·n/tp) of the micro-batch's n
// tokens (sequences one after another, so tp must divide micro_batch × seq_len: the sp
// entry of Axes). Megatron's conjugate pairs replace tp's all-reduces:
//
//   - before a column-parallel product, an all-gather over tp of the rank's rows (its
//     backward: a reduce-scatter of the products' partial input gradients), in place of
//     the f operator's backward all-reduce (colIn);
//   - after a row-parallel product, a reduce-scatter of the partial sums to the rank's rows
//     (its backward: an all-gather of the rows' gradients), in place of the g operator's
//     all-reduce (rowOut). The vocabulary-parallel embedding's partial rows are
//     reduce-scattered the same way.
//
// The norms' scales (and biases) and the router's weights now see only the rank's tokens:
// their gradients are summed over tp before the data-parallel reduction (as Megatron's
// finalize_model_grads all-reduces the sequence-parallel parameters' gradients).
//
// MoE layers. Megatron routes each tp rank's own tokens, all-to-alls them over ep, then
// all-gathers the experts' tokens over tp (and reduce-scatters after the experts), and
// all-reduces the tokens-per-expert counts over tp so the balance loss sees the whole
// sequence; its capacity drops are then decided per slice. Here the router's logits are
// computed on the rank's tokens (its input is split, as Megatron's) and all-gathered over
// tp (n × experts values, small next to the tokens), so routing, the capacity's priority
// order and the balance and z-loss terms are the whole micro-batch's, exactly as without
// sequence parallelism (a run with sp computes what the same run without it computes).
// The experts read the normalised stream all-gathered over tp (the same tokens Megatron
// gathers after its all-to-all; here before the permute, so each ep rank exchanges the
// whole micro-batch's slots as without sp), their column-parallel input gradients stay
// partial until the gather's reduce-scatter sums them, and the combined output is sliced
// to the rank's tokens (its backward: an all-gather of the slice's gradient).

// Attributes of the sequence-parallel collectives: the executor reads them to gather and
// scatter along the token dimension rather than a ZeRO group's flat vector.
const (
	attrSequence = "sequence"
	// attrSequenceWhole marks a gather whose output's gradient is whole on every rank (the
	// router's logits, routed identically by every tp rank): its backward is a slice.
	attrSequenceWhole = "sequence, whole gradient"
)

// Sequence reports whether op is a sequence-parallel collective or slice: it moves rows
// of the token dimension between the tp ranks (the rank's rows are its tp coordinate's).
func (op *Op) Sequence() bool { return op.AlongTokens }

// seqTokens is the number of tokens a rank holds between the tensor-parallel pairs.
func (lw *lowerer) seqTokens() int {
	if lw.l.SP() {
		return lw.b.Tokens() / lw.l.TP
	}
	return lw.b.Tokens()
}

// colIn prepares x for column-parallel products: under sp the all-gather of every rank's
// tokens (returning the whole value), else Megatron's f operator on x itself.
func (lw *lowerer) colIn(x, layer int) int {
	if !lw.l.SP() {
		lw.markTPCopy(x, layer)
		return x
	}
	return lw.seqGather(x, layer, attrSequence)
}

// seqState records the forward's gathers of column-parallel inputs, which the backward
// gathers again rather than keeping (Megatron's ColumnParallelLinear saves its input's
// sequence slice and all-gathers it again for the weight gradient).
type seqState struct {
	gatheredFrom map[int]int // a gathered buffer → the rank's rows it was gathered from
	regathered   map[int]int // a gathered buffer → its backward copy
}

// seqGather emits the all-gather over tp of x's rows into a whole value.
func (lw *lowerer) seqGather(x, layer int, attr string) int {
	b := lw.p.Buffers[x]
	shape := append([]int(nil), b.Shape...)
	shape[0] *= lw.l.TP
	y := lw.act(trimMicro(b.Name)+"/gathered", b.Kind, shape...)
	lw.fwd(Op{Kind: OpAllGather, Layer: layer, In: []int{x}, Out: []int{y}, Group: "tp", Attr: attr,
		AlongTokens: true, WholeGradient: attr == attrSequenceWhole, Bytes: b.Bytes() * int64(lw.l.TP-1)})
	if attr == attrSequence {
		if lw.seq.gatheredFrom == nil {
			lw.seq.gatheredFrom, lw.seq.regathered = map[int]int{}, map[int]int{}
		}
		lw.seq.gatheredFrom[y] = x
	}
	return y
}

// regather returns the buffer a weight gradient reads for the forward value x: under sp,
// for a gathered column-parallel input, a copy gathered again in the backward (once per
// micro-batch, before its first reader), so the whole value is not kept from the forward
// to the backward; else x. A value recompute = full computed again is read as it is.
func (lw *lowerer) regather(x, layer int) int {
	local, ok := lw.seq.gatheredFrom[x]
	if !ok {
		return x
	}
	if y, ok := lw.seq.regathered[x]; ok {
		return y
	}
	b := lw.p.Buffers[x]
	y := lw.act(trimMicro(b.Name)+"/regathered", b.Kind, b.Shape...)
	cond := lw.cond
	lw.cond = false // every reader of the copy may read it, conditional or not
	lw.bwd(Op{Kind: OpAllGather, Layer: layer, In: []int{local}, Out: []int{y}, Group: "tp", Attr: attrSequence + " again for the weight gradients", AlongTokens: true,
		Bytes: lw.p.Buffers[local].Bytes() * int64(lw.l.TP-1)})
	lw.cond = cond
	lw.seq.regathered[x] = y
	return y
}

// rowOut completes a row-parallel product's partial sums y: under sp the reduce-scatter to
// this rank's tokens (returning them), else the all-reduce (Megatron's g operator) in place.
func (lw *lowerer) rowOut(y, layer int) int {
	if !lw.l.SP() {
		lw.reduceTP(y, layer)
		return y
	}
	b := lw.p.Buffers[y]
	shape := append([]int(nil), b.Shape...)
	shape[0] /= lw.l.TP
	out := lw.act(trimMicro(b.Name)+"/scattered", b.Kind, shape...)
	lw.fwd(Op{Kind: OpReduceScatter, Layer: layer, In: []int{y}, Out: []int{out}, Group: "tp", Attr: attrSequence, AlongTokens: true,
		Bytes: b.Bytes() * int64(lw.l.TP-1) / int64(lw.l.TP)})
	return out
}

// seqSlice keeps this rank's tokens of a value every tp rank holds whole (under sp; else x).
func (lw *lowerer) seqSlice(x, layer int) int {
	if !lw.l.SP() {
		return x
	}
	b := lw.p.Buffers[x]
	shape := append([]int(nil), b.Shape...)
	shape[0] /= lw.l.TP
	y := lw.act(trimMicro(b.Name)+"/slice", b.Kind, shape...)
	lw.fwd(Op{Kind: OpSeqSlice, Layer: layer, In: []int{x}, Out: []int{y}, Attr: attrSequence + " rows of this tp rank", AlongTokens: true})
	return y
}

// seqMoEInputs returns what an MoE layer's experts and route op read: under sp the
// normalised stream gathered over tp and the router's logits (computed on the rank's
// tokens) gathered whole; else h and logits as they are.
func (lw *lowerer) seqMoEInputs(h, logits, layer int) (int, int) {
	if !lw.l.SP() {
		return h, logits
	}
	return lw.seqGather(h, layer, attrSequence), lw.seqGather(logits, layer, attrSequenceWhole)
}

// sequenceBackward emits the backward of a sequence-parallel op: the conjugate collective
// (a gather's is a reduce-scatter, a reduce-scatter's and a slice's an all-gather), or, for
// a gather whose gradient is whole on every rank, the slice of the rank's rows.
func (lw *lowerer) sequenceBackward(op Op) {
	dy, ok := lw.gradOf[op.Out[0]]
	if !ok {
		return
	}
	dx := lw.gradFor(op.In[0])
	b := Op{Layer: op.Layer, In: []int{dy}, Out: []int{dx}, Group: "tp", Attr: attrSequence, AlongTokens: true}
	switch {
	case op.Kind == OpAllGather && op.WholeGradient:
		b.Kind, b.Group, b.Attr = OpSeqSlice, "", attrSequence+" rows of this tp rank (the gradient is whole on every rank)"
	case op.Kind == OpAllGather:
		b.Kind, b.Bytes = OpReduceScatter, lw.p.Buffers[dy].Bytes()*int64(lw.l.TP-1)/int64(lw.l.TP)
	default: // a reduce-scatter or a slice
		b.Kind, b.Bytes = OpAllGather, lw.p.Buffers[dy].Bytes()*int64(lw.l.TP-1)
	}
	lw.writeGrads(&b, dx)
	lw.bwd(b)
}

// reduceSequenceGrads emits, under sp, the all-reduce over tp of the gradients of the
// parameters that only saw this rank's tokens: those a forward norm or matmul applied to
// a sequence slice (the norms' scales and biases, the router's weights).
func (lw *lowerer) reduceSequenceGrads() {
	if !lw.l.SP() {
		return
	}
	partial := lw.seqPartialParams()
	var gs []int
	var bytes int64
	for _, id := range lw.order {
		if partial[id] {
			gs = append(gs, lw.grad[id])
			bytes += lw.p.Buffers[lw.grad[id]].Bytes()
		}
	}
	if len(gs) == 0 {
		return
	}
	lw.emit(Op{Kind: OpAllReduce, Phase: Reduce, Layer: -1, In: gs, Out: gs, Group: "tp",
		Attr:  "sum: the norms' and router's gradients from each rank's tokens (sequence parallel)",
		Bytes: 2 * bytes * int64(lw.l.TP-1) / int64(lw.l.TP)})
}

// seqPartialParams lists, under sequence parallelism, the parameters whose gradients each
// tp rank computes from its own tokens only (the norms and the router read the rank's
// rows): reduceSequenceGrads sums them over tp. Nil without sequence parallelism.
func (lw *lowerer) seqPartialParams() map[params.ID]bool {
	if !lw.l.SP() {
		return nil
	}
	local := lw.seqTokens()
	partial := map[params.ID]bool{}
	for _, op := range lw.p.Ops {
		if op.Phase != Forward || (op.Kind != OpNorm && op.Kind != OpMatMul) || lw.p.Buffers[op.In[0]].Shape[0] != local {
			continue
		}
		for _, w := range op.In[1:] {
			if id, ok := lw.paramOfBuf[w]; ok {
				partial[id] = true
			}
		}
	}
	return partial
}
