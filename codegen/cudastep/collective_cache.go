package cudastep

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/moec-dev/moec/compiler/step"
)

// The unified cache on several ranks (cache.go): the step program keeps the parameters,
// gradients and AdamW moments in the host tier, so the reductions of the gradients
// (all_reduce under ZeRO 0 and 1 and over tp, pp or expert groups, reduce_scatter into
// the rank's gradient shard under ZeRO 2 and 3) and ZeRO 1/2's all_gather of the updated
// shards run over host buffers, which
// NCCL cannot read. They are staged through the device: a staging workspace after the
// arena (commStageWork) of at most one cache page, through which the collective runs in
// chunks, each chunk on the communication stream in order:
//
//   - the chunk's host bytes copied into the staging region (cuMemcpyHtoDAsync), packed
//     (small gradients share a chunk, a large one spans several);
//   - the NCCL call on the staging region;
//   - the result copied back into the host buffers (cuMemcpyDtoHAsync).
//
// The shards' collectives stage a part of every rank's shard at a time (stageShards); the
// host program computes their segments as it runs (moec_staged_shards) from the list of
// the flat vector's buffers, since a 1T model's reduce-scatter over 192 ranks has some
// 475,000 of them.
// The region is bounded (one page, the cache's unit of device memory, 4 MiB by default:
// large enough for NCCL's bandwidth) rather than sized by the largest collective, which
// is every gradient of the rank: the cache exists because the device does not hold them.
// (ZeRO 3's fetch from the host shards needs no staging: zero3.go.)
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
// Every rank of a group lists the same buffers in the same order (the group's replicas
// have the same plan), so the ranks pack the same chunks, and an element is
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
// Bytes is the region it needs, Comm the communicator (Lowered.Comms). An all_reduce's
// Chunks are written out as tables; a sharded one (reduce_scatter, all_gather) has its
// Shards instead, from which the host program computes the chunks as it runs (and
// Shards.Segments lists them).
type Staged struct {
	Chunks []StageChunk
	Bytes  int64
	Comm   int
	Shards *Shards
}

// FlatBuf is one host buffer of a sharded collective's flat vector: Elements values from
// Flat, at byte Host of the host arena.
type FlatBuf struct {
	Flat, Elements, Host int64
	Name                 string
}

// Shards describes a ZeRO collective over the host tier staged a part of every rank's
// shard at a time (stageShards): Func (ncclReduceScatter or ncclAllGather) over the flat
// vector [0, Elements) that Bufs tile (sorted by Flat), Ranks shards of Shard values, this
// rank's at position Pos, Part values of each shard a chunk; a reduce_scatter copies its
// result into the rank's shard at host byte OutHost (OutName). Its chunks are
// Segments(): thousands of pages over hundreds of ranks make millions of segments, which
// the host program (moec_staged_shards) computes rather than reads from a table.
type Shards struct {
	Func        string
	Bufs        []FlatBuf
	Elements    int64
	Shard, Part int64
	Ranks, Pos  int
	OutHost     int64
	OutName     string
}

// rangeSegs is the host ranges of flat [a, b), placed from byte base of the staging region:
// the buffers overlapping it, found by bisection as moec_stage_range finds them.
func (sh *Shards) rangeSegs(a, b, base int64, in, back bool) []StageSeg {
	bufs := sh.Bufs
	i, _ := slices.BinarySearchFunc(bufs, a, func(x FlatBuf, a int64) int {
		if x.Flat+x.Elements <= a {
			return -1
		}
		return 1
	})
	var ss []StageSeg
	for ; i < len(bufs) && bufs[i].Flat < b; i++ {
		x := bufs[i]
		lo, hi := max(a, x.Flat), min(b, x.Flat+x.Elements)
		if lo >= hi {
			continue
		}
		ss = append(ss, StageSeg{Host: x.Host + 4*(lo-x.Flat), Stage: base + 4*(lo-a), Bytes: 4 * (hi - lo), In: in, Out: back,
			What: fmt.Sprintf("%s[%d:%d]", x.Name, lo-x.Flat, hi-x.Flat)})
	}
	return ss
}

