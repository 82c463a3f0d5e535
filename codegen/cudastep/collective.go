package cudastep

import (
	"fmt"
	"slices"

	"github.com/moec-dev/moec/compiler/step"
)

// Collectives (added for several ranks): every collective op of a rank's program becomes
// calls through the host program's second function table, NCCL's (moec_step_nccl.h),
// queued on the communication stream. The host program records an event on the compute
// stream before the calls and makes the communication stream wait for it (the op's input
// is written), records one on the communication stream after them, and makes the compute
// stream wait for that one before the first later op that touches the collective's buffers
// (reads its output, or writes over its input or output where the memory plan reuses
// their arena range): the calls overlap every op in between.
//
// A collective over a group of one rank is nothing to do; one over several runs on the
// communicator of exactly its group's ranks (collective_groups.go), every rank, or a part
// of them (the tp pairs of dp 2 × tp 2, the expert data-parallel pairs of dp 4 × ep 2).

// NCCLCall is one NCCL call of a collective: Func is the entry point (ncclAllReduce,
// ncclSend, ncclRecv); Send and Recv are byte offsets in the device arena (−1: none), Count
// the floats, Peer the other rank of a send or receive (its place in the communicator's
// group), Max a maximum instead of a sum, Comm the communicator (Lowered.Comms).
type NCCLCall struct {
	Func        string
	Comm        int
	Work        string // a workspace Send (a receive's Recv) is an offset in ("": the arena)
	Send, Recv  int64
	Count       int64
	Peer        int
	Max         bool
	Description string
}

// Collective is what one collective op lowers to: its NCCL calls (between ncclGroupStart
// and ncclGroupEnd when there are several) and the arena ranges it reads and writes, which
// decide where the compute stream waits for it.
type Collective struct {
	Calls []NCCLCall
	// Before are launches on the compute stream the calls read (packing a reduce_scatter's
	// gradients into their flat vector).
	Before []Launch
	// Touches are the arena's byte ranges [lo, hi) of the op's inputs and outputs.
	Touches [][2]int64
	// Joined says the op's calls went into op JoinedOp's group (a pipeline receive
	// grouped with the send before it, pipeline.go): the op issues none of its own.
	Joined   bool
	JoinedOp int
	// Staged, for a collective over the unified cache's host tier, is its chunks through
	// the device's staging region (collective_cache.go); Calls is then empty.
	Staged *Staged
	// HostIn are copies from the host arena into the device arena on the communication
	// stream before the calls: under the unified cache with ZeRO 3, the rank's own parts
	// of a unit's tensors from its host shard into their device copies, which the calls
	// then send from (zero3.go).
	HostIn []HostCopy
}

// isCollective reports whether ops of kind k communicate.
func isCollective(k step.OpKind) bool {
	switch k {
	case step.OpAllReduce, step.OpReduceScatter, step.OpAllGather, step.OpAllToAllV, step.OpSend, step.OpRecv:
		return true
	}
	return false
}

// collectivesSupported refuses the multi-rank layouts whose collectives the CUDA backend
// does not lower yet: none now (data, expert, tensor and sequence parallelism, ZeRO 0–3
// and any number of pipeline stages are lowered); a new kind of collective that is not
// lowered names itself here.
func collectivesSupported(step.Layout) []string {
	return nil
}

// members are the ranks of the rank's group over axis, in group order.
func members(p *step.Program, axis string) ([]int, error) {
	ax, ok := step.AxisByName(axis)
	if !ok {
		return nil, fmt.Errorf("unknown group %q", axis)
	}
	var ranks []int
	for _, c := range ax.Members(p.Layout, p.Coord) {
		ranks = append(ranks, p.Layout.RankOf(c))
	}
	return ranks, nil
}

