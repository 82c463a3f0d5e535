package cudastep

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/moec-dev/moec/compiler/step"
)

// commEmitter writes the host program's collectives (see collective.go): each on the
// communication stream after an event of the compute stream, and the compute stream's
// wait for it before the first later op that touches its buffers.
type commEmitter struct {
	next        int // the next collective's event
	outstanding []pendingCollective
	// tables are the sends-and-receives tables (p2pTableMin calls or more) by content,
	// written before moec_run_ops (tables); tableOf is each one's index.
	tables  []string
	tableOf map[string]int
	// staged are the staged collectives' tables (collective_cache.go), in program order.
	staged []string
}

// hasTables reports whether writeTables writes anything.
func (ce *commEmitter) hasTables() bool { return len(ce.tables) > 0 || len(ce.staged) > 0 }

// p2pTableMin is the number of sends and receives from which a collective's calls become
// a row each of a table its ops share (the expert exchange of 192 ranks with 8 experts
// each is 3,072 calls per op and layer; written out they made a 57 MB host program).
const p2pTableMin = 8

// p2pTable returns the table of calls (all sends and receives on one communicator,
// p2pTableMin or more) and the bases its rows' offsets are relative to: the lowest send
// and receive offsets. ok is false for any other collective.
func (ce *commEmitter) p2pTable(calls []NCCLCall) (table int, sendBase, recvBase int64, ok bool) {
	if len(calls) < p2pTableMin {
		return 0, 0, 0, false
	}
	sendBase, recvBase = -1, -1
	for _, c := range calls {
		if c.Func != "ncclSend" && c.Func != "ncclRecv" || c.Comm != calls[0].Comm {
			return 0, 0, 0, false
		}
		if c.Func == "ncclSend" && (sendBase < 0 || c.Send < sendBase) {
			sendBase = c.Send
		}
		if c.Func == "ncclRecv" && (recvBase < 0 || c.Recv < recvBase) {
			recvBase = c.Recv
		}
	}
	var rows strings.Builder
	for k, c := range calls {
		if k%4 == 0 {
			rows.WriteString("\n   ")
		}
		if c.Func == "ncclSend" {
			fmt.Fprintf(&rows, " {1, %dLL, %dLL, %d},", c.Send-sendBase, c.Count, c.Peer)
		} else {
			fmt.Fprintf(&rows, " {0, %dLL, %dLL, %d},", c.Recv-recvBase, c.Count, c.Peer)
		}
	}
	key := rows.String()
	if ce.tableOf == nil {
		ce.tableOf = map[string]int{}
	}
	t, seen := ce.tableOf[key]
	if !seen {
		t = len(ce.tables)
		ce.tableOf[key] = t
		ce.tables = append(ce.tables, fmt.Sprintf("static const moec_p2p moec_p2p_%d[%d] = {%s\n};\n", t, len(calls), key))
	}
	return t, max(sendBase, 0), max(recvBase, 0), true
}

// writeTables writes moec_p2p_run and the tables the collectives use (nothing when none
// does).
func (ce *commEmitter) writeTables(w *strings.Builder) {
	if len(ce.staged) > 0 {
		w.WriteString(hostStaged) // collective_cache.go
		for _, t := range ce.staged {
			w.WriteString(t)
		}
	}
	if len(ce.tables) == 0 {
		return
	}
	w.WriteString(hostP2PRun)
	for _, t := range ce.tables {
		w.WriteString(t)
	}
}

