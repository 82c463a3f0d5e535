package exec

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/runtime/dist"
)

// pipelineTag is the tag of the pipeline's messages: one stream per pair of stages, in
// the order the schedule sends them.
const pipelineTag = 0

// messages carries out a rank's communication over a message-passing dist.Comm (MPI
// under mpirun, or dist.Local, which behaves like it): one sub-communicator per parallel
// axis, split from the world once. Its collectives compute what the shared-memory ones
// do: reductions may add in another order (MPI picks its own), and reduce-scatter adds
// in member order in float64, as the in-process ranks do.
type messages struct {
	world dist.Comm
	axes  map[string]dist.Comm // by axis name
	// Scratch, grown on first use and reused.
	send, recv                             []float32
	acc                                    []float64
	sendCount, sendOff, recvCount, recvOff []int
	runs                                   [][2]int // an all-gather's flat ranges
	packed                                 []int
}

// NewOver prepares p for execution as world rank world.Rank() of a job whose ranks each
// run their own program in their own process, talking over world. Every rank of the job
// must call it at the same time: it splits world into the layout's groups.
func NewOver(p *step.Program, m *program.Model, world dist.Comm) (*Executor, error) {
	msg, err := newMessages(p, world)
	if err != nil {
		return nil, err
	}
	e, err := New(p, m, nil)
	if err != nil {
		return nil, err
	}
	e.msg = msg
	return e, nil
}

// newMessages splits world into every axis' groups. Every rank splits for every axis in
// the axes table's order, so the splits match across ranks; a group's first member names
// it (color) and the axis order ranks it (key).
func newMessages(p *step.Program, world dist.Comm) (*messages, error) {
	l := p.Layout
	if world.Size() != l.World() || world.Rank() != p.Rank {
		return nil, fmt.Errorf("exec: rank %d's program of a %d-rank layout (%s) on rank %d of a %d-rank world", p.Rank, l.World(), l, world.Rank(), world.Size())
	}
	msg := &messages{world: world, axes: map[string]dist.Comm{}}
	for _, ax := range step.Axes() {
		members := ax.Members(l, p.Coord)
		pos := -1
		for i, c := range members {
			if l.RankOf(c) == p.Rank {
				pos = i
			}
		}
		if pos < 0 {
			return nil, fmt.Errorf("exec: rank %d is not in its own %s group", p.Rank, ax.Name)
		}
		sub, err := world.Split(l.RankOf(members[0]), pos, ax.Name)
		if err != nil {
			return nil, fmt.Errorf("exec: rank %d: forming its %s group: %w", p.Rank, ax.Name, err)
		}
		if sub.Size() != len(members) || sub.Rank() != pos {
			return nil, fmt.Errorf("exec: rank %d: its %s group has %d ranks and it is rank %d there, want %d and %d", p.Rank, ax.Name, sub.Size(), sub.Rank(), len(members), pos)
		}
		msg.axes[ax.Name] = sub
	}
	return msg, nil
}

// communicate runs one communication op of e's program.
func (m *messages) communicate(e *Executor, op *step.Op) error {
	switch op.Kind {
	case step.OpSend:
		return m.world.SendF32(op.Peer, pipelineTag, e.f32[op.In[0]])
	case step.OpRecv:
		return m.world.RecvF32(op.Peer, pipelineTag, e.f32[op.Out[0]])
	}
	c, ok := m.axes[op.Group]
	if !ok {
		return fmt.Errorf("unknown group %q", op.Group)
	}
	switch op.Kind {
	case step.OpAllReduce:
		return m.allReduce(e, op, c)
	case step.OpAllToAllV:
		return m.allToAll(e, op, c)
	case step.OpAllGather:
		return m.allGather(e, op, c)
	case step.OpReduceScatter:
		return m.reduceScatter(e, op, c)
	}
	return fmt.Errorf("%s is not a collective", op.Kind)
}

// allReduce sums (or takes the maximum of) the op's buffers, viewed as one vector, across
// the group, in place.
func (m *messages) allReduce(e *Executor, op *step.Op, c dist.Comm) error {
	mine := e.views(op.In)
	x := mine[0]
	if len(mine) > 1 {
		x = grow(&m.send, mine.len())
		mine.each(0, len(x), func(off int, piece []float32) { copy(x[off:], piece) })
	}
	var err error
	if op.ReduceMax {
		err = c.AllReduceMaxF32(x)
	} else {
		err = c.AllReduceF32(x)
	}
	if err != nil || len(mine) == 1 {
		return err
	}
	mine.each(0, len(x), func(off int, piece []float32) { copy(piece, x[off:]) })
	return nil
}

