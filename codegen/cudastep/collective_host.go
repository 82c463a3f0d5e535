package cudastep

import (
	"fmt"
	"strings"

	"github.com/moec-dev/moec/compiler/step"
)

// commEmitter writes the host program's collectives (see collective.go): each on the
// communication stream after an event of the compute stream, and the compute stream's
// wait for it before the first later op that touches its buffers.
type commEmitter struct {
	next        int // the next collective's event
	outstanding []pendingCollective
}

// pendingCollective is a collective the compute stream has not waited for yet.
type pendingCollective struct {
	event   int
	op      int
	touches [][2]int64
}

// emit writes collective c of op i.
func (ce *commEmitter) emit(w *strings.Builder, in string, c *Collective, i int, what string, workAt map[string]int64) {
	if c.Joined {
		fmt.Fprintf(w, "%s// received in op %d's group\n", in, c.JoinedOp)
		return
	}
	if len(c.Calls) == 0 {
		fmt.Fprintf(w, "%s// a group of one rank: nothing to exchange\n", in)
		return
	}
	ev := ce.next
	ce.next++
	q := fmt.Sprintf("%q", what)
	fmt.Fprintf(w, "%sMOEC_CU(s, s->cu.cuEventRecord(s->ready, s->stream), %s);\n", in, q)
	fmt.Fprintf(w, "%sMOEC_CU(s, s->cu.cuStreamWaitEvent(s->comm_stream, s->ready, 0), %s);\n", in, q)
	grouped := len(c.Calls) > 1
	if grouped {
		fmt.Fprintf(w, "%sMOEC_NCCL(s, s->nccl.ncclGroupStart(), %s);\n", in, q)
	}
	for _, call := range c.Calls {
		red := "MOEC_NCCL_SUM"
		if call.Max {
			red = "MOEC_NCCL_MAX"
		}
		if call.Work != "" && call.Func == "ncclRecv" {
			call.Recv += workAt[call.Work]
		} else if call.Work != "" {
			call.Send += workAt[call.Work]
		}
		switch call.Func {
		case "ncclReduceScatter":
			fmt.Fprintf(w, "%sMOEC_NCCL(s, s->nccl.ncclReduceScatter(moec_at(s, %dULL), moec_at(s, %dULL), %d, MOEC_NCCL_FLOAT32, %s, s->comm, s->comm_stream), %s); // %s\n",
				in, call.Send, call.Recv, call.Count, red, q, call.Description)
		case "ncclAllReduce":
			fmt.Fprintf(w, "%sMOEC_NCCL(s, s->nccl.ncclAllReduce(moec_at(s, %dULL), moec_at(s, %dULL), %d, MOEC_NCCL_FLOAT32, %s, s->comm, s->comm_stream), %s); // %s\n",
				in, call.Send, call.Recv, call.Count, red, q, call.Description)
		case "ncclSend":
			fmt.Fprintf(w, "%sMOEC_NCCL(s, s->nccl.ncclSend(moec_at(s, %dULL), %d, MOEC_NCCL_FLOAT32, %d, s->comm, s->comm_stream), %s); // %s\n",
				in, call.Send, call.Count, call.Peer, q, call.Description)
		case "ncclRecv":
			fmt.Fprintf(w, "%sMOEC_NCCL(s, s->nccl.ncclRecv(moec_at(s, %dULL), %d, MOEC_NCCL_FLOAT32, %d, s->comm, s->comm_stream), %s); // %s\n",
				in, call.Recv, call.Count, call.Peer, q, call.Description)
		}
	}
	if grouped {
		fmt.Fprintf(w, "%sMOEC_NCCL(s, s->nccl.ncclGroupEnd(), %s);\n", in, q)
	}
	fmt.Fprintf(w, "%sMOEC_CU(s, s->cu.cuEventRecord(s->done[%d], s->comm_stream), %s);\n", in, ev, q)
	ce.outstanding = append(ce.outstanding, pendingCollective{event: ev, op: i, touches: c.Touches})
}

