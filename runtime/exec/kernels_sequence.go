package exec

import (
	"fmt"

	"github.com/moec-dev/moec/compiler/step"
)

// Sequence parallelism's collectives and slice (compiler/step's sequence.go): values
// split by token between the tp ranks, rank i of the group holding rows
// [i·n/tp, (i+1)·n/tp) of the micro-batch's n tokens.

// sequenceCollective runs an all-gather (every member's rows, in member order, into the
// whole value) or a reduce-scatter (the members' partial sums of the whole value, summed in
// member order, this rank's rows kept) along the token dimension. The sums are taken as
// the all-reduce takes them, so a reduce-scatter's rows hold the bits tp's all-reduce
// would have left there.
func (e *Executor) sequenceCollective(op *step.Op, members []int, pos int) error {
	in, out := e.f32[op.In[0]], e.f32[op.Out[0]]
	vals, err := e.comm.Share(members, in)
	if err != nil {
		return err
	}
	acc := op.Accumulates(0)
	switch op.Kind {
	case step.OpAllGather:
		if len(out) != len(in)*len(members) {
			return fmt.Errorf("gathers %d values from %d ranks into %d", len(in), len(members), len(out))
		}
		for m, v := range vals {
			dst, src := out[m*len(in):(m+1)*len(in)], v.([]float32)
			if !acc {
				copy(dst, src)
				continue
			}
			for i, x := range src {
				dst[i] += x
			}
		}
	case step.OpReduceScatter:
		if len(out)*len(members) != len(in) {
			return fmt.Errorf("scatters %d values over %d ranks into %d", len(in), len(members), len(out))
		}
		lo := pos * len(out)
		sum := grow(&e.scratch.acc, len(out))
		for m, v := range vals {
			src := v.([]float32)[lo : lo+len(out)]
			for i, x := range src {
				if m == 0 {
					sum[i] = float64(x)
				} else {
					sum[i] += float64(x)
				}
			}
		}
		for i, s := range sum {
			if acc {
				out[i] += float32(s)
			} else {
				out[i] = float32(s)
			}
		}
	default:
		return fmt.Errorf("%s is not a sequence-parallel collective", op.Kind)
	}
	return e.comm.Barrier(members)
}

// seqSlice copies this tp rank's rows of a whole value (or adds them, for a gradient's
// second contribution).
func (e *Executor) seqSlice(op *step.Op) {
	in, out := e.f32[op.In[0]], e.f32[op.Out[0]]
	src := in[e.p.Coord.TP*len(out) : (e.p.Coord.TP+1)*len(out)]
	if !op.Accumulates(0) {
		copy(out, src)
		return
	}
	for i, x := range src {
		out[i] += x
	}
}
