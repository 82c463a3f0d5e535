package cudastep

import (
	"fmt"
	"slices"
	"strings"

	"github.com/moec-dev/moec/compiler/step"
)

// The unified cache (step.Layout.Cache, AngelPTM's "one view of GPU and host memory";
// compiler/step's cache.go): every parameter, its gradient and the AdamW moments live in
// the memory plan's host tier, which the host program keeps in one pinned host arena (the
// offloaded optimizer's, offload.go), and the device arena holds the units the step uses,
// in slots the memory plan reuses:
//
//   - cache_fetch: the copy stream waits only for the compute-stream work that last
//     touched the device bytes the fetch overwrites: the compute stream records an event
//     right after the last op before the fetch that reads or writes any of them (the
//     slot's previous occupants' last readers, an earlier op writing bytes the memory
//     plan reuses; copyWaits), so the copy may start while the ops after that one run;
//     it copies the unit's host tensors into their device copies (cuMemcpyHtoDAsync),
//     then records the fetch's own event; the compute stream waits for that event right
//     before the first op that reads one of the copies;
//   - cache_writeback: after an event the compute stream records right after the last op
//     that wrote the unit's device gradients, the copy stream copies them into the host
//     gradients (cuMemcpyDtoHAsync) and records the write-back's event; a later contribution to a
//     host gradient (another micro-batch's, a tied table's other use) copies into a
//     staging area after the arena, and the CPU adds it once the event has passed, as
//     runtime/exec adds it; the compute stream waits for the event before the first op
//     that writes bytes of the device gradients again (the memory plan reuses them);
//   - cache_evict moves nothing: the next occupant's fetch waits for the slot's last
//     readers and follows the earlier copies on the copy stream, so an evict only makes
//     the compute stream wait for a fetch no op read (its copy must land before anything
//     else writes the slot);
//   - the update runs on the host tier: grad_norm waits for the copy stream and sums the
//     host gradients' squares on the CPU into the norm's slots (moec_settle adds them as
//     it adds the device's), and the AdamW is offload.go's host update over each tensor
//     (hostAdamW: a large tensor split over CPU threads, bitwise as on one). The norm's
//     sums split over CPU threads by gradient (hostNormSums), each gradient's one ordered
//     double sum as on one thread.
//
// The copy stream runs in order, so a copy needs no wait for an op an earlier copy waited
// for, and a copy with nothing to wait for in the step waits for nothing (the step ends
// with both streams drained). The compute-stream events are reused once the copies
// waiting for them are queued: MOEC_COMPUTE_EVENTS is the most pending at once. The step
// program places a fetch right before its unit's first use (compiler/step's cache.go);
// the host queues the launches ahead of the device, so a fetch's copy starts as soon as
// the last op touching its bytes is done, beside the ops queued after that one. The step
// ends with the copy stream drained. Every layout is lowered: on several ranks the
// collectives over the host tier are staged through the device (collective_cache.go),
// ZeRO 3's fetches gather from the host shards straight into the device copies (zero3.go),
// the host update runs on the rank's shard (zeroPiece), and the compute-stream events the
// copies wait for are recorded after the compute stream waited for the collectives queued
// before them (commEmitter.waitCopies: a collective may touch a copy's device bytes on the
// communication stream).

// CacheOp is the host program's part of a unified-cache op, or of a grad_norm or adamw
// over the host tier.
type CacheOp struct {
	Kind step.OpKind // cache_fetch, cache_writeback, cache_evict, grad_norm or adamw
	// Copies are a fetch's (host to device) or a write-back's (device to host) copies.
	Copies []HostCopy
	// Adds are a write-back's later contributions: copied into the staging area (Host is
	// the staging offset) and added on the CPU into the host gradient at Into.
	Adds []HostAdd
	// Event is the fetch's or write-back's copy-stream event.
	Event int
	// Wait, for an evict, is the fetch event the compute stream still waits for (−1: none).
	Wait int
	// After, for a fetch or write-back, is the compute-stream event the copy stream waits
	// for before the copies (−1: none; copyWaits).
	After int
	// Norm are a grad_norm's host gradients: a slot of the norm each.
	Norm []HostRange
	// Update is a host adamw's pieces.
	Update []HostUpdate
}

// HostAdd is one later contribution of a write-back: Bytes at device offset Device
// copied to staging offset Stage of the host arena, then added into host offset Into.
type HostAdd struct {
	Device, Stage, Into, Bytes int64
	What                       string
}

