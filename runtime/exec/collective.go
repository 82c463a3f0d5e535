package exec

import (
	"fmt"

	"github.com/moec-dev/moec/compiler/step"
)

// members lists the ranks of op's group that this rank belongs to, and its place there.
func (e *Executor) members(name string) ([]int, int, error) {
	if g, ok := e.groups[name]; ok {
		return g.ranks, g.pos, nil
	}
	ax, ok := step.AxisByName(name)
	if !ok {
		return nil, 0, fmt.Errorf("unknown group %q", name)
	}
	l := e.p.Layout
	var ranks []int
	pos := -1
	for i, c := range ax.Members(l, e.p.Coord) {
		r := l.RankOf(c)
		if r == e.p.Rank {
			pos = i
		}
		ranks = append(ranks, r)
	}
	if pos < 0 {
		return nil, 0, fmt.Errorf("rank %d is not in its own %s group", e.p.Rank, name)
	}
	e.groups[name] = group{ranks, pos}
	return ranks, pos, nil
}

// group is a collective group's ranks, in axis order, and this rank's place among them.
type group struct {
	ranks []int
	pos   int
}

// communicate runs a collective or a pipeline message through the rank's Comm (shared
// memory) or its message-passing communicator (NewOver).
func (e *Executor) communicate(op *step.Op) error {
	if e.msg != nil {
		return e.msg.communicate(e, op)
	}
	if e.comm == nil {
		return fmt.Errorf("%s over %s, but the executor has no communicator", op.Kind, op.Group)
	}
	switch op.Kind {
	case step.OpSend:
		return e.comm.Send(op.Peer, e.f32[op.In[0]])
	case step.OpRecv:
		return e.comm.Recv(op.Peer, e.f32[op.Out[0]])
	}
	members, pos, err := e.members(op.Group)
	if err != nil {
		return err
	}
	if op.Sequence() {
		return e.sequenceCollective(op, members, pos) // kernels_sequence.go
	}
	switch op.Kind {
	case step.OpAllReduce:
		return e.allReduce(op, members, pos)
	case step.OpAllToAllV:
		return e.allToAll(op, members, pos)
	case step.OpAllGather:
		if op.GatherVocab {
			return e.gatherVocab(op, members, pos)
		}
		return e.allGather(op, members, pos)
	case step.OpReduceScatter:
		return e.reduceScatter(op, members, pos)
	}
	return fmt.Errorf("%s is not a collective", op.Kind)
}

// segments views a list of buffers as one vector.
type segments [][]float32

func (s segments) len() int {
	n := 0
	for _, b := range s {
		n += len(b)
	}
	return n
}

// each calls f on the pieces of the vector's range [lo, hi), with the offset of each
// piece in the vector.
func (s segments) each(lo, hi int, f func(off int, piece []float32)) {
	base := 0
	for _, b := range s {
		end := base + len(b)
		if end > lo && base < hi {
			a, z := max(lo, base), min(hi, end)
			f(a, b[a-base:z-base])
		}
		base = end
		if base >= hi {
			return
		}
	}
}

func (e *Executor) views(bufs []int) segments {
	out := make(segments, len(bufs))
	for i, b := range bufs {
		out[i] = e.f32[b]
	}
	return out
}

func (e *Executor) allReduce(op *step.Op, members []int, pos int) error {
	return e.AllReduce(e.comm, members, pos, op.ReduceMax, e.views(op.In)...)
}

// AllReduce sums (or, with reduceMax, takes the maximum of) the vector bufs over the
// members of a group (ranks, in group order; this rank at pos) through c: each member
// reduces its chunk of the vector over all members (in member order, so every rank adds in
// the same order), then copies the others' reduced chunks.
func (k *Kernels) AllReduce(c Comm, members []int, pos int, reduceMax bool, bufs ...[]float32) error {
	mine := segments(bufs)
	vals, err := c.Share(members, mine)
	if err != nil {
		return err
	}
	n := mine.len()
	chunk := func(i int) (int, int) { return i * n / len(members), (i + 1) * n / len(members) }
	lo, hi := chunk(pos)
	acc := grow(&k.scratch.acc, hi-lo)
	for m, v := range vals {
		first := m == 0
		v.(segments).each(lo, hi, func(off int, piece []float32) {
			for i, x := range piece {
				a := &acc[off-lo+i]
				switch {
				case first:
					*a = float64(x)
				case reduceMax:
					*a = max(*a, float64(x))
				default:
					*a += float64(x)
				}
			}
		})
	}
	mine.each(lo, hi, func(off int, piece []float32) {
		for i := range piece {
			piece[i] = float32(acc[off-lo+i])
		}
	})
	if err := c.Barrier(members); err != nil {
		return err
	}
	for m, v := range vals {
		if m == pos {
			continue
		}
		a, z := chunk(m)
		theirs := v.(segments)
		mine.each(a, z, func(off int, piece []float32) {
			theirs.each(off, off+len(piece), func(_ int, src []float32) { copy(piece, src) })
		})
	}
	return c.Barrier(members)
}

// allToAll exchanges MoE slots between the expert-parallel ranks. Towards the experts the
// input is [E, C, D] (slots by expert) and the output [E/ep, ep·C, D] (each local expert's
// slots from every source rank in rank order); back from the experts the reverse.
func (e *Executor) allToAll(op *step.Op, members []int, pos int) error {
	return e.AllToAllV(e.comm, members, pos, e.f32[op.In[0]], e.f32[op.Out[0]], e.p.Buffers[op.In[0]].Shape)
}