// collective lowers one collective op to NCCL calls on its group's communicator.
func (lw *opLowerer) collective(op *step.Op) (*Collective, error) {
	p := lw.p
	if op.Kind == step.OpSend || op.Kind == step.OpRecv {
		return lw.pointToPoint(op) // pipeline.go
	}
	ranks, err := members(p, op.Group)
	if err != nil {
		return nil, err
	}
	c := &Collective{}
	staged := hostCollective(p, op) // collective_cache.go
	for _, bufs := range [][]int{op.In, op.Out} {
		for _, b := range bufs {
			buf := p.Buffers[b]
			if buf.Tier != step.Device {
				if staged || op.CacheFill && p.Layout.Cache.On() && buf.Tier == step.Host {
					continue // collective_cache.go; zero3.go: the fetch from the host shards
				}
				return nil, fmt.Errorf("buffer %s of %s lives in host memory", buf.Name, op.Kind)
			}
			c.Touches = append(c.Touches, [2]int64{buf.Offset, buf.Offset + buf.Bytes()})
		}
	}
	if len(ranks) == 1 {
		if op.Kind == step.OpAllReduce && slices.Equal(op.In, op.Out) {
			return c, nil // a group of one: the sum is the rank's own
		}
		return nil, fmt.Errorf("%s over a group of one rank that is not in place", op.Kind)
	}
	comm, pos, err := lw.groupComm(op.Group, ranks) // collective_groups.go
	if err != nil {
		return nil, err
	}
	defer func() {
		for i := range c.Calls {
			c.Calls[i].Comm = comm
		}
		if c.Staged != nil {
			c.Staged.Comm = comm
		}
	}()
	if staged {
		return c, lw.stagedCollective(op, c, len(ranks), pos) // collective_cache.go
	}
	if op.Sequence() {
		return c, lw.sequenceCollective(op, pos, c) // collective_sp.go
	}
	switch op.Kind {
	case step.OpAllReduce:
		if !slices.Equal(op.In, op.Out) {
			return nil, fmt.Errorf("an all_reduce that is not in place")
		}
		c.Calls = lw.allReduceCalls(op)
	case step.OpAllToAllV:
		calls, err := lw.allToAllCalls(op, len(ranks), pos)
		if err != nil {
			return nil, err
		}
		c.Calls = calls
	case step.OpReduceScatter:
		return c, lw.reduceScatter(op, len(ranks), c)
	case step.OpAllGather:
		return c, lw.allGather(op, len(ranks), pos, c)
	default:
		return nil, fmt.Errorf("%s over %s is not lowered to NCCL yet", op.Kind, op.Group)
	}
	return c, nil
}

// allReduceCalls is one in-place ncclAllReduce per run of buffers adjacent in the arena.
func (lw *opLowerer) allReduceCalls(op *step.Op) []NCCLCall {
	p := lw.p
	var calls []NCCLCall
	for _, b := range op.In {
		buf := p.Buffers[b]
		n := buf.Elements()
		if last := len(calls) - 1; last >= 0 && calls[last].Send+4*calls[last].Count == buf.Offset {
			calls[last].Count += n
			calls[last].Description += ", " + buf.Name
			continue
		}
		calls = append(calls, NCCLCall{Func: "ncclAllReduce", Send: buf.Offset, Recv: buf.Offset, Count: n, Max: op.ReduceMax, Description: buf.Name})
	}
	return calls
}

