package cudastep

import (
	"fmt"
	"slices"
	"strings"

	"github.com/moec-dev/moec/compiler/step"
)

// The unified cache on several ranks (cache.go): the step program keeps the parameters,
// gradients and AdamW moments in the host tier, so the reductions of the gradients
// (all_reduce under ZeRO 0 and 1, reduce_scatter into the rank's gradient shard under
// ZeRO 2) and ZeRO 1/2's all_gather of the updated shards run over host buffers, which
// NCCL cannot read. They are staged through the device: a staging workspace after the
// arena (commStageWork) of at most one cache page, through which the collective runs in
// chunks, each chunk on the communication stream in order:
//
//   - the chunk's host bytes copied into the staging region (cuMemcpyHtoDAsync), packed
//     (small gradients share a chunk, a large one spans several);
//   - the NCCL call on the staging region;
//   - the result copied back into the host buffers (cuMemcpyDtoHAsync).
//
// The region is bounded (one page, the cache's unit of device memory, 4 MiB by default:
// large enough for NCCL's bandwidth) rather than sized by the largest collective, which
// is every gradient of the rank: the cache exists because the device does not hold them.
// One stream runs the chunks, so a chunk's copies in never overwrite the region before the
// previous chunk's copies out have read it.
//
// The ordering is kept simple. Before queuing the chunks the host waits for the copy
// stream (cuStreamSynchronize): the write-backs that feed the host gradients have landed,
// and the CPU adds of later contributions (HostAdd) are already done, since the host
// program runs them in order when their write-back's event has passed. After the chunks
// the host waits for the communication stream: the host-tier grad_norm and AdamW that
// follow, which read the results on the CPU, and the next collective, see them. The
// device's arena is not touched, so the compute stream waits for nothing.
//
// Every rank's program lists the same buffers in the same order (the data-parallel
// replicas have the same plan), so the ranks pack the same chunks, and an element is
// reduced as the emulated NCCL and runtime/exec reduce it whatever chunk it falls in.

// commStageWork is the staging workspace of the host-tier collectives.
const commStageWork = "comm_stage"

// StageSeg is one host range of a staged chunk: Bytes at offset Host of the host arena
// and offset Stage of the staging region, copied in before the call (In) and back after
// it (Out).
type StageSeg struct {
	Host, Stage, Bytes int64
	In, Out            bool
	What               string
}

// StageChunk is one NCCL call of a staged collective: Func over Count floats, Send and
// Recv byte offsets in the staging region, with the segments it copies in and out.
type StageChunk struct {
	Func       string
	Send, Recv int64
	Count      int64
	Segs       []StageSeg
}

// Staged is a collective over host-tier buffers run through the staging region in chunks;
// Bytes is the region it needs, Comm the communicator (Lowered.Comms).
type Staged struct {
	Chunks []StageChunk
	Bytes  int64
	Comm   int
}

// stageChunkBytes is the staging region's bound: the cache's page.
func stageChunkBytes(l step.Layout) int64 {
	page := l.Cache.Page
	if page <= 0 {
		page = step.DefaultCachePage
	}
	return max(alignUp(page, 256), 256)
}

// hostCollective reports whether op is a collective whose buffers live in the host tier
// (the unified cache's reductions and ZeRO's gathers of updated shards).
func hostCollective(p *step.Program, op *step.Op) bool {
	if !p.Layout.Cache.On() || !isCollective(op.Kind) || op.CacheFill {
		return false
	}
	for _, bufs := range [][]int{op.In, op.Out} {
		for _, b := range bufs {
			if p.Buffers[b].Tier == step.Host {
				return true
			}
		}
	}
	return false
}

// stagedCollective lowers a host-tier collective to chunks through the staging region.
func (lw *opLowerer) stagedCollective(op *step.Op, c *Collective, ranks, pos int) error {
	p := lw.p
	for _, bufs := range [][]int{op.In, op.Out} {
		for _, b := range bufs {
			if buf := p.Buffers[b]; buf.Tier != step.Host {
				return fmt.Errorf("%s mixes host and device buffers (%s is on the device)", op.Kind, buf.Name)
			}
		}
	}
	st := &Staged{}
	chunk := stageChunkBytes(p.Layout)
	switch op.Kind {
	case step.OpAllReduce:
		if !slices.Equal(op.In, op.Out) {
			return fmt.Errorf("an all_reduce over host buffers that is not in place")
		}
		lw.stageAllReduce(op, chunk, st)
	default:
		return fmt.Errorf("%s over host-tier buffers (the unified cache on several ranks) is not lowered to NCCL yet", op.Kind)
	}
	for _, ch := range st.Chunks {
		st.Bytes = max(st.Bytes, ch.Send+4*ch.Count, ch.Recv+4*ch.Count)
		for _, s := range ch.Segs {
			st.Bytes = max(st.Bytes, s.Stage+s.Bytes)
		}
	}
	st.Bytes = alignUp(st.Bytes, 256)
	lw.out.CommStage = max(lw.out.CommStage, st.Bytes)
	c.Staged = st
	return nil
}

