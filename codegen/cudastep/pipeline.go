package cudastep

import (
	"fmt"
	"slices"

	"github.com/moec-dev/moec/compiler/step"
)

// Pipeline parallelism (pp 2): compiler/step's send and recv ops (the 1F1B schedule: the
// activations forward, their gradients backward) become ncclSend and ncclRecv on the
// communication stream, with the event discipline of every other collective (the
// communication stream waits for the compute stream before the calls; the compute stream
// waits for them before the first later op that reads the received buffer or writes over
// the sent one, where the memory plan reuses its range).
//
// NCCL's point-to-point calls block the GPU until the peer posts the matching call, so two
// stages that each send before they receive deadlock unless the send and the receive are
// one group. In 1F1B's steady state stage 0 ends forward k with a send of its activations
// and starts backward k−1 with a receive of their gradient, while stage 1 ends backward
// k−1 with the gradient's send and starts forward k with the activations' receive: each
// such send and the receive of another micro-batch right after it are one group
// (ncclGroupStart … ncclGroupEnd), as Megatron's send_forward_recv_backward and
// send_backward_recv_forward batch them. Both stages then issue the same sequence of
// groups. More than two stages are refused (collectivesSupported): a middle stage's
// sequence is not paired this way yet.

// ppRecvWork is the workspace a grouped receive lands in when the memory plan puts the
// received buffer over the buffer the same group sends (the send's last use and the
// receive's first are adjacent ops): the compute stream copies it into place once the
// group is done.
const ppRecvWork = "pp_recv"

// pointToPoint lowers a send or a receive between pipeline stages: one ncclSend of the
// op's input to its peer, or one ncclRecv of its output from it, over the communicator of
// the rank's pipeline group (Peer is the peer's place in it).
func (lw *opLowerer) pointToPoint(op *step.Op) (*Collective, error) {
	p := lw.p
	if op.Peer < 0 || op.Peer >= p.Layout.World() || op.Peer == p.Rank {
		return nil, fmt.Errorf("%s with peer rank %d on rank %d of %d", op.Kind, op.Peer, p.Rank, p.Layout.World())
	}
	// The stages' communicator is the rank's pp group's (collective_groups.go): under
	// dp × pp each pair of stages holding the same data-parallel shard has its own, and
	// the peer is named by its place in that group.
	ranks, err := members(p, "pp")
	if err != nil {
		return nil, err
	}
	peer := slices.Index(ranks, op.Peer)
	if peer < 0 {
		return nil, fmt.Errorf("%s to rank %d, which is not in rank %d's pipeline group %v", op.Kind, op.Peer, p.Rank, ranks)
	}
	comm, _, err := lw.groupComm("pp", ranks)
	if err != nil {
		return nil, err
	}
	bufs := op.In
	if op.Kind == step.OpRecv {
		bufs = op.Out
	}
	if len(bufs) != 1 {
		return nil, fmt.Errorf("%s of %d buffers, want one", op.Kind, len(bufs))
	}
	buf := p.Buffers[bufs[0]]
	if buf.Tier != step.Device {
		return nil, fmt.Errorf("buffer %s of %s lives in host memory", buf.Name, op.Kind)
	}
	c := &Collective{Touches: [][2]int64{{buf.Offset, buf.Offset + buf.Bytes()}}}
	what := fmt.Sprintf("%s, micro-batch %d", buf.Name, op.Micro)
	if op.Kind == step.OpSend {
		c.Calls = []NCCLCall{{Func: "ncclSend", Comm: comm, Send: buf.Offset, Recv: -1, Count: buf.Elements(), Peer: peer, Description: what + fmt.Sprintf(" to rank %d", op.Peer)}}
	} else {
		c.Calls = []NCCLCall{{Func: "ncclRecv", Comm: comm, Send: -1, Recv: buf.Offset, Count: buf.Elements(), Peer: peer, Description: what + fmt.Sprintf(" from rank %d", op.Peer)}}
	}
	return c, nil
}

// pairPipelineMessages groups each send with the receive of another micro-batch that
// follows it at once (see above): the receive's calls join the send's group, and the
// receive's op keeps no calls of its own (Joined). Where the receive's buffer overlaps
// the sent one in the arena, it lands in ppRecvWork and the receive's op copies it into
// place after waiting for the group.
//
// A send whose next point-to-point op is a receive of another micro-batch that cannot join
// its group (ops between them) is an error: the two stages' sends would wait on each
// other.
func pairPipelineMessages(l *Lowered) error {
	p := l.Program
	for i := 0; i+1 < len(p.Ops); i++ {
		send := &p.Ops[i]
		if send.Kind != step.OpSend {
			continue
		}
		next := i + 1
		for next < len(p.Ops) && !p.Ops[next].Kind.PointToPoint() {
			next++
		}
		if next == len(p.Ops) || p.Ops[next].Kind != step.OpRecv || p.Ops[next].Micro == send.Micro {
			continue
		}
		recv := &p.Ops[next]
		cs, cr := l.Ops[i].Collective, l.Ops[next].Collective
		if next != i+1 || cs == nil || cr == nil || len(cs.Calls) != 1 || len(cr.Calls) != 1 || len(l.Ops[next].Launches) > 0 {
			return fmt.Errorf("cudastep: op %d (%s %s of micro-batch %d) and op %d (%s %s of micro-batch %d) cannot be one NCCL group (ops between them): the stages' sends would wait on each other",
				i, send.Phase, send.Kind, send.Micro, next, recv.Phase, recv.Kind, recv.Micro)
		}
		call := cr.Calls[0]
		if overlaps(cs.Touches, cr.Touches) {
			out := p.Buffers[recv.Out[0]]
			bytes := out.Bytes()
			call.Work, call.Recv = ppRecvWork, 0
			call.Description += " (into " + ppRecvWork + ": the arena reuses the sent buffer's range)"
			l.Ops[i+1].Launches = []Launch{denseElementwise("dense_copy", out.Elements(), BufArg(PtrF32, recv.Out[0]),
				WorkArg(PtrF32, ppRecvWork, bytes), IntArg(I64, out.Elements()))}
		}
		cs.Calls = append(cs.Calls, call)
		cs.Touches = append(cs.Touches, cr.Touches...)
		l.Ops[i+1].Collective = &Collective{Touches: cr.Touches, Joined: true, JoinedOp: i}
		i++
	}
	return nil
}

// pipelineSupported refuses the pipeline layouts whose messages are not lowered yet: more
// than two stages (their groups are not paired, see above), and stages that are not the
// only axis (the other axes' collectives need communicators over part of the ranks).
func pipelineSupported(l step.Layout) []string {
	if l.PP <= 1 {
		return nil
	}
	var missing []string
	if l.PP > 2 {
		missing = append(missing, fmt.Sprintf("pipeline parallelism over more than two stages (pp %d: a middle stage's sends and receives are not grouped yet)", l.PP))
	}
	return missing
}