// allToAllCalls exchanges the MoE slots between the expert-parallel ranks as runtime/exec's
// AllToAllV does, as sends and receives of one expert's C slots each (pos is the rank's
// place in its ep group, peers are places in it). Towards the experts
// the input is [E, C, D] and rank r receives, for each of its local experts le, every
// source's slots of expert r·local + le into [le, src·C .. src·C + C); back from the
// experts the reverse.
func (lw *opLowerer) allToAllCalls(op *step.Op, ep, pos int) ([]NCCLCall, error) {
	p := lw.p
	in, out := p.Buffers[op.In[0]], p.Buffers[op.Out[0]]
	shape := in.Shape
	E := lw.d.E
	if len(shape) != 3 || E%ep != 0 || in.Elements() != out.Elements() {
		return nil, fmt.Errorf("all_to_all_v of %s %v into %s %v over %d ranks", in.Name, shape, out.Name, out.Shape, ep)
	}
	local := E / ep
	var C, D int
	var sendAt, recvAt func(peer, le int) int64
	if shape[0] == E {
		// Towards the experts: send[(peer·local + le)·C], recv[le·ep·C + peer·C].
		C, D = shape[1], shape[2]
		sendAt = func(peer, le int) int64 { return int64((peer*local + le) * C * D) }
		recvAt = func(peer, le int) int64 { return int64((le*ep*C + peer*C) * D) }
	} else {
		// Back to the tokens: send[le·ep·C + peer·C], recv[(peer·local + le)·C].
		C, D = shape[1]/ep, shape[2]
		sendAt = func(peer, le int) int64 { return int64((le*ep*C + peer*C) * D) }
		recvAt = func(peer, le int) int64 { return int64((peer*local + le) * C * D) }
	}
	var calls []NCCLCall
	count := int64(C * D)
	for peer := 0; peer < ep; peer++ {
		for le := 0; le < local; le++ {
			calls = append(calls,
				NCCLCall{Func: "ncclSend", Send: in.Offset + 4*sendAt(peer, le), Recv: -1, Count: count, Peer: peer,
					Description: fmt.Sprintf("%s, rank %d's expert %d", in.Name, peer, peer*local+le)},
				NCCLCall{Func: "ncclRecv", Send: -1, Recv: out.Offset + 4*recvAt(peer, le), Count: count, Peer: peer,
					Description: fmt.Sprintf("%s, expert %d from rank %d", out.Name, pos*local+le, peer)})
		}
	}
	return calls, nil
}

// countedGrad is the part of piece pc's gradient whose squares this rank adds into the
// global norm, as runtime/exec counts it: the part inside the rank's data-parallel
// partition of the group's flat vector (one rank: all of it; ZeRO 1 and 2: the part it
// updates, zeroPiece). n ≤ 0: none.
func (lw *opLowerer) countedGrad(pc optPiece) (grad Arg, n int64) {
	p := lw.p
	n = lw.n(pc.grad)
	if p.Layout.World() == 1 || pc.group >= len(p.Groups) {
		return lw.buf(pc.grad), n
	}
	g := p.Groups[pc.group]
	if g.ZeRO > 0 {
		_, grad, _, _, n, ok := lw.zeroPiece(pc)
		if !ok {
			return grad, 0
		}
		return grad, n
	}
	a, z := pc.flat, pc.flat+n
	plo, phi := int64(g.Index)*g.Shard, int64(g.Index+1)*g.Shard
	lo, hi := max(plo, a)-a, min(phi, z)-a
	grad = lw.buf(pc.grad)
	grad.Offset = lo
	return grad, hi - lo
}

// groupOf is the parameter group a collective over axis serves.
func (lw *opLowerer) groupOf(axis string) (step.Group, error) {
	for _, g := range lw.p.Groups {
		if g.Axis == axis {
			return g, nil
		}
	}
	return step.Group{}, fmt.Errorf("no parameter group over %s", axis)
}

// zeroFlatWork is the workspace a group's gradients are packed into, in flat order, for
// its reduce_scatter: ranks × shard floats (the tail past the group's elements stays
// zero).
func zeroFlatWork(g step.Group) string { return "zero_flat_" + g.Name }

// reduceScatter lowers ZeRO 2's reduce_scatter: the gradients packed into their flat
// vector (dense_copy on the compute stream, into zeroFlatWork), then one ncclReduceScatter
// of it into this rank's shard, as runtime/exec's ReduceScatter sums them.
func (lw *opLowerer) reduceScatter(op *step.Op, ranks int, c *Collective) error {
	p := lw.p
	g, err := lw.groupOf(op.Group)
	if err != nil {
		return err
	}
	if op.Accumulates(0) {
		return fmt.Errorf("a reduce_scatter that adds into its shard is not lowered to NCCL yet")
	}
	out := p.Buffers[op.Out[0]]
	if out.Elements() != g.Shard {
		return fmt.Errorf("reduce_scatter into %s of %d values, the shard holds %d", out.Name, out.Elements(), g.Shard)
	}
	work := zeroFlatWork(g)
	bytes := 4 * g.Shard * int64(ranks)
	for _, b := range op.In {
		buf := p.Buffers[b]
		if buf.Flat < 0 || buf.Flat+buf.Elements() > g.Shard*int64(ranks) {
			return fmt.Errorf("gradient %s has no place in group %s's flat vector", buf.Name, g.Name)
		}
		dst := WorkArg(PtrF32, work, bytes)
		dst.Offset = buf.Flat
		c.Before = append(c.Before, denseElementwise("dense_copy", buf.Elements(), dst, lw.buf(b), IntArg(I64, buf.Elements())))
	}
	c.Calls = []NCCLCall{{Func: "ncclReduceScatter", Work: work, Send: 0, Recv: out.Offset, Count: g.Shard, Description: out.Name}}
	return nil
}