// stageAllReduce packs the host buffers, in the op's order, into chunks of at most chunk
// bytes: each chunk summed in place on the staging region and copied back.
func (lw *opLowerer) stageAllReduce(op *step.Op, chunk int64, st *Staged) {
	p := lw.p
	var cur *StageChunk
	var fill int64
	flush := func() {
		if cur != nil && fill > 0 {
			cur.Count = fill / 4
			st.Chunks = append(st.Chunks, *cur)
		}
		cur, fill = nil, 0
	}
	for _, b := range op.In {
		buf := p.Buffers[b]
		at, left := buf.Offset, buf.Bytes()
		for left > 0 {
			if cur == nil {
				cur = &StageChunk{Func: "ncclAllReduce"}
			}
			n := min(left, chunk-fill)
			segs := cur.Segs
			if k := len(segs) - 1; k >= 0 && segs[k].Host+segs[k].Bytes == at && segs[k].Stage+segs[k].Bytes == fill {
				segs[k].Bytes += n // adjacent in the host arena: one copy
				segs[k].What += ", " + buf.Name
			} else {
				cur.Segs = append(segs, StageSeg{Host: at, Stage: fill, Bytes: n, In: true, Out: true, What: buf.Name})
			}
			at, left, fill = at+n, left-n, fill+n
			if fill == chunk {
				flush()
			}
		}
	}
	flush()
}

// hostStaged runs a staged collective's chunks (collective_cache.go): seg are the chunks'
// segments in order, each chunk taking the next ch[k].segs of them.
const hostStaged = `
// moec_stage_seg is a host range of a staged chunk: bytes at host offset host and staging
// offset stage, copied in (dir & 1) before the call and back (dir & 2) after it.
typedef struct {
  long long host, stage, bytes;
  int dir;
} moec_stage_seg;

// moec_stage_chunk is one NCCL call of a staged collective (func: 0 all-reduce, 1
// reduce-scatter, 2 all-gather) over count floats at staging offsets send and recv, with
// its segs segments.
typedef struct {
  int func;
  long long send, recv, count;
  int segs;
} moec_stage_chunk;

// moec_staged runs a collective over host buffers through the staging region at stage, one
// chunk after the other on the communication stream, then waits for it (the host reads
// the results next).
static int moec_staged(moec_state *s, const moec_stage_chunk *ch, int n, const moec_stage_seg *seg, unsigned long long stage,
                       ncclComm_t comm, const char *what) {
  for (int k = 0; k < n; k++) {
    for (int j = 0; j < ch[k].segs; j++)
      if (seg[j].dir & 1)
        MOEC_CU(s, s->cu.cuMemcpyHtoDAsync(s->base + stage + seg[j].stage, s->host + seg[j].host, seg[j].bytes, s->comm_stream), what);
    void *send = moec_at(s, stage + ch[k].send), *recv = moec_at(s, stage + ch[k].recv);
    switch (ch[k].func) {
    case 0:
      MOEC_NCCL(s, s->nccl.ncclAllReduce(send, recv, ch[k].count, MOEC_NCCL_FLOAT32, MOEC_NCCL_SUM, comm, s->comm_stream), what);
      break;
    case 1:
      MOEC_NCCL(s, s->nccl.ncclReduceScatter(send, recv, ch[k].count, MOEC_NCCL_FLOAT32, MOEC_NCCL_SUM, comm, s->comm_stream), what);
      break;
    default:
      MOEC_NCCL(s, s->nccl.ncclAllGather(send, recv, ch[k].count, MOEC_NCCL_FLOAT32, comm, s->comm_stream), what);
    }
    for (int j = 0; j < ch[k].segs; j++)
      if (seg[j].dir & 2)
        MOEC_CU(s, s->cu.cuMemcpyDtoHAsync(s->host + seg[j].host, s->base + stage + seg[j].stage, seg[j].bytes, s->comm_stream), what);
    seg += ch[k].segs;
  }
  MOEC_CU(s, s->cu.cuStreamSynchronize(s->comm_stream), what);
  return 1;
}

`

// stagedTable writes st's chunk and segment tables (number t) for the host program.
func stagedTable(t int, st *Staged) string {
	funcs := map[string]int{"ncclAllReduce": 0, "ncclReduceScatter": 1, "ncclAllGather": 2}
	var b strings.Builder
	var segs []StageSeg
	fmt.Fprintf(&b, "static const moec_stage_chunk moec_stage_chunks_%d[%d] = {", t, len(st.Chunks))
	for k, ch := range st.Chunks {
		if k%2 == 0 {
			b.WriteString("\n   ")
		}
		fmt.Fprintf(&b, " {%d, %dLL, %dLL, %dLL, %d},", funcs[ch.Func], ch.Send, ch.Recv, ch.Count, len(ch.Segs))
		segs = append(segs, ch.Segs...)
	}
	fmt.Fprintf(&b, "\n};\nstatic const moec_stage_seg moec_stage_segs_%d[%d] = {", t, len(segs))
	for _, s := range segs {
		dir := 0
		if s.In {
			dir |= 1
		}
		if s.Out {
			dir |= 2
		}
		fmt.Fprintf(&b, "\n    {%dLL, %dLL, %dLL, %d}, // %s", s.Host, s.Stage, s.Bytes, dir, s.What)
	}
	b.WriteString("\n};\n")
	return b.String()
}

// emitStaged writes the host code of staged collective st on communicator comm (table t).
func emitStaged(w *strings.Builder, in string, st *Staged, t, comm int, stageAt int64, what string) {
	q := fmt.Sprintf("%q", what)
	fmt.Fprintf(w, "%sMOEC_CU(s, s->cu.cuStreamSynchronize(s->copy_stream), %s); // the write-backs (their CPU adds are done)\n", in, q)
	fmt.Fprintf(w, "%sif (!moec_staged(s, moec_stage_chunks_%d, %d, moec_stage_segs_%d, %dULL, s->comms[%d], %s)) return 0; // %d chunk(s) through the staging region\n",
		in, t, len(st.Chunks), t, stageAt, comm, q, len(st.Chunks))
}