// HostRange is N floats at byte offset At of the host arena.
type HostRange struct {
	At, N int64
	What  string
}

// cacheSupported refuses what the unified cache does not lower on the CUDA path yet:
// nothing now (one rank; data, expert, tensor, sequence and pipeline parallelism under
// ZeRO 0–3: the collectives over the host tier staged through the device,
// collective_cache.go; ZeRO 3's fetches, zero3.go). The offloaded optimizer needs
// nothing more: compiler/step drops it under the cache, which keeps every state in the
// host tier already (TestCacheSubsumesOffload). A layout the cache cannot lower names
// itself here.
func cacheSupported(step.Layout) []string {
	return nil
}

// isCacheOp reports whether op is the unified cache's: its moves, or the update's
// grad_norm and adamw over the host tier.
func isCacheOp(p *step.Program, op *step.Op) bool {
	if !p.Layout.Cache.On() {
		return false
	}
	switch op.Kind {
	case step.OpCacheFetch, step.OpCacheWriteback, step.OpCacheEvict:
		return true
	case step.OpGradNorm, step.OpAdamW:
		return onHost(p, op)
	}
	return false
}

// cacheOp lowers a unified-cache op's copies or host work (isCacheOp); the events and the
// compute stream's waits are cacheOrder's. A host adamw updates every group's pieces: the
// step's first one is the optimizer step (Lower lowers later ones to nothing), as
// runtime/exec runs one step over all groups.
func (lw *opLowerer) cacheOp(op *step.Op, ol *OpLaunches) error {
	p := lw.p
	c := &CacheOp{Kind: op.Kind, Wait: -1, After: -1}
	ol.Cache = c
	switch op.Kind {
	case step.OpCacheFetch, step.OpCacheWriteback:
		if len(op.In) != len(op.Out) {
			return fmt.Errorf("%d sources for %d destinations", len(op.In), len(op.Out))
		}
		var stage int64
		for i, src := range op.In {
			from, to := p.Buffers[src], p.Buffers[op.Out[i]]
			host, dev := from, to
			if op.Kind == step.OpCacheWriteback {
				host, dev = to, from
			}
			if host.Tier != step.Host || dev.Tier != step.Device {
				return fmt.Errorf("%s → %s does not move between the host and the device", from.Name, to.Name)
			}
			if from.Elements() != to.Elements() {
				return fmt.Errorf("%s has %d values, %s %d", from.Name, from.Elements(), to.Name, to.Elements())
			}
			if op.Kind == step.OpCacheWriteback && op.Accumulates(i) {
				c.Adds = append(c.Adds, HostAdd{Device: dev.Offset, Stage: stage, Into: host.Offset, Bytes: 4 * dev.Elements(), What: to.Name})
				stage += alignUp(4*dev.Elements(), 256)
				continue
			}
			c.Copies = append(c.Copies, HostCopy{Device: dev.Offset, Host: host.Offset, Bytes: 4 * dev.Elements(), What: to.Name})
		}
		lw.out.CacheStage = max(lw.out.CacheStage, stage)
	case step.OpCacheEvict:
		// cacheOrder: the wait for a fetch nothing read
	case step.OpGradNorm:
		pieces, err := lw.pieces()
		if err != nil {
			return err
		}
		for _, pc := range pieces {
			// On several ranks each counts its part of the group's flat vector (ZeRO 1
			// and 2: its shard), as the device's grad_norm does (collective.go).
			g, n := lw.countedGrad(pc)
			if lw.tpReplicaElsewhere(pc) || lw.mirroredElsewhere(pc) {
				n = 0
			}
			if n <= 0 {
				continue
			}
			buf := p.Buffers[g.Buf]
			if buf.Tier != step.Host {
				return fmt.Errorf("gradient %s is not in host memory", buf.Name)
			}
			c.Norm = append(c.Norm, HostRange{At: buf.Offset + 4*g.Offset, N: n, What: buf.Name})
		}
		lw.out.NormSlots = len(c.Norm)
		ol.PublishNorm = p.Layout.World() > 1 // the program's all_reduce sums the ranks' norms
	case step.OpAdamW:
		pieces, err := lw.pieces()
		if err != nil {
			return err
		}
		for _, pc := range pieces {
			if pc.param < 0 && pc.pshard < 0 {
				return fmt.Errorf("gradient %s has no parameter buffer", p.Buffers[pc.grad].Name)
			}
			// Under ZeRO 1–3 the rank updates its shard of the flat vector (zeroPiece).
			param, grad, m, v, n, ok := lw.zeroPiece(pc)
			if !ok || n <= 0 {
				continue
			}
			at := map[int]int64{}
			for _, a := range []Arg{param, grad, m, v} {
				buf := p.Buffers[a.Buf]
				if buf.Tier != step.Host || a.Offset < 0 || a.Offset+n > buf.Elements() {
					return fmt.Errorf("%s: not a host buffer holding %s's %d values at %d", buf.Name, p.Buffers[pc.grad].Name, n, a.Offset)
				}
				at[len(at)] = buf.Offset + 4*a.Offset
			}
			c.Update = append(c.Update, HostUpdate{W: at[0], G: at[1], M: at[2], V: at[3], N: n, Decay: pc.decay})
		}
	default:
		return fmt.Errorf("%s is not a unified-cache op", op.Kind)
	}
	return nil
}

