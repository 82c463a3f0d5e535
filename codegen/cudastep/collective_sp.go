package cudastep

import (
	"fmt"

	"github.com/moec-dev/moec/compiler/step"
)

// Sequence parallelism's collectives and slice (compiler/step's sequence.go): between the
// tensor-parallel pairs tp rank i holds rows [i·n/tp, (i+1)·n/tp) of the micro-batch's n
// tokens, the token dimension outermost, so each rank's rows of a whole value are one
// contiguous range at i·(its elements) and the tp group's order is the ranks' tp order.
// An all_gather along the tokens is then one ncclAllGather of the rank's rows into the
// whole value, a reduce_scatter one ncclReduceScatter of the whole partial sums into the
// rank's rows (NCCL's rank order is the communicator's, the group's), as runtime/exec's
// GatherRows and ScatterRowSums lay them out. The norms' and router's gradients summed
// over tp (reduceSequenceGrads) are an ordinary all_reduce (collective.go).

// sequenceCollective lowers a sequence-parallel all_gather or reduce_scatter over the tp
// group (pos: the rank's place in it) to one NCCL call.
func (lw *opLowerer) sequenceCollective(op *step.Op, pos int, c *Collective) error {
	p := lw.p
	if len(op.In) != 1 || len(op.Out) != 1 {
		return fmt.Errorf("a sequence-parallel %s of %d buffers into %d", op.Kind, len(op.In), len(op.Out))
	}
	if op.Accumulates(0) {
		return fmt.Errorf("a sequence-parallel %s that adds into its output is not lowered to NCCL yet", op.Kind)
	}
	if pos != p.Coord.TP {
		return fmt.Errorf("rank %d is at place %d of its tp group, its tp coordinate is %d", p.Rank, pos, p.Coord.TP)
	}
	in, out := p.Buffers[op.In[0]], p.Buffers[op.Out[0]]
	if in.Offset < out.Offset+out.Bytes() && out.Offset < in.Offset+in.Bytes() {
		// NCCL defines only its own in-place forms; the memory plan never overlaps them.
		return fmt.Errorf("a sequence-parallel %s from %s into %s, which overlap in the arena", op.Kind, in.Name, out.Name)
	}
	ranks := int64(p.Layout.TP)
	switch op.Kind {
	case step.OpAllGather:
		if out.Elements() != in.Elements()*ranks {
			return fmt.Errorf("all_gather of %s (%d values) over %d ranks into %s (%d)", in.Name, in.Elements(), ranks, out.Name, out.Elements())
		}
		c.Calls = []NCCLCall{{Func: "ncclAllGather", Send: in.Offset, Recv: out.Offset, Count: in.Elements(),
			Description: fmt.Sprintf("%s's rows into %s", in.Name, out.Name)}}
	case step.OpReduceScatter:
		if in.Elements() != out.Elements()*ranks {
			return fmt.Errorf("reduce_scatter of %s (%d values) over %d ranks into %s (%d)", in.Name, in.Elements(), ranks, out.Name, out.Elements())
		}
		c.Calls = []NCCLCall{{Func: "ncclReduceScatter", Send: in.Offset, Recv: out.Offset, Count: out.Elements(),
			Description: fmt.Sprintf("%s summed, this rank's rows into %s", in.Name, out.Name)}}
	default:
		return fmt.Errorf("a sequence-parallel %s is not lowered to NCCL yet", op.Kind)
	}
	return nil
}

// seqSlice lowers a seq_slice: this tp rank's rows of a value every tp rank holds whole
// copied (or, for a gradient's second contribution, added) into its output, as
// runtime/exec's SeqSlice.
func (lw *opLowerer) seqSlice(op *step.Op, add func(...Launch)) error {
	if len(op.In) != 1 || len(op.Out) != 1 {
		return fmt.Errorf("a seq_slice of %d buffers into %d", len(op.In), len(op.Out))
	}
	n := lw.n(op.Out[0])
	if lw.n(op.In[0]) != n*int64(lw.p.Layout.TP) {
		return fmt.Errorf("a seq_slice of %d values into %d over tp %d", lw.n(op.In[0]), n, lw.p.Layout.TP)
	}
	src := lw.buf(op.In[0])
	src.Offset = int64(lw.p.Coord.TP) * n
	kernel := "dense_copy"
	if op.Accumulates(0) {
		kernel = "dense_accumulate"
	}
	add(denseElementwise(kernel, n, lw.buf(op.Out[0]), src, IntArg(I64, n)))
	return nil
}