// counts sizes the all-to-all's per-rank arrays for n ranks.
func (m *messages) counts(n int) (sendCount, sendOff, recvCount, recvOff []int) {
	return grow(&m.sendCount, n), grow(&m.sendOff, n), grow(&m.recvCount, n), grow(&m.recvOff, n)
}

// allToAll exchanges MoE slots between the expert-parallel ranks, as the shared-memory
// allToAll does: towards the experts [E, C, D] → [E/ep, ep·C, D], back the reverse. Each
// rank's block for a peer is local·C·D floats; the receive side reorders them.
func (m *messages) allToAll(e *Executor, op *step.Op, c dist.Comm) error {
	in, out := op.In[0], op.Out[0]
	ep := c.Size()
	E := e.d.E
	local := E / ep
	src, dst := e.f32[in], e.f32[out]
	shape := e.p.Buffers[in].Shape
	towards := shape[0] == E
	C, D := shape[1], shape[2]
	if !towards {
		C /= ep
	}
	block := local * C * D
	sc, so, rc, ro := m.counts(ep)
	for p := range ep {
		sc[p], so[p], rc[p], ro[p] = 4*block, 4*p*block, 4*block, 4*p*block
	}
	send, recv := src, dst
	if towards {
		recv = grow(&m.recv, ep*block)
	} else {
		// Pack each owner's block: its slots of every local expert, for this rank.
		send = grow(&m.send, ep*block)
		for p := range ep {
			for le := range local {
				copy(send[p*block+le*C*D:p*block+(le+1)*C*D], src[(le*ep*C+p*C)*D:(le*ep*C+p*C+C)*D])
			}
		}
	}
	if err := c.AllToAllV(dist.AsBytes(send), sc, so, dist.AsBytes(recv), rc, ro); err != nil {
		return err
	}
	if towards {
		// recv[src][le] is source rank src's slots for local expert le.
		for s := range ep {
			for le := range local {
				copy(dst[(le*ep*C+s*C)*D:(le*ep*C+s*C+C)*D], recv[s*block+le*C*D:s*block+(le+1)*C*D])
			}
		}
	}
	return nil
}

// span is the range of a parameter group's flat vector that bufs cover.
func (e *Executor) span(bufs []int) (lo, hi int) {
	lo, hi = -1, 0
	for _, b := range bufs {
		f := int(e.p.Buffers[b].Flat)
		if lo < 0 || f < lo {
			lo = f
		}
		hi = max(hi, f+len(e.f32[b]))
	}
	return max(lo, 0), hi
}

// ownedPiece is the part of [lo, hi) that group rank o's shard [o·S, (o+1)·S) holds.
func ownedPiece(o, S, lo, hi int) (a, z int) {
	a, z = min(max(lo, o*S), hi), min(hi, (o+1)*S)
	return a, max(a, z)
}

// flatRuns are the ranges of a parameter group's flat vector that bufs cover, in order,
// adjacent or overlapping ones merged, in scratch.
func (e *Executor) flatRuns(bufs []int, scratch *[][2]int) [][2]int {
	runs := (*scratch)[:0]
	for _, b := range bufs {
		f := int(e.p.Buffers[b].Flat)
		runs = append(runs, [2]int{f, f + int(e.p.Buffers[b].Elements())})
	}
	slices.SortFunc(runs, func(a, b [2]int) int { return cmp.Compare(a[0], b[0]) })
	merged := runs[:0]
	for _, r := range runs {
		if n := len(merged); n > 0 && r[0] <= merged[n-1][1] {
			merged[n-1][1] = max(merged[n-1][1], r[1])
			continue
		}
		merged = append(merged, r)
	}
	*scratch = runs
	return merged
}