// cacheOrder numbers the fetches' and write-backs' events and places the compute stream's
// waits: before the first op that reads a fetched copy, before the first op that writes
// bytes a pending write-back still copies from, and at an evict for a fetch nothing read.
func cacheOrder(p *step.Program, out *Lowered) error {
	type pending struct {
		event int
		bufs  []int
	}
	fetchOf := map[int]*pending{} // a device copy's fetch not yet waited for
	var writebacks []*pending     // write-backs whose sources the compute stream may not write yet
	events := 0
	waitFetch := func(ol *OpLaunches, f *pending) {
		ol.CacheWaits = append(ol.CacheWaits, f.event)
		for _, b := range f.bufs {
			delete(fetchOf, b)
		}
	}
	overlaps := func(a, b *step.Buffer) bool {
		return a.Tier == step.Device && b.Tier == step.Device && a.Offset < b.Offset+b.Bytes() && b.Offset < a.Offset+a.Bytes()
	}
	for i := range p.Ops {
		op, ol := &p.Ops[i], &out.Ops[i]
		c := ol.Cache
		if c != nil && c.Kind == step.OpCacheEvict {
			for _, b := range op.In {
				if f := fetchOf[b]; f != nil {
					c.Wait = f.event
					waitFetch(ol, f)
				}
			}
			continue
		}
		for _, b := range op.In {
			if f := fetchOf[b]; f != nil {
				waitFetch(ol, f)
			}
		}
		for _, b := range op.Out {
			if c != nil {
				break // a fetch's copies follow the pending write-backs on the copy stream
			}
			if f := fetchOf[b]; f != nil {
				waitFetch(ol, f)
			}
			kept := writebacks[:0]
			for _, w := range writebacks {
				hit := false
				for _, src := range w.bufs {
					hit = hit || overlaps(p.Buffers[b], p.Buffers[src])
				}
				if hit {
					ol.CacheWaits = append(ol.CacheWaits, w.event)
					continue
				}
				kept = append(kept, w)
			}
			writebacks = kept
		}
		if c == nil {
			continue
		}
		switch c.Kind {
		case step.OpCacheFetch:
			c.Event = events
			f := &pending{event: events, bufs: op.Out}
			for _, b := range op.Out {
				if fetchOf[b] != nil {
					return fmt.Errorf("cudastep: op %d fetches %s again before anything read it", i, p.Buffers[b].Name)
				}
				fetchOf[b] = f
			}
			events++
		case step.OpCacheWriteback:
			c.Event = events
			writebacks = append(writebacks, &pending{event: events, bufs: op.In})
			events++
		}
	}
	out.CacheEvents = events
	copyWaits(p, out)
	return nil
}

// launchBuffers are the buffers ol's launches (either branch) name.
func launchBuffers(ol OpLaunches) []int {
	var bufs []int
	for _, ls := range [][]Launch{ol.Launches, ol.Reuse} {
		for _, ln := range ls {
			for _, a := range ln.Args {
				if a.Kind.Pointer() && a.Buf >= 0 {
					bufs = append(bufs, a.Buf)
				}
				bufs = append(bufs, a.Table...)
			}
		}
	}
	return bufs
}