// AllToAllV exchanges MoE slots between the expert-parallel ranks members (this rank at
// pos) through c: in, of shape inShape, towards the experts when inShape[0] is the number
// of experts, else back to the tokens (see allToAll); dst receives.
func (k *Kernels) AllToAllV(c Comm, members []int, pos int, in, dst []float32, inShape []int) error {
	vals, err := c.Share(members, in)
	if err != nil {
		return err
	}
	ep := len(members)
	E := k.d.E
	local := E / ep
	if inShape[0] == E {
		// Towards the experts: recv[le, src·C + c] = send_src[pos·local + le, c].
		C, D := inShape[1], inShape[2]
		for src, v := range vals {
			send := v.([]float32)
			for le := 0; le < local; le++ {
				from := send[((pos*local+le)*C)*D : ((pos*local+le)*C+C)*D]
				copy(dst[(le*ep*C+src*C)*D:(le*ep*C+src*C+C)*D], from)
			}
		}
	} else {
		// Back to the tokens: recv[e, c] = send_owner[e − owner·local, pos·C + c].
		C, D := inShape[1]/ep, inShape[2]
		for owner, v := range vals {
			send := v.([]float32)
			for le := 0; le < local; le++ {
				ex := owner*local + le
				from := send[(le*ep*C+pos*C)*D : (le*ep*C+pos*C+C)*D]
				copy(dst[(ex*C)*D:(ex*C+C)*D], from)
			}
		}
	}
	return c.Barrier(members)
}

// groupOf is the reduction group a collective over axis serves.
func (e *Executor) groupOf(axis string) (step.Group, error) {
	for _, g := range e.p.Groups {
		if g.Axis == axis {
			return g, nil
		}
	}
	return step.Group{}, fmt.Errorf("no parameter group over %s", axis)
}

// allGather materialises parameters from ZeRO shards (see AllGather).
func (e *Executor) allGather(op *step.Op, members []int, pos int) error {
	g, err := e.groupOf(op.Group)
	if err != nil {
		return err
	}
	if op.CacheFill { // the unified cache's fetch of a unit under ZeRO 3
		for _, b := range op.Out {
			e.stats.CacheMoved += e.p.Buffers[b].Bytes()
		}
	}
	return e.AllGather(e.comm, members, pos, g.Shard, e.p.Buffers[op.In[0]].Flat < 0, e.views(op.In), e.views(op.Out), e.flats(op.Out))
}

// flats are the buffers' offsets in their group's flat vector.
func (e *Executor) flats(bufs []int) []int64 {
	out := make([]int64, len(bufs))
	for i, b := range bufs {
		out[i] = e.p.Buffers[b].Flat
	}
	return out
}

// AllGather materialises parameters from ZeRO shards of shard elements over the members
// (this rank at pos) through c: under ZeRO-3 (in is the rank's one flat shard) the shards
// into whole tensors out, each at its offset flat in the group's flat vector; after a
// ZeRO-1/2 update (in are the tensors themselves) each rank's updated shard into every
// rank's tensors.
func (k *Kernels) AllGather(c Comm, members []int, pos int, shard int64, zero3 bool, in, out [][]float32, flat []int64) error {
	S := int(shard)
	var mine any
	if zero3 {
		mine = in[0]
	} else {
		mine = segments(in)
	}
	vals, err := c.Share(members, mine)
	if err != nil {
		return err
	}
	for i, dst := range out {
		flat := int(flat[i])
		for j := 0; j < len(dst); {
			idx := flat + j
			owner := idx / S
			n := min(len(dst)-j, (owner+1)*S-idx)
			if owner != pos || zero3 {
				if zero3 {
					src := vals[owner].([]float32)
					copy(dst[j:j+n], src[idx-owner*S:idx-owner*S+n])
				} else {
					copy(dst[j:j+n], vals[owner].(segments)[i][j:j+n])
				}
			}
			j += n
		}
	}
	return c.Barrier(members)
}

// reduceScatter sums the members' gradients and keeps this rank's shard (ReduceScatter).
func (e *Executor) reduceScatter(op *step.Op, members []int, pos int) error {
	g, err := e.groupOf(op.Group)
	if err != nil {
		return err
	}
	return e.ReduceScatter(e.comm, members, pos, g.Shard, e.views(op.In), e.flats(op.In), e.f32[op.Out[0]], op.Accumulates(0))
}

// ReduceScatter sums the members' gradients in, each at its offset flat in the group's
// flat vector, over the members (this rank at pos) through c, and writes (or with acc adds)
// this rank's shard of shard elements into out.
func (k *Kernels) ReduceScatter(c Comm, members []int, pos int, shard int64, in [][]float32, flat []int64, out []float32, acc bool) error {
	vals, err := c.Share(members, segments(in))
	if err != nil {
		return err
	}
	if !acc {
		clear(out)
	}
	S := int(shard)
	lo := pos * S
	sum := grow(&k.scratch.acc, len(out))
	clear(sum)
	for m := range members {
		peer, ok := vals[m].(segments)
		if !ok {
			return fmt.Errorf("member %d shared %T, not buffers", m, vals[m])
		}
		for i := range in {
			f := int(flat[i])
			src := peer[i]
			a, z := max(lo, f), min(lo+S, f+len(src))
			for j := a; j < z; j++ {
				sum[j-lo] += float64(src[j-f])
			}
		}
	}
	for i := range out {
		out[i] += float32(sum[i])
	}
	return c.Barrier(members)
}