// allGather materialises parameters from ZeRO shards, as the shared-memory allGather: each
// rank sends the part of the outputs' flat ranges its shard holds (ZeRO-3: from the shard;
// ZeRO-1/2: from its updated whole tensors) to every rank. Only the outputs' values move,
// not the span between them: a unit of the unified cache (the embedding's tables lie at
// both ends of the flat vector) reads nothing else of the shard, which the asynchronous
// host update may be writing meanwhile.
func (m *messages) allGather(e *Executor, op *step.Op, c dist.Comm) error {
	g, err := e.groupOf(op.Group)
	if err != nil {
		return err
	}
	S, n, pos := int(g.Shard), c.Size(), c.Rank()
	zero3 := e.p.Buffers[op.In[0]].Flat < 0
	runs := e.flatRuns(op.Out, &m.runs)
	// The values every rank receives are the runs' in flat order: each owner's parts of
	// the runs, owner after owner. packed[r] is where run r starts among them.
	packed := grow(&m.packed, len(runs)+1)
	packed[0] = 0
	for r, run := range runs {
		packed[r+1] = packed[r] + run[1] - run[0]
	}
	owned := func(o int) int {
		total := 0
		for _, run := range runs {
			a, z := ownedPiece(o, S, run[0], run[1])
			total += z - a
		}
		return total
	}
	send := grow(&m.send, owned(pos))
	at := 0
	for _, run := range runs {
		a, z := ownedPiece(pos, S, run[0], run[1])
		if z <= a {
			continue
		}
		if zero3 {
			copy(send[at:], e.f32[op.In[0]][a-pos*S:z-pos*S])
		} else {
			clear(send[at : at+z-a])
			for _, b := range op.In {
				f, x := int(e.p.Buffers[b].Flat), e.f32[b]
				for k := max(a, f); k < min(z, f+len(x)); k++ {
					send[at+k-a] = x[k-f]
				}
			}
		}
		at += z - a
	}
	recv := grow(&m.recv, packed[len(runs)])
	sc, so, rc, ro := m.counts(n)
	off := 0
	for o := range n {
		sc[o], so[o] = 4*len(send), 0
		rc[o], ro[o] = 4*owned(o), 4*off
		off += owned(o)
	}
	if err := c.AllToAllV(dist.AsBytes(send), sc, so, dist.AsBytes(recv), rc, ro); err != nil {
		return err
	}
	for _, b := range op.Out {
		f, dst := int(e.p.Buffers[b].Flat), e.f32[b]
		r, _ := slices.BinarySearchFunc(runs, f+1, func(run [2]int, t int) int { return cmp.Compare(run[0], t) })
		src := recv[packed[r-1]+f-runs[r-1][0]:]
		if zero3 {
			copy(dst, src)
			continue
		}
		// This rank's own part is in place already (the update wrote it).
		for k := 0; k < len(dst); k++ {
			if idx := f + k; idx < pos*S || idx >= (pos+1)*S {
				dst[k] = src[k]
			}
		}
	}
	return nil
}

// reduceScatter sums the members' gradients into this rank's shard of the group's flat
// vector: each rank sends every owner the part of its gradients in the owner's shard, and
// the owner adds them in member order in float64, as the shared-memory reduceScatter.
func (m *messages) reduceScatter(e *Executor, op *step.Op, c dist.Comm) error {
	g, err := e.groupOf(op.Group)
	if err != nil {
		return err
	}
	S, n, pos := int(g.Shard), c.Size(), c.Rank()
	lo, hi := e.span(op.In)
	send := grow(&m.send, hi-lo)
	clear(send)
	for _, b := range op.In {
		f := int(e.p.Buffers[b].Flat)
		copy(send[f-lo:], e.f32[b])
	}
	a, z := ownedPiece(pos, S, lo, hi)
	w := z - a
	recv := grow(&m.recv, n*w)
	sc, so, rc, ro := m.counts(n)
	for o := range n {
		oa, oz := ownedPiece(o, S, lo, hi)
		sc[o], so[o] = 4*(oz-oa), 4*(oa-lo)
		rc[o], ro[o] = 4*w, 4*o*w
	}
	if err := c.AllToAllV(dist.AsBytes(send), sc, so, dist.AsBytes(recv), rc, ro); err != nil {
		return err
	}
	shard := e.f32[op.Out[0]]
	if !op.Accumulates(0) {
		clear(shard)
	}
	acc := grow(&m.acc, w)
	clear(acc)
	for o := range n {
		for k, v := range recv[o*w : (o+1)*w] {
			acc[k] += float64(v)
		}
	}
	for k, v := range acc {
		shard[a-pos*S+k] += float32(v)
	}
	return nil
}