// copyWaits places the copy stream's waits for the compute stream. A fetch overwrites
// device bytes: its copies wait for the last op before it that reads or writes any of
// them (the slot's previous occupants' last readers, an earlier op writing bytes the
// memory plan reuses), not for everything before it. A write-back reads device bytes: it
// waits for the last op before it that writes any of them. The copy stream runs in order,
// so a copy whose last conflicting op is already behind an earlier copy's wait needs none.
// The compute stream records an event right after each op a copy waits for; the events
// are reused once the copies waiting for them are queued (the records are in program
// order and so are the waits), so there are as many as waits pending at once at most.
// A copy with no conflicting op before it in the step waits for nothing: the step starts
// with both streams drained (moec_step_train synchronizes them at the end of each step).
func copyWaits(p *step.Program, out *Lowered) {
	device := func(b int) (lo, hi int64, ok bool) {
		buf := p.Buffers[b]
		return buf.Offset, buf.Offset + buf.Bytes(), buf.Tier == step.Device
	}
	conflicts := func(k int, dst []int, reads bool) bool {
		op := &p.Ops[k]
		touched := op.Out
		if reads {
			touched = append(append([]int(nil), op.In...), op.Out...)
		}
		// A launch may name buffers beyond the op's inputs and outputs (a reuse branch's
		// earlier weights, saved statistics); which of them it writes is not known here,
		// so they count as read and written.
		touched = append(slices.Clone(touched), launchBuffers(out.Ops[k])...)
		for _, b := range touched {
			lo, hi, ok := device(b)
			if !ok {
				continue
			}
			for _, d := range dst {
				if dlo, dhi, ok := device(d); ok && lo < dhi && dlo < hi {
					return true
				}
			}
		}
		return false
	}
	covered := -1   // the copy stream follows every op up to this one
	busy := []int{} // busy[e]: the last copy op waiting for compute event e
	for i := range p.Ops {
		c := out.Ops[i].Cache
		if c == nil {
			continue
		}
		c.After = -1
		if c.Kind != step.OpCacheFetch && c.Kind != step.OpCacheWriteback {
			continue
		}
		dst, reads := p.Ops[i].Out, true // a fetch waits for the readers and writers of what it overwrites
		if c.Kind == step.OpCacheWriteback {
			dst, reads = p.Ops[i].In, false // a write-back for the writers of what it copies
		}
		j := -1
		for k := i - 1; k > covered; k-- {
			if out.Ops[k].Cache == nil && conflicts(k, dst, reads) {
				j = k
				break
			}
		}
		if j < 0 {
			continue
		}
		covered = j
		e := 0
		for e < len(busy) && busy[e] >= j {
			e++
		}
		if e == len(busy) {
			busy = append(busy, 0)
		}
		busy[e] = i
		c.After = e
		out.Ops[j].CacheRecord = append(out.Ops[j].CacheRecord, e)
	}
	out.ComputeEvents = len(busy)
}

// hostCacheFields are the state's fields the unified cache adds to the offloaded
// optimizer's (the host arena and the copy stream).
const hostCacheFields = `  CUevent compute_at[MOEC_COMPUTE_EVENTS]; // the unified cache: recorded on the compute stream after an op a copy waits for
  CUevent cache_moved[MOEC_CACHE_EVENTS]; // recorded on the copy stream after each fetch and write-back
`

// hostCacheOpen creates and destroys the unified cache's events, and holds its CPU
// helpers: a write-back's add and a gradient's sum of squares.
const hostCacheOpen = hostNormSums + `
// moec_cache_open creates the unified cache's events (after moec_offload_open).
static int moec_cache_open(moec_state *s) {
  for (int i = 0; i < MOEC_COMPUTE_EVENTS; i++)
    MOEC_CU(s, s->cu.cuEventCreate(&s->compute_at[i], MOEC_CU_EVENT_DISABLE_TIMING), "creating an event");
  for (int i = 0; i < MOEC_CACHE_EVENTS; i++)
    MOEC_CU(s, s->cu.cuEventCreate(&s->cache_moved[i], MOEC_CU_EVENT_DISABLE_TIMING), "creating an event");
  return 1;
}

// moec_cache_close waits for the copies and destroys the unified cache's events.
static void moec_cache_close(moec_state *s) {
  if (s->copy_stream) s->cu.cuStreamSynchronize(s->copy_stream);
  for (int i = 0; i < MOEC_CACHE_EVENTS; i++)
    if (s->cache_moved[i]) s->cu.cuEventDestroy(s->cache_moved[i]);
  for (int i = 0; i < MOEC_COMPUTE_EVENTS; i++)
    if (s->compute_at[i]) s->cu.cuEventDestroy(s->compute_at[i]);
}

// moec_host_add adds a write-back's later contribution into a host gradient, as
// runtime/exec's CacheMove adds it.
[[maybe_unused]] static void moec_host_add(float *to, const float *from, long long n) {
  for (long long i = 0; i < n; i++) to[i] += from[i];
}

`