// allGather lowers the all_gather after a ZeRO-1/2 update: each rank's updated shard of
// every tensor sent to every other rank, which receives it in place (grouped ncclSend and
// ncclRecv; every rank's program lists the tensors in the same order). pos is the rank's
// place in the group, the owner of shard pos.
func (lw *opLowerer) allGather(op *step.Op, ranks, pos int, c *Collective) error {
	p := lw.p
	g, err := lw.groupOf(op.Group)
	if err != nil {
		return err
	}
	if len(op.In) > 0 && p.Buffers[op.In[0]].Flat < 0 {
		return lw.gatherShards(op, g, ranks, c) // zero3.go
	}
	if !slices.Equal(op.In, op.Out) {
		return fmt.Errorf("an all_gather after the update that is not in place")
	}
	S := g.Shard
	for _, b := range op.Out {
		buf := p.Buffers[b]
		f, n := buf.Flat, buf.Elements()
		for owner := 0; owner < ranks; owner++ {
			lo, hi := max(f, int64(owner)*S), min(f+n, int64(owner+1)*S)
			if lo >= hi {
				continue
			}
			at := buf.Offset + 4*(lo-f)
			for peer := 0; peer < ranks; peer++ {
				switch {
				case peer == owner:
				case owner == pos:
					c.Calls = append(c.Calls, NCCLCall{Func: "ncclSend", Send: at, Recv: -1, Count: hi - lo, Peer: peer,
						Description: fmt.Sprintf("%s[%d:%d] to rank %d", buf.Name, lo-f, hi-f, peer)})
				case peer == pos:
					c.Calls = append(c.Calls, NCCLCall{Func: "ncclRecv", Send: -1, Recv: at, Count: hi - lo, Peer: owner,
						Description: fmt.Sprintf("%s[%d:%d] from rank %d", buf.Name, lo-f, hi-f, owner)})
				}
			}
		}
	}
	return nil
}

// zeroPiece is the part of optimizer piece pc this rank updates, and the gradient it
// reads: under ZeRO 1–3 the part inside the rank's shard of the group's flat vector
// (ZeRO 2 and 3: its reduced gradient in the group's shard buffer; ZeRO 3: its weights in
// the group's weight shard), else all of it. ok is false
// when the rank updates none of it.
func (lw *opLowerer) zeroPiece(pc optPiece) (param, grad, m, v Arg, n int64, ok bool) {
	p := lw.p
	n = lw.n(pc.grad)
	param, grad, m, v = lw.buf(pc.param), lw.buf(pc.grad), lw.buf(pc.m), lw.buf(pc.v)
	m.Offset, v.Offset = pc.flat, pc.flat
	if pc.group >= len(p.Groups) || p.Groups[pc.group].ZeRO == 0 {
		return param, grad, m, v, n, true
	}
	g := p.Groups[pc.group]
	lo, hi := int64(g.Index)*g.Shard, int64(g.Index+1)*g.Shard
	a, z := max(lo, pc.flat), min(hi, pc.flat+n)
	if a >= z {
		return param, grad, m, v, 0, false
	}
	param.Offset, grad.Offset = a-pc.flat, a-pc.flat
	m.Offset, v.Offset = a-lo, a-lo
	if g.ZeRO == 3 { // the weights are the group's flat shard (zero3.go)
		param = lw.buf(pc.pshard)
		param.Offset = a - lo
	}
	if g.ZeRO >= 2 {
		if pc.shard < 0 {
			return param, grad, m, v, 0, false
		}
		grad = lw.buf(pc.shard)
		grad.Offset = a - lo
	}
	return param, grad, m, v, z - a, true
}
