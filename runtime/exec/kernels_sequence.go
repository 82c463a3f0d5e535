package exec

import (
	"fmt"

	"github.com/moec-dev/moec/compiler/step"
)

// Sequence parallelism's collectives and slice (compiler/step's sequence.go): values
// split by token between the tp ranks, rank i of the group holding rows
// [i·n/tp, (i+1)·n/tp) of the micro-batch's n tokens.

// sequenceCollective runs a sequence-parallel all-gather or reduce-scatter op
// (GatherRows, ScatterRowSums) through the executor's communicator.
func (e *Executor) sequenceCollective(op *step.Op, members []int, pos int) error {
	in, out, acc := e.f32[op.In[0]], e.f32[op.Out[0]], op.Accumulates(0)
	switch op.Kind {
	case step.OpAllGather:
		return GatherRows(e.comm, members, pos, in, out, acc)
	case step.OpReduceScatter:
		return e.ScatterRowSums(e.comm, members, pos, in, out, acc)
	}
	return fmt.Errorf("%s is not a sequence-parallel collective", op.Kind)
}

// GatherRows is sequence parallelism's all-gather along the token dimension through c:
// every member's rows in, in member order, into the whole value out (written, or with acc
// added to).
func GatherRows(c Comm, members []int, pos int, in, out []float32, acc bool) error {
	vals, err := c.Share(members, in)
	if err != nil {
		return err
	}
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
	return c.Barrier(members)
}

// ScatterRowSums is sequence parallelism's reduce-scatter along the token dimension
// through c: the members' partial sums of the whole value in, summed in member order,
// this rank's (pos) rows kept in out (written, or with acc added to). The sums are taken
// as the all-reduce takes them, so a reduce-scatter's rows hold the bits tp's all-reduce
// would have left there.
func (k *Kernels) ScatterRowSums(c Comm, members []int, pos int, in, out []float32, acc bool) error {
	vals, err := c.Share(members, in)
	if err != nil {
		return err
	}
	if len(out)*len(members) != len(in) {
		return fmt.Errorf("scatters %d values over %d ranks into %d", len(in), len(members), len(out))
	}
	lo := pos * len(out)
	sum := grow(&k.scratch.acc, len(out))
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
	return c.Barrier(members)
}

// SeqSlice copies tp rank tpRank's rows of a whole value into out (or adds them, acc, for a
// gradient's second contribution).
func SeqSlice(whole, out []float32, tpRank int, acc bool) {
	src := whole[tpRank*len(out) : (tpRank+1)*len(out)]
	if !acc {
		copy(out, src)
		return
	}
	for i, x := range src {
		out[i] += x
	}
}