// hostNormSums are the host gradients' sums of squares (offload.go's hostAdamW before it:
// the threads' setting).
const hostNormSums = `
// moec_host_sumsq is a host gradient's sum of squares in double.
static double moec_host_sumsq(const float *g, long long n) {
  double sq = 0;
  for (long long i = 0; i < n; i++) sq += (double)g[i] * (double)g[i];
  return sq;
}

// moec_host_sumsq_run is sums[k] for gradients [lo, hi): count floats at offset at[k] of
// the host arena.
static void moec_host_sumsq_run(const unsigned char *host, const long long *at, const long long *count, int lo, int hi, double *sums) {
  for (int k = lo; k < hi; k++) sums[k] = moec_host_sumsq((const float *)(host + at[k]), count[k]);
}

// moec_host_sumsqs is each of n gradients' sum of squares, each one ordered sum as on one
// thread (so bitwise the same), the gradients split into runs of about equal values over
// up to threads CPU threads when they hold at least 2·MOEC_HOST_ADAMW_GRAIN values.
static void moec_host_sumsqs(const unsigned char *host, const long long *at, const long long *count, int n, double *sums, int threads) {
  long long total = 0;
  for (int k = 0; k < n; k++) total += count[k];
  long long parts = total / MOEC_HOST_ADAMW_GRAIN;
  if (parts > threads) parts = threads;
  if (parts > n) parts = n;
  if (parts < 2) {
    moec_host_sumsq_run(host, at, count, 0, n, sums);
    return;
  }
  int cut[MOEC_HOST_THREADS_MAX + 1]; // run j is gradients [cut[j], cut[j+1])
  int runs = 0;
  long long acc = 0;
  cut[0] = 0;
  for (int k = 0; k < n; k++) {
    acc += count[k];
    if (k + 1 < n && runs + 1 < parts && acc * parts >= (runs + 1) * total) cut[++runs] = k + 1;
  }
  cut[++runs] = n;
  std::thread pool[MOEC_HOST_THREADS_MAX];
  int started = 0, done = runs; // runs [done, runs) left to the calling thread
  for (int j = 1; j < runs; j++) {
    try {
      pool[started++] = std::thread(moec_host_sumsq_run, host, at, count, cut[j], cut[j + 1], sums);
    } catch (...) {
      started--;
      done = j;
      break; // no thread: the calling thread sums the rest
    }
  }
  moec_host_sumsq_run(host, at, count, 0, cut[1], sums);
  if (done < runs) moec_host_sumsq_run(host, at, count, cut[done], n, sums);
  for (int i = 0; i < started; i++) pool[i].join();
}
`