// Segments is the collective's chunks, in the order the host program runs them: chunk k
// holds values [k·Part, k·Part + Part) of each shard, rank r's part in slot r of the
// staging region and one slot after the ranks'.
func (sh *Shards) Segments() []StageChunk {
	var chunks []StageChunk
	S, L := sh.Shard, sh.Part
	for c0 := int64(0); c0 < S; c0 += L {
		n := min(L, S-c0)
		last := int64(sh.Ranks) * n * 4 // the slot after the ranks'
		ch := StageChunk{Count: n}
		for r := 0; r < sh.Ranks; r++ {
			a := int64(r)*S + c0
			switch {
			case sh.Func == "ncclReduceScatter":
				ch.Segs = append(ch.Segs, sh.rangeSegs(a, a+n, int64(r)*n*4, true, false)...)
			case r == sh.Pos:
				ch.Segs = append(ch.Segs, sh.rangeSegs(a, a+n, last, true, false)...)
			default:
				ch.Segs = append(ch.Segs, sh.rangeSegs(a, a+n, int64(r)*n*4, false, true)...)
			}
		}
		if sh.Func == "ncclReduceScatter" {
			ch.Func, ch.Send, ch.Recv = "ncclReduceScatter", 0, last
			// The shard's tail past the flat vector stays as it is (zero).
			if keep := min(n, sh.Elements-(int64(sh.Pos)*S+c0)); keep > 0 {
				ch.Segs = append(ch.Segs, StageSeg{Host: sh.OutHost + 4*c0, Stage: last, Bytes: 4 * keep, Out: true, What: fmt.Sprintf("%s[%d:%d]", sh.OutName, c0, c0+keep)})
			}
		} else {
			ch.Func, ch.Send, ch.Recv = "ncclAllGather", last, 0
		}
		chunks = append(chunks, ch)
	}
	return chunks
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
		if !slices.Equal(op.In, op.Out) || op.ReduceMax {
			return fmt.Errorf("an all_reduce over host buffers that is not an in-place sum")
		}
		lw.stageAllReduce(op, chunk, st)
	case step.OpReduceScatter, step.OpAllGather:
		if err := lw.stageShards(op, chunk, ranks, pos, st); err != nil {
			return err
		}
	default:
		return fmt.Errorf("%s over host-tier buffers (the unified cache on several ranks) is not lowered to NCCL yet", op.Kind)
	}
	if sh := st.Shards; sh != nil { // the ranks' slots and the rank's own after them
		st.Bytes = int64(sh.Ranks+1) * min(sh.Part, sh.Shard) * 4
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

// stageShards lowers ZeRO's collectives over the host tier, a part of every rank's
// shard at a time: chunk k holds floats [k·L, k·L + L) of each shard, rank r's part in
// slot r of the staging region (r·L floats in) and one slot after the ranks' (ranks·L).
// A reduce_scatter (ZeRO 2) packs every rank's part of the gradients' flat vector into
// the slots, reduce-scatters them into the last slot and copies it into the rank's
// gradient shard; an all_gather of the updated shards (after the host update) copies the
// rank's own part of the weights into the last slot, gathers every rank's into the slots
// and copies the others' back into the host weights.
func (lw *opLowerer) stageShards(op *step.Op, chunk int64, ranks, pos int, st *Staged) error {
	p := lw.p
	g, err := lw.groupOf(op.Group)
	if err != nil {
		return err
	}
	if g.Size != ranks || g.Index != pos {
		return fmt.Errorf("%s over %d ranks as rank %d, group %s spans %d as its shard %d", op.Kind, ranks, pos, g.Name, g.Size, g.Index)
	}
	flat := op.In
	if op.Kind == step.OpAllGather {
		if !slices.Equal(op.In, op.Out) {
			return fmt.Errorf("an all_gather of host weights that is not in place")
		}
	} else if op.Accumulates(0) {
		return fmt.Errorf("a reduce_scatter that adds into its shard is not lowered to NCCL yet")
	}
	sh := &Shards{Func: "ncclAllGather", Elements: g.Elements, Shard: g.Shard, Part: max(chunk/4/int64(ranks+1), 1), Ranks: ranks, Pos: pos}
	for _, b := range flat {
		buf := p.Buffers[b]
		if buf.Flat < 0 {
			return fmt.Errorf("%s has no place in group %s's flat vector", buf.Name, g.Name)
		}
		sh.Bufs = append(sh.Bufs, FlatBuf{Flat: buf.Flat, Elements: buf.Elements(), Host: buf.Offset, Name: buf.Name})
	}
	slices.SortFunc(sh.Bufs, func(a, b FlatBuf) int { return cmp.Compare(a.Flat, b.Flat) })
	// The buffers must tile the flat vector [0, Elements): a gap would reduce whatever an
	// earlier chunk left in the staging region.
	end := int64(0)
	for _, x := range sh.Bufs {
		if x.Flat != end {
			return fmt.Errorf("group %s's buffers leave [%d, %d) of its flat vector out of %s", g.Name, end, x.Flat, op.Kind)
		}
		end = x.Flat + x.Elements
	}
	if end != g.Elements || g.Shard*int64(ranks) < g.Elements {
		return fmt.Errorf("%s covers %d of group %s's %d values (%d shards of %d)", op.Kind, end, g.Name, g.Elements, ranks, g.Shard)
	}
	var out *step.Buffer
	if op.Kind == step.OpReduceScatter {
		if out = p.Buffers[op.Out[0]]; out.Elements() != g.Shard {
			return fmt.Errorf("reduce_scatter into %s of %d values, the shard holds %d", out.Name, out.Elements(), g.Shard)
		}
	}
	if op.Kind == step.OpReduceScatter {
		sh.Func, sh.OutHost, sh.OutName = "ncclReduceScatter", out.Offset, out.Name
	}
	st.Shards = sh
	return nil
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
[[maybe_unused]] static int moec_staged(moec_state *s, const moec_stage_chunk *ch, int n, const moec_stage_seg *seg, unsigned long long stage,
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

// moec_flat_buf is one host buffer of a sharded collective's flat vector: elements values
// from flat, at byte host of the host arena.
typedef struct {
  long long flat, elements, host;
} moec_flat_buf;

// moec_stage_range copies values [a, b) of a flat vector whose buffers buf (sorted by flat)
// tile it between the host and the staging region from byte base: to the device when in,
// back to the host otherwise. The first buffer is found by bisection.
[[maybe_unused]] static int moec_stage_range(moec_state *s, const moec_flat_buf *buf, int nbuf, long long a, long long b,
                                             unsigned long long base, int in, const char *what) {
  int lo = 0, hi = nbuf;
  while (lo < hi) {
    int mid = lo + (hi - lo) / 2;
    if (buf[mid].flat + buf[mid].elements <= a)
      lo = mid + 1;
    else
      hi = mid;
  }
  for (int i = lo; i < nbuf && buf[i].flat < b; i++) {
    long long x = a > buf[i].flat ? a : buf[i].flat, end = buf[i].flat + buf[i].elements;
    long long y = b < end ? b : end;
    if (x >= y) continue;
    unsigned long long host = (unsigned long long)(buf[i].host + 4 * (x - buf[i].flat)), dev = base + (unsigned long long)(4 * (x - a));
    size_t bytes = (size_t)(4 * (y - x));
    if (in)
      MOEC_CU(s, s->cu.cuMemcpyHtoDAsync(s->base + dev, s->host + host, bytes, s->comm_stream), what);
    else
      MOEC_CU(s, s->cu.cuMemcpyDtoHAsync(s->host + host, s->base + dev, bytes, s->comm_stream), what);
  }
  return 1;
}

// moec_staged_shards runs ZeRO's reduce-scatter (func 1) or all-gather (func 2) of a flat
// vector of elements values over host buffers, ranks shards of shard values, this rank's
// at pos, through the staging region at stage: part values of every rank's shard a chunk,
// rank r's in slot r and this rank's own (gathered from, or scattered into) in the slot
// after the ranks'. A reduce-scatter copies each chunk's result into the rank's shard at
// host byte out_host (its tail past the flat vector left as it is); then the host waits
// for the communication stream (it reads the results next).
[[maybe_unused]] static int moec_staged_shards(moec_state *s, int func, const moec_flat_buf *buf, int nbuf, long long elements,
                                               long long shard, long long part, int ranks, int pos, unsigned long long out_host,
                                               unsigned long long stage, ncclComm_t comm, const char *what) {
  for (long long c0 = 0; c0 < shard; c0 += part) {
    long long n = shard - c0 < part ? shard - c0 : part;
    unsigned long long slot = (unsigned long long)(4 * n), last = stage + (unsigned long long)ranks * slot;
    for (int r = 0; r < ranks; r++) {
      long long a = (long long)r * shard + c0;
      if (func == 1) {
        if (!moec_stage_range(s, buf, nbuf, a, a + n, stage + (unsigned long long)r * slot, 1, what)) return 0;
      } else if (r == pos) {
        if (!moec_stage_range(s, buf, nbuf, a, a + n, last, 1, what)) return 0;
      }
    }
    if (func == 1) {
      MOEC_NCCL(s, s->nccl.ncclReduceScatter(moec_at(s, stage), moec_at(s, last), n, MOEC_NCCL_FLOAT32, MOEC_NCCL_SUM, comm, s->comm_stream), what);
      long long keep = elements - ((long long)pos * shard + c0);
      if (keep > n) keep = n;
      if (keep > 0)
        MOEC_CU(s, s->cu.cuMemcpyDtoHAsync(s->host + out_host + (unsigned long long)(4 * c0), s->base + last, (size_t)(4 * keep), s->comm_stream), what);
    } else {
      MOEC_NCCL(s, s->nccl.ncclAllGather(moec_at(s, last), moec_at(s, stage), n, MOEC_NCCL_FLOAT32, comm, s->comm_stream), what);
      for (int r = 0; r < ranks; r++) {
        long long a = (long long)r * shard + c0;
        if (r != pos && !moec_stage_range(s, buf, nbuf, a, a + n, stage + (unsigned long long)r * slot, 0, what)) return 0;
      }
    }
  }
  MOEC_CU(s, s->cu.cuStreamSynchronize(s->comm_stream), what);
  return 1;
}

`

// stagedFunc numbers a staged collective's NCCL call as the host program does.
func stagedFunc(name string) int {
	switch name {
	case "ncclReduceScatter":
		return 1
	case "ncclAllGather":
		return 2
	}
	return 0 // ncclAllReduce
}

// stagedTable writes st's tables (number t) for the host program: a sharded collective's
// buffers, an all-reduce's chunks and segments.
func stagedTable(t int, st *Staged) string {
	var b strings.Builder
	if sh := st.Shards; sh != nil {
		fmt.Fprintf(&b, "static const moec_flat_buf moec_stage_bufs_%d[%d] = {", t, len(sh.Bufs))
		for _, x := range sh.Bufs {
			fmt.Fprintf(&b, "\n    {%dLL, %dLL, %dLL}, // %s", x.Flat, x.Elements, x.Host, x.Name)
		}
		b.WriteString("\n};\n")
		return b.String()
	}
	var segs []StageSeg
	fmt.Fprintf(&b, "static const moec_stage_chunk moec_stage_chunks_%d[%d] = {", t, len(st.Chunks))
	for k, ch := range st.Chunks {
		if k%2 == 0 {
			b.WriteString("\n   ")
		}
		fmt.Fprintf(&b, " {%d, %dLL, %dLL, %dLL, %d},", stagedFunc(ch.Func), ch.Send, ch.Recv, ch.Count, len(ch.Segs))
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
	if sh := st.Shards; sh != nil {
		fmt.Fprintf(w, "%sif (!moec_staged_shards(s, %d, moec_stage_bufs_%d, %d, %dLL, %dLL, %dLL, %d, %d, %dULL, %dULL, s->comms[%d], %s)) return 0; // %d chunk(s) of %d ranks' shards through the staging region\n",
			in, stagedFunc(sh.Func), t, len(sh.Bufs), sh.Elements, sh.Shard, sh.Part, sh.Ranks, sh.Pos, sh.OutHost, stageAt, comm, q, (sh.Shard+sh.Part-1)/sh.Part, sh.Ranks)
		return
	}
	fmt.Fprintf(w, "%sif (!moec_staged(s, moec_stage_chunks_%d, %d, moec_stage_segs_%d, %dULL, s->comms[%d], %s)) return 0; // %d chunk(s) through the staging region\n",
		in, t, len(st.Chunks), t, stageAt, comm, q, len(st.Chunks))
}
