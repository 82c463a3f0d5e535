package cudastep

import (
	"fmt"
	"slices"

	"github.com/moec-dev/moec/compiler/step"
)

// Pipeline parallelism: compiler/step's send and recv ops (the 1F1B schedule: the
// activations forward, their gradients backward) become ncclSend and ncclRecv on the
// communication stream, with the event discipline of every other collective (the
// communication stream waits for the compute stream before the calls; the compute stream
// waits for them before the first later op that reads the received buffer or writes over
// the sent one, where the memory plan reuses its range). Each pair of neighbouring stages
// talks over its own communicator (the two ranks, in the pipeline group's order; under
// pp 2 the whole group), so a meeting of two stages never waits for a third.
//
// NCCL's point-to-point calls block the GPU until the peer posts the matching call, so two
// neighbours that each send before they receive deadlock unless the send and the receive
// are one group. Such a crossing is where 1F1B's steady state turns: stage s ends forward
// k with the send of its activations and starts backward k−(pp−s−1) with the receive of
// their gradient from stage s+1, while s+1 ends that backward with the gradient's send
// and starts forward k with the activations' receive (the same holds one pair down for
// s's backward send and the forward receive after it). A send and the receive from the
// same peer right after it are one group (ncclGroupStart … ncclGroupEnd) exactly where
// the peer's order of its passes (step.PipelineOrder) has it send the received message
// before it receives the sent one (crosses), as Megatron's send_forward_recv_backward and
// send_backward_recv_forward batch them; every other send or receive (the warm-up's
// forwards, the cool-down's backwards, the turn of a stage with no steady state) is
// alone, as Megatron's send_forward, recv_forward, recv_backward and send_backward are.
// Both stages of a pair then issue the same sequence of meetings on their communicator,
// the peer's grouped receive and send mirroring this stage's. No cycle of waits is left:
// along the pipeline, each stage's next call is matched by a call its neighbour reaches
// without waiting on a third stage that waits on it (TestPipelineStagesNeverWaitOnEachOther
// plays every rank's groups against rendezvous semantics for pp 2–4 and one to six
// micro-batches).

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
	// The pair of stages' own communicator (collective_groups.go): its two ranks in the
	// order of the rank's pp group (under dp × pp each pipeline has its own), the peer
	// named by its place in it.
	ranks, err := members(p, "pp")
	if err != nil {
		return nil, err
	}
	if !slices.Contains(ranks, op.Peer) {
		return nil, fmt.Errorf("%s to rank %d, which is not in rank %d's pipeline group %v", op.Kind, op.Peer, p.Rank, ranks)
	}
	pair := slices.DeleteFunc(slices.Clone(ranks), func(r int) bool { return r != p.Rank && r != op.Peer })
	axis := "pp"
	if len(ranks) > 2 {
		axis = "pp pair"
	}
	comm, _, err := lw.groupComm(axis, pair)
	if err != nil {
		return nil, err
	}
	peer := slices.Index(pair, op.Peer)
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