// emitCache writes a unified-cache op's host code (see CacheOp) at indent in.
func emitCache(w *strings.Builder, in string, c *CacheOp, what string) {
	q := fmt.Sprintf("%q", what)
	afterCompute := func() {
		if c.After >= 0 {
			fmt.Fprintf(w, "%sMOEC_CU(s, s->cu.cuStreamWaitEvent(s->copy_stream, s->compute_at[%d], 0), %s);\n", in, c.After, q)
		}
	}
	switch c.Kind {
	case step.OpCacheFetch:
		afterCompute() // the last op that read or wrote the bytes it overwrites
		for _, cp := range c.Copies {
			fmt.Fprintf(w, "%sMOEC_CU(s, s->cu.cuMemcpyHtoDAsync(s->base + %dULL, s->host + %dULL, %d, s->copy_stream), %s); // %s\n",
				in, cp.Device, cp.Host, cp.Bytes, q, cp.What)
		}
		fmt.Fprintf(w, "%sMOEC_CU(s, s->cu.cuEventRecord(s->cache_moved[%d], s->copy_stream), %s);\n", in, c.Event, q)
	case step.OpCacheWriteback:
		afterCompute() // the last op that wrote the device gradients
		for _, cp := range c.Copies {
			fmt.Fprintf(w, "%sMOEC_CU(s, s->cu.cuMemcpyDtoHAsync(s->host + %dULL, s->base + %dULL, %d, s->copy_stream), %s); // %s\n",
				in, cp.Host, cp.Device, cp.Bytes, q, cp.What)
		}
		for _, a := range c.Adds {
			fmt.Fprintf(w, "%sMOEC_CU(s, s->cu.cuMemcpyDtoHAsync(s->host + MOEC_CACHE_STAGE + %dULL, s->base + %dULL, %d, s->copy_stream), %s); // %s (staged, added)\n",
				in, a.Stage, a.Device, a.Bytes, q, a.What)
		}
		fmt.Fprintf(w, "%sMOEC_CU(s, s->cu.cuEventRecord(s->cache_moved[%d], s->copy_stream), %s);\n", in, c.Event, q)
		if len(c.Adds) > 0 {
			fmt.Fprintf(w, "%sMOEC_CU(s, s->cu.cuEventSynchronize(s->cache_moved[%d]), %s);\n", in, c.Event, q)
			for _, a := range c.Adds {
				fmt.Fprintf(w, "%smoec_host_add((float *)(s->host + %dULL), (const float *)(s->host + MOEC_CACHE_STAGE + %dULL), %dLL); // %s\n",
					in, a.Into, a.Stage, a.Bytes/4, a.What)
			}
		}
	case step.OpCacheEvict:
		if c.Wait < 0 {
			fmt.Fprintf(w, "%s// nothing moves: the slot's next fetch waits for the compute stream\n", in)
		}
	case step.OpGradNorm:
		fmt.Fprintf(w, "%sMOEC_CU(s, s->cu.cuStreamSynchronize(s->copy_stream), %s); // the write-backs\n", in, q)
		fmt.Fprintf(w, "%s{\n%s  double sums[%d];\n", in, in, max(len(c.Norm), 1))
		if len(c.Norm) > 0 {
			var at, n []string
			for k, r := range c.Norm {
				fmt.Fprintf(w, "%s  // sums[%d]: %s\n", in, k, r.What)
				at, n = append(at, fmt.Sprintf("%dLL", r.At)), append(n, fmt.Sprintf("%dLL", r.N))
			}
			fmt.Fprintf(w, "%s  static const long long at[%d] = {%s};\n", in, len(c.Norm), strings.Join(at, ", "))
			fmt.Fprintf(w, "%s  static const long long count[%d] = {%s};\n", in, len(c.Norm), strings.Join(n, ", "))
			fmt.Fprintf(w, "%s  moec_host_sumsqs(s->host, at, count, %d, sums, s->host_threads);\n", in, len(c.Norm))
		}
		if len(c.Norm) > 0 {
			fmt.Fprintf(w, "%s  MOEC_CU(s, s->cu.cuMemcpyHtoD(s->base + MOEC_NORM_AT, sums, sizeof(double) * %d), %s);\n", in, len(c.Norm), q)
		}
		fmt.Fprintf(w, "%s}\n", in)
	case step.OpAdamW:
		fmt.Fprintf(w, "%sMOEC_CU(s, s->cu.cuStreamSynchronize(s->copy_stream), %s); // the write-backs\n", in, q)
		for _, u := range c.Update {
			fmt.Fprintf(w, "%smoec_host_adamw((float *)(s->host + %dULL), (const float *)(s->host + %dULL), (float *)(s->host + %dULL), (float *)(s->host + %dULL), %dLL, s->adam, %d, s->host_threads);\n",
				in, u.W, u.G, u.M, u.V, u.N, boolInt(u.Decay))
		}
	}
}

// emitCacheRecords writes the compute stream's records of the events the unified cache's
// copies wait for, after an op's launches.
func emitCacheRecords(w *strings.Builder, in string, events []int, what string) {
	for _, e := range events {
		fmt.Fprintf(w, "%sMOEC_CU(s, s->cu.cuEventRecord(s->compute_at[%d], s->stream), %q);\n", in, e, what)
	}
}

// emitCacheWaits writes the compute stream's waits for the copy stream's events before an
// op's launches.
func emitCacheWaits(w *strings.Builder, in string, events []int, what string) {
	for _, e := range events {
		fmt.Fprintf(w, "%sMOEC_CU(s, s->cu.cuStreamWaitEvent(s->stream, s->cache_moved[%d], 0), %q);\n", in, e, what)
	}
}
