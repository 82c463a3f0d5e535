package cudastep

import (
	"fmt"

	"github.com/moec-dev/moec/compiler/step"
)

// Tensor parallelism's own ops besides its all-reduces (which collective.go lowers on the
// tp group's communicator): the vocabulary-parallel cross-entropy's three passes, between
// which the program all-reduces the row maxima (max) and the rows' sums and target logits
// (sum) over tp, as runtime/exec's crossEntropy runs them. The vocabulary-parallel
// embedding is dense_embed with the rank's first row (lower.go).

// crossEntropyTP lowers one pass of the vocabulary-parallel loss: pass=max (in: logits;
// out: the row maxima), pass=sum (in: logits, targets, maxima; out: each row's sum of
// exponentials and target logit) and pass=loss (in: logits, targets, the reduced maxima
// and sums; out: the loss and the logits' gradient).
func (lw *opLowerer) crossEntropyTP(op *step.Op, add func(...Launch)) error {
	in, out := op.In, op.Out
	if len(lw.shape(in[0])) != 2 {
		return fmt.Errorf("cross_entropy over logits %v", lw.shape(in[0]))
	}
	V := lw.shape(in[0])[1]
	rows := int(lw.n(in[0])) / V
	first := lw.p.Coord.TP * V // this rank's slice of the vocabulary, as runtime/exec's
	switch {
	case op.Pass == step.LossMax && len(in) == 1 && len(out) == 1:
		add(densePerRow("dense_xent_max", rows, lw.buf(in[0]), lw.buf(out[0]), int32Arg(rows), int32Arg(V)))
	case op.Pass == step.LossSum && len(in) == 3 && len(out) == 1:
		add(densePerRow("dense_xent_sum", rows, lw.buf(in[0]), lw.ints(in[1]), lw.buf(in[2]), lw.buf(out[0]),
			int32Arg(rows), int32Arg(V), int32Arg(first)))
	case op.Pass == step.LossWhole && len(in) == 4:
		dl := NullArg(PtrF32)
		if len(out) > 1 {
			dl = lw.buf(out[1])
		}
		terms := WorkArg(PtrF32, termsWork, int64(rows)*4)
		slot := WorkArg(PtrF32, LossWork, 0)
		slot.Offset = int64(2 * lw.out.LossSlots)
		lw.out.LossSlots++
		add(densePerRow("dense_xent_tp", rows, lw.buf(in[0]), lw.ints(in[1]), lw.buf(in[2]), lw.buf(in[3]), dl, terms,
			int32Arg(rows), int32Arg(V), int32Arg(first), LossScaledArg(float32(lw.out.LossScale/float64(rows)))))
		add(Launch{Kernel: "dense_xent_mean", Grid: [3]int{1, 1, 1}, Block: [3]int{32, 1, 1},
			Args: []Arg{terms, lw.buf(out[0]), slot, int32Arg(rows)}})
	default:
		return fmt.Errorf("a cross_entropy pass %d with %d inputs and %d outputs is not lowered yet", op.Pass, len(in), len(out))
	}
	return nil
}

// tpReplicaElsewhere reports whether another tp rank counts piece pc's gradient in the
// global norm: a tensor every tp rank holds whole (a norm's weights, a row-parallel
// product's bias) is counted on tp rank 0 only, as runtime/exec's gradNorm counts it.
func (lw *opLowerer) tpReplicaElsewhere(pc optPiece) bool {
	p := lw.p
	if p.Layout.TP <= 1 || p.Coord.TP == 0 {
		return false
	}
	id := p.Buffers[pc.grad].Param
	return id != nil && id.Shard.Whole()
}

// mirroredElsewhere reports whether pc is a copy of a parameter another pipeline stage
// holds too and counts toward the global norm (a tied embedding's or the token-embedding
// router table's later copies: step.Program.Mirrors), as runtime/exec leaves it out.
func (lw *opLowerer) mirroredElsewhere(pc optPiece) bool {
	id := lw.p.Buffers[pc.grad].Param
	return id != nil && lw.p.Mirrors(*id)
}

// An MoE stage under tensor parallelism is Megatron's expert tensor parallelism, as
// compiler/step lays it out, and needs no op of its own here: the router, the routing and
// the dispatch run replicated on every tp rank (the same tokens, the same slots); each
// expert's hidden width is split over the ranks (the rank's rows of expert_in and
// expert_up, columns of expert_down), so the grouped products run at the rank's width with
// the MoE kernels unchanged; the experts' outputs ([experts, slots, d_model], padding
// cleared by the down product since the all-reduce reads it) are all-reduced over tp before
// the combine (before the slots go back under ep) and, without sequence parallelism, the
// dispatched tokens' gradient after the first product's backward, before permute's
// backward (both one ncclAllReduce on the tp communicator, collective.go). Under sequence
// parallelism the routing and the experts read h and the router logits gathered over tp,
// and the gather's reduce-scatter in the backward sums the dispatched tokens' partial
// gradients in place of that all-reduce (collective_sp.go). A down-projection bias is
// added on tp rank 0 alone (moe.go's groupedMM).