// waitBefore writes the compute stream's waits for the outstanding collectives whose
// buffers op touches (its inputs, its outputs, and the buffers its launches name). A
// collective's op in the update phase is waited for at once: the update's ops run under a
// condition.
func (ce *commEmitter) waitBefore(w *strings.Builder, p *step.Program, op *step.Op, ol OpLaunches) {
	if len(ce.outstanding) == 0 {
		return
	}
	var ranges [][2]int64
	add := func(b int) {
		if b >= 0 && b < len(p.Buffers) && p.Buffers[b].Tier == step.Device {
			buf := p.Buffers[b]
			ranges = append(ranges, [2]int64{buf.Offset, buf.Offset + buf.Bytes()})
		}
	}
	for _, bufs := range [][]int{op.In, op.Out} {
		for _, b := range bufs {
			add(b)
		}
	}
	for _, ls := range [][]Launch{ol.Launches, ol.Reuse} {
		for _, ln := range ls {
			for _, a := range ln.Args {
				if a.Kind.Pointer() && a.Buf >= 0 {
					add(a.Buf)
				}
				for _, b := range a.Table {
					add(b)
				}
			}
		}
	}
	if ol.Collective != nil {
		ranges = append(ranges, ol.Collective.Touches...)
	}
	kept := ce.outstanding[:0]
	for _, pc := range ce.outstanding {
		if overlaps(pc.touches, ranges) || ol.Settle {
			fmt.Fprintf(w, "  MOEC_CU(s, s->cu.cuStreamWaitEvent(s->stream, s->done[%d], 0), \"waiting for op %d's collective\");\n", pc.event, pc.op)
			continue
		}
		kept = append(kept, pc)
	}
	ce.outstanding = kept
}

// waitAll writes the compute stream's waits for every outstanding collective (the step's
// end).
func (ce *commEmitter) waitAll(w *strings.Builder) {
	for _, pc := range ce.outstanding {
		fmt.Fprintf(w, "  MOEC_CU(s, s->cu.cuStreamWaitEvent(s->stream, s->done[%d], 0), \"waiting for op %d's collective\");\n", pc.event, pc.op)
	}
	ce.outstanding = nil
}

func overlaps(a, b [][2]int64) bool {
	for _, x := range a {
		for _, y := range b {
			if x[0] < y[1] && y[0] < x[1] {
				return true
			}
		}
	}
	return false
}

// hostPublishNorm writes this rank's sum of squares of the gradients (the norm slots, added
// in order) into the grad_norm op's output, which the program's all_reduce then sums over
// the ranks (several ranks; see moec_settle).
const hostPublishNorm = `
[[maybe_unused]] static int moec_publish_norm(moec_state *s) {
  MOEC_CU(s, s->cu.cuStreamSynchronize(s->stream), "summing this rank's gradient norm");
  double sq = 0;
  if (MOEC_NORM_SLOTS > 0) {
    double sums[MOEC_NORM_SLOTS > 0 ? MOEC_NORM_SLOTS : 1];
    MOEC_CU(s, s->cu.cuMemcpyDtoH(sums, s->base + MOEC_NORM_AT, sizeof(double) * MOEC_NORM_SLOTS), "reading the gradient norm");
    for (int i = 0; i < MOEC_NORM_SLOTS; i++) sq += sums[i];
  }
  float f = (float)sq;
  if (MOEC_NORM_OUT >= 0)
    MOEC_CU(s, s->cu.cuMemcpyHtoD(s->base + (CUdeviceptr)MOEC_NORM_OUT, &f, sizeof f), "writing this rank's gradient norm");
  return 1;
}
`

// hostComm is the C ABI of several ranks: rank 0's unique id, and each rank joining the
// communicator with it (every rank at once: ncclCommInitRank returns when all have).
//
//	moec_step_nccl_id(handle, id_out[128], err, errn)
//	moec_step_join(handle, id[128], err, errn)
const hostComm = `// moec_step_nccl_id(handle, id_out, err, errn): a new communicator's unique id (128 bytes).
extern "C" void moec_step_nccl_id(void **a, long long, long long) {
  moec_state *s = moec_handle(a[0]);
  if (!moec_enter(s, a[2], a[3])) return;
  if (MOEC_WORLD == 1) {
    moec_failf(s, "the program runs one rank: it has no communicator");
    return;
  }
  ncclResult_t r = s->nccl.ncclGetUniqueId((ncclUniqueId *)a[1]);
  if (r != 0) moec_nccl_failed(s, r, "ncclGetUniqueId", "creating the communicator's id");
}

// moec_step_join(handle, id, err, errn): this rank joins the communicator of every rank.
extern "C" void moec_step_join(void **a, long long, long long) {
  moec_state *s = moec_handle(a[0]);
  if (!moec_enter(s, a[2], a[3])) return;
  if (MOEC_WORLD == 1) return;
  ncclUniqueId id;
  memcpy(&id, a[1], sizeof id);
  ncclResult_t r = s->nccl.ncclCommInitRank(&s->comm, MOEC_WORLD, id, MOEC_RANK);
  if (r != 0) moec_nccl_failed(s, r, "ncclCommInitRank", "joining the communicator");
}

`