// pairPipelineMessages groups each send with the receive from the same peer that follows
// it where the two cross (see above): the receive's calls join the send's group, and the
// receive's op keeps no calls of its own (Joined). A pass may send more than one message
// to its neighbour, one op after another (with attention-weight sharing, the last layer's
// attention weights after the activations, and their gradient after the activations'):
// then the run of sends and the run of receives from the same peer right after it are one
// group, the later sends and the receives joined to the first send's op. Where a
// receive's buffer overlaps a sent one in the arena, it lands in ppRecvWork (each such
// receive at its own offset) and the receive's op copies it into place after waiting for
// the group.
//
// A send whose next point-to-point op is such a receive but cannot join its group (ops
// between them) is an error: the two stages' sends would wait on each other.
func pairPipelineMessages(l *Lowered) error {
	p := l.Program
	for i := 0; i+1 < len(p.Ops); i++ {
		send := &p.Ops[i]
		if send.Kind != step.OpSend {
			continue
		}
		last := i // the run of sends to the same peer
		for last+1 < len(p.Ops) && p.Ops[last+1].Kind == step.OpSend && p.Ops[last+1].Peer == send.Peer {
			last++
		}
		next := last + 1
		for next < len(p.Ops) && !p.Ops[next].Kind.PointToPoint() {
			next++
		}
		if next == len(p.Ops) || p.Ops[next].Kind != step.OpRecv || p.Ops[next].Peer != send.Peer || !crosses(p, &p.Ops[last], &p.Ops[next]) {
			i = last
			continue
		}
		end := next // the run of receives from the same peer
		for end+1 < len(p.Ops) && p.Ops[end+1].Kind == step.OpRecv && p.Ops[end+1].Peer == send.Peer {
			end++
		}
		recv := &p.Ops[next]
		cs := l.Ops[i].Collective
		if next != last+1 || cs == nil || len(cs.Calls) != 1 {
			return fmt.Errorf("cudastep: op %d (%s %s of micro-batch %d) and op %d (%s %s of micro-batch %d) cannot be one NCCL group (ops between them): the stages' sends would wait on each other",
				last, p.Ops[last].Phase, p.Ops[last].Kind, p.Ops[last].Micro, next, recv.Phase, recv.Kind, recv.Micro)
		}
		sent := slices.Clone(cs.Touches)
		var work int64 // ppRecvWork's bytes taken by the group's receives so far
		for k := i + 1; k <= end; k++ {
			ck := l.Ops[k].Collective
			if ck == nil || len(ck.Calls) != 1 || len(l.Ops[k].Launches) > 0 {
				return fmt.Errorf("cudastep: op %d (%s %s of micro-batch %d) cannot join op %d's NCCL group", k, p.Ops[k].Phase, p.Ops[k].Kind, p.Ops[k].Micro, i)
			}
			call := ck.Calls[0]
			if p.Ops[k].Kind == step.OpSend {
				sent = append(sent, ck.Touches...)
			} else if overlaps(sent, ck.Touches) {
				out := p.Buffers[p.Ops[k].Out[0]]
				bytes := out.Bytes()
				call.Work, call.Recv = ppRecvWork, work
				call.Description += " (into " + ppRecvWork + ": the arena reuses the sent buffer's range)"
				from := WorkArg(PtrF32, ppRecvWork, work+bytes)
				from.Offset = work / 4
				l.Ops[k].Launches = []Launch{denseElementwise("dense_copy", out.Elements(), BufArg(PtrF32, p.Ops[k].Out[0]),
					from, IntArg(I64, out.Elements()))}
				work += alignUp(bytes, 256)
			}
			cs.Calls = append(cs.Calls, call)
			cs.Touches = append(cs.Touches, ck.Touches...)
			l.Ops[k].Collective = &Collective{Touches: ck.Touches, Joined: true, JoinedOp: i}
		}
		i = end
	}
	return nil
}

// crosses reports whether a send and a receive after it, both with the same neighbouring
// stage, cross on that stage: in its order of passes (step.PipelineOrder) the pass that
// sends what recv receives comes before the pass that receives what send sends (a
// stage's message of micro-batch m sits in its pass of m, of the same phase on both
// sides). Such a pair waits on each other unless both stages make it one group.
func crosses(p *step.Program, send, recv *step.Op) bool {
	peer := p.Coord.PP + 1 // a forward send goes down the pipeline, a backward one up
	if send.Phase == step.Backward {
		peer = p.Coord.PP - 1
	}
	if peer < 0 || peer >= p.Layout.PP || send.Phase == recv.Phase {
		return false
	}
	order := step.PipelineOrder(p.Layout.PP, peer, p.Batch.Micro)
	sends := slices.Index(order, step.Pass{Phase: recv.Phase, Micro: recv.Micro})
	receives := slices.Index(order, step.Pass{Phase: send.Phase, Micro: send.Micro})
	return sends >= 0 && receives >= 0 && sends < receives
}