// hostP2PRun runs one table of sends and receives (inside the collective's group).
const hostP2PRun = `
// moec_p2p is one send (send = 1) or receive of a collective's table: off is the byte
// offset from the collective's send (or receive) base in the arena, count the floats,
// peer the other rank's place in the communicator.
typedef struct {
  int send;
  long long off, count;
  int peer;
} moec_p2p;

// moec_p2p_run issues a table's n sends and receives on comm; the first failure ends it.
static ncclResult_t moec_p2p_run(moec_state *s, const moec_p2p *t, int n, unsigned long long send,
                                 unsigned long long recv, ncclComm_t comm) {
  for (int k = 0; k < n; k++) {
    ncclResult_t r = t[k].send ? s->nccl.ncclSend(moec_at(s, send + t[k].off), t[k].count, MOEC_NCCL_FLOAT32, t[k].peer, comm, s->comm_stream)
                               : s->nccl.ncclRecv(moec_at(s, recv + t[k].off), t[k].count, MOEC_NCCL_FLOAT32, t[k].peer, comm, s->comm_stream);
    if (r != MOEC_NCCL_SUCCESS) return r;
  }
  return MOEC_NCCL_SUCCESS;
}

`

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
	if c.Staged != nil { // collective_cache.go: run and waited for on the host
		t := len(ce.staged)
		ce.staged = append(ce.staged, stagedTable(t, c.Staged))
		emitStaged(w, in, c.Staged, t, c.Staged.Comm, workAt[commStageWork], what)
		return
	}
	if len(c.Calls) == 0 && len(c.HostIn) == 0 {
		fmt.Fprintf(w, "%s// a group of one rank: nothing to exchange\n", in)
		return
	}
	ev := ce.next
	ce.next++
	q := fmt.Sprintf("%q", what)
	fmt.Fprintf(w, "%sMOEC_CU(s, s->cu.cuEventRecord(s->ready, s->stream), %s);\n", in, q)
	fmt.Fprintf(w, "%sMOEC_CU(s, s->cu.cuStreamWaitEvent(s->comm_stream, s->ready, 0), %s);\n", in, q)
	for _, cp := range c.HostIn { // zero3.go: the rank's parts from its host shard, before the sends
		fmt.Fprintf(w, "%sMOEC_CU(s, s->cu.cuMemcpyHtoDAsync(s->base + %dULL, s->host + %dULL, %d, s->comm_stream), %s); // %s\n",
			in, cp.Device, cp.Host, cp.Bytes, q, cp.What)
	}
	grouped := len(c.Calls) > 1
	if grouped {
		fmt.Fprintf(w, "%sMOEC_NCCL(s, s->nccl.ncclGroupStart(), %s);\n", in, q)
	}
	calls := make([]NCCLCall, len(c.Calls))
	for k, call := range c.Calls {
		if call.Work != "" && call.Func == "ncclRecv" {
			call.Recv += workAt[call.Work]
		} else if call.Work != "" {
			call.Send += workAt[call.Work]
		}
		calls[k] = call
	}
	if t, send, recv, ok := ce.p2pTable(calls); ok {
		fmt.Fprintf(w, "%sMOEC_NCCL(s, moec_p2p_run(s, moec_p2p_%d, %d, %dULL, %dULL, s->comms[%d]), %s); // %s … %s\n",
			in, t, len(calls), send, recv, calls[0].Comm, q, calls[0].Description, calls[len(calls)-1].Description)
		calls = nil
	}
	for _, call := range calls {
		red := "MOEC_NCCL_SUM"
		if call.Max {
			red = "MOEC_NCCL_MAX"
		}
		switch call.Func {
		case "ncclReduceScatter":
			fmt.Fprintf(w, "%sMOEC_NCCL(s, s->nccl.ncclReduceScatter(moec_at(s, %dULL), moec_at(s, %dULL), %d, MOEC_NCCL_FLOAT32, %s, s->comms[%d], s->comm_stream), %s); // %s\n",
				in, call.Send, call.Recv, call.Count, red, call.Comm, q, call.Description)
		case "ncclAllGather":
			fmt.Fprintf(w, "%sMOEC_NCCL(s, s->nccl.ncclAllGather(moec_at(s, %dULL), moec_at(s, %dULL), %d, MOEC_NCCL_FLOAT32, s->comms[%d], s->comm_stream), %s); // %s\n",
				in, call.Send, call.Recv, call.Count, call.Comm, q, call.Description)
		case "ncclAllReduce":
			fmt.Fprintf(w, "%sMOEC_NCCL(s, s->nccl.ncclAllReduce(moec_at(s, %dULL), moec_at(s, %dULL), %d, MOEC_NCCL_FLOAT32, %s, s->comms[%d], s->comm_stream), %s); // %s\n",
				in, call.Send, call.Recv, call.Count, red, call.Comm, q, call.Description)
		case "ncclSend":
			fmt.Fprintf(w, "%sMOEC_NCCL(s, s->nccl.ncclSend(moec_at(s, %dULL), %d, MOEC_NCCL_FLOAT32, %d, s->comms[%d], s->comm_stream), %s); // %s\n",
				in, call.Send, call.Count, call.Peer, call.Comm, q, call.Description)
		case "ncclRecv":
			fmt.Fprintf(w, "%sMOEC_NCCL(s, s->nccl.ncclRecv(moec_at(s, %dULL), %d, MOEC_NCCL_FLOAT32, %d, s->comms[%d], s->comm_stream), %s); // %s\n",
				in, call.Recv, call.Count, call.Peer, call.Comm, q, call.Description)
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

// waitCopies writes the compute stream's waits for every outstanding collective before
// the events the unified cache's copies wait for (cache.go's copyWaits): a copy waits for
// the last op before it that touches its device bytes, on the compute stream, and a
// collective up to that op may still read or write them on the communication stream (the
// gathers of sequence parallelism over bytes a fetch then overwrites).
func (ce *commEmitter) waitCopies(w *strings.Builder, in string) {
	for _, pc := range ce.outstanding {
		fmt.Fprintf(w, "%sMOEC_CU(s, s->cu.cuStreamWaitEvent(s->stream, s->done[%d], 0), \"the unified cache's copies wait for op %d's collective\");\n", in, pc.event, pc.op)
	}
	ce.outstanding = nil
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

// hostComm is the C ABI of several ranks: a new communicator's unique id (made by the first
// rank of each group), and each rank joining its communicators with their ids, in
// Lowered.Comms's order (each ncclCommInitRank returns when every rank of its group has
// called it; every rank joins in the same global order).
//
//	moec_step_nccl_id(handle, id_out[128], err, errn)
//	moec_step_join(handle, ids[128 × MOEC_COMMS], err, errn)
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

// moec_step_join(handle, ids, err, errn): this rank joins each of its groups'
// communicators, one unique id (128 bytes) each in the program's order.
extern "C" void moec_step_join(void **a, long long, long long) {
  moec_state *s = moec_handle(a[0]);
  if (!moec_enter(s, a[2], a[3])) return;
  for (int k = 0; k < MOEC_COMMS; k++) {
    ncclUniqueId id;
    memcpy(&id, (const char *)a[1] + (size_t)k * sizeof id, sizeof id);
    ncclResult_t r = s->nccl.ncclCommInitRank(&s->comms[k], moec_comm_size[k], id, moec_comm_rank[k]);
    if (r != 0) {
      char what[96];
      snprintf(what, sizeof what, "joining communicator %d (%d ranks, as rank %d)", k, moec_comm_size[k], moec_comm_rank[k]);
      moec_nccl_failed(s, r, "ncclCommInitRank", what);
      return;
    }
  }
}

`

// hostComms writes the program's communicators: how many (MOEC_COMMS), and each one's
// ranks and this rank's place in it, in Lowered.Comms's order.
func hostComms(w *strings.Builder, comms []Comm) {
	fmt.Fprintf(w, "#define MOEC_COMMS %d\n", len(comms))
	sizes, places := []string{}, []string{}
	for k, c := range comms {
		fmt.Fprintf(w, "// communicator %d: ranks %v (%s), this rank's place %d\n", k, c.Ranks, strings.Join(c.Axes, ", "), c.Index)
		sizes = append(sizes, strconv.Itoa(len(c.Ranks)))
		places = append(places, strconv.Itoa(c.Index))
	}
	if len(comms) == 0 {
		sizes, places = []string{"1"}, []string{"0"}
	}
	fmt.Fprintf(w, "[[maybe_unused]] static const int moec_comm_size[%d] = {%s};\n", len(sizes), strings.Join(sizes, ", "))
	fmt.Fprintf(w, "[[maybe_unused]] static const int moec_comm_rank[%d] = {%s};\n", len(places), strings.Join(places, ", "))
}
