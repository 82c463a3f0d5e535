package cudastep

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"golang.org/x/tools/txtar"

	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/internal/golden"
)

// tinyCache is a unified cache small enough that hunyuan_tiny's two-layer dense stage
// evicts: 2 MiB in 64 KiB pages holds one layer beside the step's other buffers.
var tinyCache = step.Cache{Budget: 2 << 20, Page: 64 << 10}

// TestUnifiedCacheHostProgram: under the unified cache the host program keeps the
// parameters, gradients and moments in the pinned host arena; each cache_fetch copies
// exactly its unit's host tensors into their device copies on the copy stream after an
// event of the compute stream, and the compute stream waits for the fetch before any op
// reads a copy; each write-back copies (or, for a later micro-batch's contribution,
// stages and adds on the CPU) exactly its device gradients, and no op writes bytes a
// write-back still copies from before the compute stream waited for it; the norm and the
// AdamW run on the CPU over the host tier. The program must evict (the budget is small),
// and the ordering is checked over the program independently of how cacheOrder places
// it. With one micro-batch the op headers and the host program's cache lines of
// moec_run_ops are held to testdata/cache_tiny.txtar.
func TestUnifiedCacheHostProgram(t *testing.T) {
	for _, micro := range []int{1, 2} {
		l := step.Layout{DP: 1, EP: 1, TP: 1, PP: 1, Cache: tinyCache}
		p, low, err := lowerOne(t, tinyStage(t, 2, 1), step.Batch{MicroBatch: 1, SeqLen: 8, Micro: micro}, l)
		if err != nil {
			t.Fatalf("%d micro-batches: %v", micro, err)
		}
		host, err := HostProgram(low)
		if err != nil {
			t.Fatal(err)
		}
		counts := map[step.OpKind]int{}
		adds := 0
		// fetched: a device copy → its fetch's event, until the compute stream waits for
		// it; written: the pending write-backs' sources by event.
		fetched := map[int]int{}
		written := map[int][]int{}
		waited := map[int]bool{}
		for i := range p.Ops {
			op, ol := &p.Ops[i], low.Ops[i]
			counts[op.Kind]++
			for _, e := range ol.CacheWaits {
				waited[e] = true
				delete(written, e)
			}
			c := ol.Cache
			isMove := c != nil && (op.Kind == step.OpCacheFetch || op.Kind == step.OpCacheWriteback)
			for _, b := range op.In {
				if e, ok := fetched[b]; ok && !waited[e] && op.Kind != step.OpCacheEvict {
					t.Errorf("%d micro-batches: op %d (%s) reads %s before the compute stream waits for its fetch", micro, i, op.Kind, p.Buffers[b].Name)
				}
			}
			if !isMove {
				for _, b := range op.Out {
					ob := p.Buffers[b]
					for e, srcs := range written {
						for _, s := range srcs {
							sb := p.Buffers[s]
							if ob.Tier == step.Device && ob.Offset < sb.Offset+sb.Bytes() && sb.Offset < ob.Offset+ob.Bytes() {
								t.Errorf("%d micro-batches: op %d (%s) writes %s over %s while write-back %d still copies it", micro, i, op.Kind, ob.Name, sb.Name, e)
							}
						}
					}
				}
			}
			if op.Kind == step.OpCacheEvict {
				for _, b := range op.In {
					if e, ok := fetched[b]; ok && !waited[e] {
						t.Errorf("%d micro-batches: op %d evicts %s with its fetch still pending", micro, i, p.Buffers[b].Name)
					}
				}
			}
			if !isMove {
				continue
			}
			var bytes int64
			for _, cp := range c.Copies {
				bytes += cp.Bytes
			}
			for _, a := range c.Adds {
				bytes += a.Bytes
			}
			adds += len(c.Adds)
			var want int64
			for _, b := range op.In {
				want += p.Buffers[b].Bytes()
			}
			if bytes != want || bytes != op.Bytes {
				t.Errorf("%d micro-batches: op %d (%s) copies %d bytes, its sources hold %d, the op says %d", micro, i, op.Kind, bytes, want, op.Bytes)
			}
			if op.Kind == step.OpCacheFetch {
				for _, b := range op.Out {
					fetched[b] = c.Event
				}
				if !strings.Contains(host, fmt.Sprintf("cuEventRecord(s->cache_moved[%d], s->copy_stream)", c.Event)) {
					t.Errorf("%d micro-batches: fetch %d records no event", micro, c.Event)
				}
			} else {
				written[c.Event] = op.In
			}
		}
		if counts[step.OpCacheFetch] == 0 || counts[step.OpCacheEvict] == 0 || counts[step.OpCacheWriteback] == 0 {
			t.Errorf("%d micro-batches: %d fetches, %d evictions, %d write-backs: the budget should make the cache evict", micro,
				counts[step.OpCacheFetch], counts[step.OpCacheEvict], counts[step.OpCacheWriteback])
		}
		if micro > 1 && (adds == 0 || !strings.Contains(host, "moec_host_add((float *)(s->host + ")) {
			t.Errorf("%d micro-batches: no write-back adds into a host gradient (%d staged)", micro, adds)
		}
		for _, want := range []string{"cuMemAllocHost(", "moec_cache_open(s)", "moec_cache_close(s)", "cuMemcpyHtoDAsync(s->base + ",
			"cuMemcpyDtoHAsync(s->host + ", "cuEventRecord(s->compute_at[0], s->stream)", "cuStreamWaitEvent(s->copy_stream, s->compute_at[0], 0)", "cuStreamWaitEvent(s->stream, s->cache_moved[0], 0)",
			"moec_host_sumsqs(s->host, at, count, ", "moec_host_adamw((float *)(s->host + ", "moec_settle(s, opt, &update)", "moec_step_host_download"} {
			if !strings.Contains(host, want) {
				t.Errorf("%d micro-batches: the host program has no %q", micro, want)
			}
		}
		if strings.Contains(host, "\"dense_adamw\"") || strings.Contains(host, "\"dense_sumsq\"") {
			t.Errorf("%d micro-batches: the host program runs the update or the norm on the device", micro)
		}
		for _, e := range copyOrderErrors(p, low) {
			t.Errorf("%d micro-batches: %s", micro, e)
		}
		// Every wait of the copy stream is needed: without any one of them a copy
		// overwrites bytes an op may still use, or copies bytes before an op wrote them.
		waits := 0
		for i := range low.Ops {
			c := low.Ops[i].Cache
			if c == nil || c.After < 0 {
				continue
			}
			waits++
			after := c.After
			c.After = -1
			if len(copyOrderErrors(p, low)) == 0 {
				t.Errorf("%d micro-batches: op %d (%s) waits for compute event %d, and nothing breaks without the wait", micro, i, p.Ops[i].Kind, after)
			}
			c.After = after
		}
		before, after := fetchOverlap(p, low, false), fetchOverlap(p, low, true)
		t.Logf("%d micro-batches: %d copy-stream waits on %d compute events; the fetches may overlap %d compute ops (%d waiting for all compute before each fetch)",
			micro, waits, low.ComputeEvents, after, before)
		if after <= before {
			t.Errorf("%d micro-batches: the fetches may overlap %d compute ops, %d when they wait for everything before them", micro, after, before)
		}
		if micro != 1 {
			continue
		}
		at := strings.Index(host, "static int moec_run_ops(")
		end := at + strings.Index(host[at:], "\n}\n") + 3
		var kept []string
		for _, line := range strings.Split(host[at:end], "\n") {
			for _, mark := range []string{"// op ", "copy_stream", "cache_moved", "compute_at", "moec_host_", "sums", "static const long long", "moec_settle", "if (update)"} {
				if strings.Contains(line, mark) {
					kept = append(kept, line)
					break
				}
			}
		}
		golden.Archive(t, "testdata/cache_tiny.txtar", &txtar.Archive{
			Comment: []byte("The host program of hunyuan_tiny's dense stage cut to two layers under a 2 MiB unified cache in 64 KiB pages:\nmoec_run_ops' op headers and the lines of the cache's copies, events and host update.\nRegenerate with go test ./codegen/cudastep -run TestUnifiedCacheHostProgram -update.\n"),
			Files:   []txtar.File{{Name: HostName, Data: []byte(strings.Join(kept, "\n") + "\n")}},
		}, *update)
	}
}

// copyOrderErrors checks the copy stream's waits for the compute stream independently of
// copyWaits: following the host program's order (the compute stream's records after each
// op's launches, the copy stream's waits in order), every op that reads or writes device
// bytes a fetch overwrites, and every op that writes device bytes a write-back copies, must
// be an op the copy stream has waited for when the copy is queued.
func copyOrderErrors(p *step.Program, low *Lowered) []string {
	var errs []string
	recorded := map[int]int{} // compute event → the op it was last recorded after
	covered := -1             // the copy stream follows every compute op up to this one
	overlap := func(a, b int) bool {
		x, y := p.Buffers[a], p.Buffers[b]
		return x.Tier == step.Device && y.Tier == step.Device && x.Offset < y.Offset+y.Bytes() && y.Offset < x.Offset+x.Bytes()
	}
	for i := range p.Ops {
		ol := low.Ops[i]
		c := ol.Cache
		if c != nil && (c.Kind == step.OpCacheFetch || c.Kind == step.OpCacheWriteback) {
			if c.After >= 0 {
				if at, ok := recorded[c.After]; ok {
					covered = max(covered, at)
				}
			}
			for k := range i {
				if low.Ops[k].Cache != nil {
					continue
				}
				var touched, dst []int
				if c.Kind == step.OpCacheFetch {
					touched, dst = append(append([]int(nil), p.Ops[k].In...), p.Ops[k].Out...), p.Ops[i].Out
				} else {
					touched, dst = slices.Clone(p.Ops[k].Out), p.Ops[i].In
				}
				touched = append(touched, launchBuffers(low.Ops[k])...) // read or written
				for _, a := range touched {
					for _, b := range dst {
						if overlap(a, b) && k > covered {
							errs = append(errs, fmt.Sprintf("op %d (%s) copies %s over or from bytes of %s, which op %d (%s) uses, before the copy stream waited for it",
								i, p.Ops[i].Kind, p.Buffers[b].Name, p.Buffers[a].Name, k, p.Ops[k].Kind))
						}
					}
				}
			}
		}
		for _, e := range ol.CacheRecord {
			recorded[e] = i
		}
	}
	return errs
}

// fetchOverlap counts the compute ops each fetch's copies may run beside, summed over the
// fetches: those after the last op the copy stream waited for when the fetch is queued and
// before the first op that waits for the fetch. With waits false the copy stream waits for
// every op before each copy (the lowering before copyWaits).
func fetchOverlap(p *step.Program, low *Lowered, waits bool) int {
	recorded := map[int]int{}
	covered, total := -1, 0
	for i := range p.Ops {
		ol := low.Ops[i]
		c := ol.Cache
		if c != nil && (c.Kind == step.OpCacheFetch || c.Kind == step.OpCacheWriteback) {
			switch {
			case !waits:
				covered = i - 1
			case c.After >= 0:
				covered = max(covered, recorded[c.After])
			}
			if c.Kind == step.OpCacheFetch {
				for k := covered + 1; k < len(p.Ops) && !slices.Contains(low.Ops[k].CacheWaits, c.Event); k++ {
					if k != i && low.Ops[k].Cache == nil && len(low.Ops[k].Launches) > 0 {
						total++
					}
				}
			}
		}
		for _, e := range ol.CacheRecord {
			recorded[e] = i
		}
	}
	return total
}

// TestUnifiedCacheUpdatesOnce: an MoE stage has two parameter groups and an adamw op for
// each; under the unified cache the host program updates every tensor exactly once (the
// first host adamw is the step's one optimizer step over every group, as runtime/exec
// runs it), never twice.
func TestUnifiedCacheUpdatesOnce(t *testing.T) {
	l := step.Layout{DP: 1, EP: 1, TP: 1, PP: 1, Cache: step.Cache{Budget: 6 << 20, Page: 64 << 10}}
	p, low, err := lowerOne(t, tinyStage(t, 2, 4), step.Batch{MicroBatch: 1, SeqLen: 8, Micro: 1}, l)
	if err != nil {
		t.Fatal(err)
	}
	adamw, evictions := 0, 0
	for _, op := range p.Ops {
		switch op.Kind {
		case step.OpAdamW:
			adamw++
		case step.OpCacheEvict:
			evictions++
		}
	}
	if adamw < 2 || evictions == 0 {
		t.Fatalf("%d adamw ops and %d evictions: want an MoE stage's two groups under an evicting cache", adamw, evictions)
	}
	host, err := HostProgram(low)
	if err != nil {
		t.Fatal(err)
	}
	updated := map[string]int{}
	for _, line := range strings.Split(host, "\n") {
		if at := strings.Index(line, "moec_host_adamw((float *)(s->host + "); at >= 0 {
			updated[strings.SplitN(line[at:], ")", 3)[1]]++
		}
	}
	grads := 0
	for _, b := range p.Buffers {
		if b.Kind == step.KindGrad && b.Param != nil {
			grads++
		}
	}
	if len(updated) != grads {
		t.Errorf("the host program updates %d tensors, the program has %d gradients", len(updated), grads)
	}
	for w, n := range updated {
		if n != 1 {
			t.Errorf("the weights at %s are updated %d times a step", w, n)
		}
	}
}

// TestCacheDataParallelStagedReduction: on two data-parallel ranks under the unified
// cache the gradients' all_reduce runs over the host tier through the staging workspace
// (collective_cache.go): every byte of every host gradient the op reduces goes through
// exactly one chunk, in and back out, each chunk packs at most a page and its call sums
// what it packed; the staging workspace holds the largest chunk; the host program waits
// for the copy stream before it queues the chunks (moec_staged waits for the
// communication stream after them), and each rank's host grad_norm counts only its part
// of the flat vector: the two ranks' parts together are every gradient once.
func TestCacheDataParallelStagedReduction(t *testing.T) {
	m := tinyStage(t, 2, 1)
	l := step.Layout{DP: 2, EP: 1, TP: 1, PP: 1, Cache: tinyCache}
	counted := int64(0)
	lows := lowerAll(t, m, step.Batch{MicroBatch: 1, SeqLen: 8, Micro: 2}, l)
	for r, low := range lows {
		p := low.Program
		host, err := HostProgram(low)
		if err != nil {
			t.Fatal(err)
		}
		staged, grads := 0, int64(0)
		for i := range p.Ops {
			op, ol := &p.Ops[i], low.Ops[i]
			if op.Kind == step.OpGradNorm {
				if ol.Cache == nil || !ol.PublishNorm {
					t.Fatalf("rank %d: the grad_norm is not the host tier's, or is not published for the all_reduce", r)
				}
				for _, h := range ol.Cache.Norm {
					counted += h.N
				}
			}
			if op.Kind != step.OpAllReduce || p.Buffers[op.In[0]].Tier != step.Host {
				continue
			}
			staged++
			st := ol.Collective.Staged
			if st == nil || len(ol.Collective.Calls) > 0 {
				t.Fatalf("rank %d: op %d's all_reduce over host gradients is not staged", r, i)
			}
			seen := map[int64]int{} // host byte offset (4-byte granules) → times staged
			for k, ch := range st.Chunks {
				var packed int64
				for _, s := range ch.Segs {
					if !s.In || !s.Out || s.Stage != packed {
						t.Errorf("rank %d: chunk %d: segment %+v is not packed in order, in and out", r, k, s)
					}
					packed += s.Bytes
					for b := s.Host; b < s.Host+s.Bytes; b += 4 {
						seen[b]++
					}
				}
				if ch.Func != "ncclAllReduce" || 4*ch.Count != packed || packed > tinyCache.Page || packed > st.Bytes {
					t.Errorf("rank %d: chunk %d: %s of %d floats over %d packed bytes (page %d, staging %d)", r, k, ch.Func, ch.Count, packed, tinyCache.Page, st.Bytes)
				}
			}
			for _, b := range op.In {
				buf := p.Buffers[b]
				grads += buf.Bytes()
				for at := buf.Offset; at < buf.Offset+buf.Bytes(); at += 4 {
					if seen[at] != 1 {
						t.Fatalf("rank %d: byte %d of %s goes through %d chunks", r, at-buf.Offset, buf.Name, seen[at])
					}
				}
			}
			if int64(len(seen))*4 != grads {
				t.Errorf("rank %d: %d bytes staged, the gradients hold %d", r, len(seen)*4, grads)
			}
		}
		if staged != 1 || low.CommStage < tinyCache.Page || low.CommStage > tinyCache.Page {
			t.Errorf("rank %d: %d staged all_reduces, a staging workspace of %d bytes (a page is %d)", r, staged, low.CommStage, tinyCache.Page)
		}
		sync := "MOEC_CU(s, s->cu.cuStreamSynchronize(s->copy_stream), \"op "
		at := strings.Index(host, "if (!moec_staged(s, moec_stage_chunks_0, ")
		if at < 0 || !strings.Contains(host[max(at-200, 0):at], sync) || !strings.Contains(host, "MOEC_CU(s, s->cu.cuStreamSynchronize(s->comm_stream), what);\n  return 1;") {
			t.Errorf("rank %d: the host program does not wait for the write-backs before the staged all_reduce, or for it after", r)
		}
	}
	var all int64
	for _, b := range lows[0].Program.Buffers {
		if b.Kind == step.KindGrad && b.Tier == step.Host {
			all += b.Elements()
		}
	}
	if counted != all {
		t.Errorf("the ranks' grad_norms count %d values, the gradients hold %d", counted, all)
	}
}

// TestCacheSubsumesOffload: the offloaded optimizer beside the unified cache lowers as the
// cache alone (compiler/step drops it: the cache keeps every state in the host tier), on
// one rank and on two data-parallel ranks: the same host program.
func TestCacheSubsumesOffload(t *testing.T) {
	m := tinyStage(t, 2, 1)
	for _, dp := range []int{1, 2} {
		var hosts []string
		for _, offload := range []bool{false, true} {
			l := step.Layout{DP: dp, EP: 1, TP: 1, PP: 1, OffloadOpt: offload, Cache: tinyCache}
			_, low, err := lowerOne(t, m, step.Batch{MicroBatch: 1, SeqLen: 8, Micro: 1}, l)
			if err != nil {
				t.Fatalf("dp %d, offload %v: %v", dp, offload, err)
			}
			host, err := HostProgram(low)
			if err != nil {
				t.Fatal(err)
			}
			hosts = append(hosts, host)
		}
		if hosts[0] != hosts[1] {
			t.Errorf("dp %d: the offloaded optimizer changes the unified cache's host program", dp)
		}
	}
}

// TestCacheZeROStagedShards: on two data-parallel ranks under the unified cache with ZeRO
// 1, 2 and 3, the collectives over the host tier go through the staging workspace
// (collective_cache.go) a part of every rank's shard at a time, and each host byte the
// right way exactly once: ZeRO 2's reduce_scatter copies in every byte of every gradient
// and copies back the rank's gradient shard up to the flat vector's end; the all_gather of
// the updated shards copies in the rank's own part of every weight and back every other
// rank's part; ZeRO 1's all_reduce in and back every gradient byte. No chunk needs more
// than a page of staging, and the host update runs on the rank's shard only. Under ZeRO 3
// each fetch (the all_gather from the host shards into the device copies) copies exactly
// the rank's own parts of the unit's tensors from its host shard into their device copies
// on the communication stream, before the calls, sends those device bytes and receives
// every other part.
func TestCacheZeROStagedShards(t *testing.T) {
	m := tinyStage(t, 2, 1)
	for _, zero := range []int{1, 2, 3} {
		l := step.Layout{DP: 2, EP: 1, TP: 1, PP: 1, ZeRO: zero, Cache: tinyCache}
		for r, low := range lowerAll(t, m, step.Batch{MicroBatch: 1, SeqLen: 8, Micro: 1}, l) {
			p := low.Program
			host, err := HostProgram(low)
			if err != nil {
				t.Fatal(err)
			}
			g := p.Groups[0]
			kinds := map[step.OpKind]int{}
			fills := 0
			for i := range p.Ops {
				op, ol := &p.Ops[i], low.Ops[i]
				if op.CacheFill {
					fills++
					checkCacheFill(t, p, i, ol.Collective, host)
				}
				if op.Kind == step.OpAdamW && ol.Cache != nil {
					var n int64
					for _, u := range ol.Cache.Update {
						n += u.N
					}
					if want := min(g.Shard, g.Elements-int64(g.Index)*g.Shard); n != want {
						t.Errorf("zero %d, rank %d: the host update covers %d values, the rank's shard %d", zero, r, n, want)
					}
				}
				if ol.Collective == nil || ol.Collective.Staged == nil {
					continue
				}
				kinds[op.Kind]++
				floats := p.Memory.Arena[step.Host] / 4 // the host arena, a float a slot
				in, back := make([]int, floats), make([]int, floats)
				st := ol.Collective.Staged
				chunks := st.Chunks
				if sh := st.Shards; sh != nil {
					chunks = sh.Segments()
					if len(st.Chunks) > 0 || int64(len(chunks)) != (sh.Shard+sh.Part-1)/sh.Part {
						t.Errorf("zero %d, rank %d, op %d: %d chunks written out, %d of %d values over a shard of %d", zero, r, i, len(st.Chunks), len(chunks), sh.Part, sh.Shard)
					}
				} else if op.Kind != step.OpAllReduce {
					t.Errorf("zero %d, rank %d, op %d: %s over the host tier is not staged by shards", zero, r, i, op.Kind)
				}
				for k, ch := range chunks {
					if need := 4 * ch.Count * 3; ch.Func != "ncclAllReduce" && (need > tinyCache.Page || need > ol.Collective.Staged.Bytes) {
						t.Errorf("zero %d, rank %d, op %d: chunk %d needs %d bytes of staging", zero, r, i, k, need)
					}
					for _, s := range ch.Segs {
						for f := s.Host / 4; f < (s.Host+s.Bytes)/4; f++ {
							if s.In {
								in[f]++
							}
							if s.Out {
								back[f]++
							}
						}
					}
				}
				// Each host float of the op's buffers: copied in, copied back.
				wantIn, wantBack := make([]bool, floats), make([]bool, floats)
				for _, x := range op.In {
					buf := p.Buffers[x]
					for e := int64(0); e < buf.Elements(); e++ {
						f := buf.Offset/4 + e
						own := buf.Flat+e >= int64(g.Index)*g.Shard && buf.Flat+e < int64(g.Index+1)*g.Shard
						switch op.Kind {
						case step.OpAllReduce:
							wantIn[f], wantBack[f] = true, true
						case step.OpReduceScatter:
							wantIn[f] = true
						case step.OpAllGather:
							wantIn[f], wantBack[f] = own, !own
						}
					}
				}
				if op.Kind == step.OpReduceScatter {
					out := p.Buffers[op.Out[0]]
					for e := int64(0); e < min(g.Shard, g.Elements-int64(g.Index)*g.Shard); e++ {
						wantBack[out.Offset/4+e] = true
					}
				}
				for f := range floats {
					if (in[f] == 1) != wantIn[f] || in[f] > 1 || (back[f] == 1) != wantBack[f] || back[f] > 1 {
						t.Fatalf("zero %d, rank %d, op %d (%s): host float %d copied in %d times (want %v), back %d times (want %v)",
							zero, r, i, op.Kind, f, in[f], wantIn[f], back[f], wantBack[f])
					}
				}
			}
			wantKinds := map[step.OpKind]int{step.OpAllReduce: 1, step.OpAllGather: 1}
			switch zero {
			case 2:
				wantKinds = map[step.OpKind]int{step.OpReduceScatter: 1, step.OpAllGather: 1}
			case 3:
				wantKinds = map[step.OpKind]int{step.OpReduceScatter: 1}
			}
			if !maps.Equal(kinds, wantKinds) {
				t.Errorf("zero %d, rank %d: staged %v, want %v", zero, r, kinds, wantKinds)
			}
			if (fills > 0) != (zero == 3) {
				t.Errorf("zero %d, rank %d: %d fetches from the host shards", zero, r, fills)
			}
		}
	}
}

// checkCacheFill holds ZeRO 3's fetch of op i under the unified cache (zero3.go): the
// rank's own part of each device copy copied from its host shard, the same device bytes
// sent to the other rank, the other parts received, each part once; the copies queued on
// the communication stream after its wait for the compute stream, before the calls.
func checkCacheFill(t *testing.T, p *step.Program, i int, c *Collective, host string) {
	t.Helper()
	op := &p.Ops[i]
	shard := p.Buffers[op.In[0]]
	g := p.Groups[0]
	S, own := g.Shard, int64(g.Index)
	if c == nil || c.Staged != nil || shard.Tier != step.Host {
		t.Fatalf("op %d: the fetch from the host shard %s is not lowered as a gather from it", i, shard.Name)
	}
	copied, sent, received := map[int64]int64{}, map[int64]int64{}, map[int64]int64{}
	for _, cp := range c.HostIn {
		copied[cp.Device] = cp.Host
	}
	for _, call := range c.Calls {
		switch call.Func {
		case "ncclSend":
			sent[call.Send] = call.Count
		case "ncclRecv":
			received[call.Recv] = call.Count
		}
	}
	for _, b := range op.Out {
		buf := p.Buffers[b]
		f, n := buf.Flat, buf.Elements()
		for owner := int64(0); owner < int64(g.Size); owner++ {
			lo, hi := max(f, owner*S), min(f+n, (owner+1)*S)
			if lo >= hi {
				continue
			}
			at := buf.Offset + 4*(lo-f)
			if owner == own {
				if h, ok := copied[at]; !ok || h != shard.Offset+4*(lo-owner*S) || sent[at] != hi-lo {
					t.Errorf("op %d: %s[%d:%d] is not copied from the host shard at %d and sent (copied from %d: %v, sent %d)",
						i, buf.Name, lo-f, hi-f, shard.Offset+4*(lo-owner*S), h, ok, sent[at])
				}
				delete(copied, at)
			} else if received[at] != hi-lo {
				t.Errorf("op %d: %s[%d:%d] from rank %d: received %d floats", i, buf.Name, lo-f, hi-f, owner, received[at])
			}
		}
	}
	if len(copied) > 0 {
		t.Errorf("op %d: %d copies from the host shard to no part of the rank's own", i, len(copied))
	}
	what := fmt.Sprintf("op %d (%s %s, layer %d, micro-batch %d)", i, op.Phase, op.Kind, op.Layer, op.Micro)
	wait := fmt.Sprintf("MOEC_CU(s, s->cu.cuStreamWaitEvent(s->comm_stream, s->ready, 0), %q);", what)
	at := strings.Index(host, wait)
	if at < 0 {
		t.Fatalf("op %d: the communication stream does not wait for the compute stream", i)
	}
	next := host[at+len(wait):]
	calls := strings.Index(next, "s->nccl.")
	if len(c.HostIn) > 0 && (!strings.HasPrefix(strings.TrimLeft(next, " \n"), "MOEC_CU(s, s->cu.cuMemcpyHtoDAsync(s->base + ") || calls < 0 ||
		strings.Count(next[:calls], ", s->comm_stream), ") != len(c.HostIn)) {
		t.Errorf("op %d: the copies from the host shard are not queued on the communication stream between its wait and the calls", i)
	}
}

// TestZeRO3GatherPairsInGroups: under ZeRO 3 on dp 4 × ep 2 the experts' weights are
// sharded over the expert-data-parallel pairs {0, 2} and {1, 3}, where a rank's place is
// not its global rank: every send of a gather (the device's, and the unified cache's fetch
// from the host shards) has its receive on the peer, with the same count, in the same
// order, and a rank never receives from itself.
func TestZeRO3GatherPairsInGroups(t *testing.T) {
	m := tinyStage(t, 2, 4)
	for _, cache := range []step.Cache{{}, {Budget: 6 << 20, Page: 64 << 10}} {
		lows := lowerAll(t, m, step.Batch{MicroBatch: 1, SeqLen: 8, Micro: 1}, step.Layout{DP: 4, EP: 2, TP: 1, PP: 1, ZeRO: 3, Cache: cache})
		type key struct{ op, from, to int }
		sends, recvs := map[key][]int64{}, map[key][]int64{}
		gathers := 0
		for r, low := range lows {
			p := low.Program
			for i := range p.Ops {
				op, c := &p.Ops[i], low.Ops[i].Collective
				if op.Kind != step.OpAllGather || c == nil || len(op.In) != 1 || p.Buffers[op.In[0]].Flat >= 0 {
					continue
				}
				gathers++
				for _, call := range c.Calls {
					peer := low.Comms[call.Comm].Ranks[call.Peer]
					switch call.Func {
					case "ncclSend":
						sends[key{i, r, peer}] = append(sends[key{i, r, peer}], call.Count)
					case "ncclRecv":
						if peer == r {
							t.Errorf("cache %v: rank %d, op %d receives from itself", cache.On(), r, i)
						}
						recvs[key{i, peer, r}] = append(recvs[key{i, peer, r}], call.Count)
					}
				}
			}
		}
		if gathers == 0 || len(sends) == 0 {
			t.Fatalf("cache %v: %d gathers, %d sending pairs", cache.On(), gathers, len(sends))
		}
		if !maps.EqualFunc(sends, recvs, slices.Equal[[]int64]) {
			t.Errorf("cache %v: the gathers' sends and receives do not pair up", cache.On())
		}
	}
}

// TestCacheCopiesWaitForCollectives: under the unified cache with tensor and sequence
// parallelism (the tokens gathered and scattered on the communication stream over arena
// bytes the memory plan reuses, the cache's slots among them), every compute-stream event
// a cache copy waits for is recorded after the compute stream waited for every collective
// queued before it: a copy follows the last op touching its bytes on the compute stream,
// and a collective up to that op may touch them on the communication stream. The host
// program is read line by line, apart from how copyWaits and the emitter place them.
func TestCacheCopiesWaitForCollectives(t *testing.T) {
	m := tinyStage(t, 2, 1)
	m.Attention.TalkingHeads = false
	l := step.Layout{DP: 1, EP: 1, TP: 2, PP: 1, SequenceParallel: true, Cache: tinyCache}
	for r, low := range lowerAll(t, m, step.Batch{MicroBatch: 1, SeqLen: 8, Micro: 1}, l) {
		host, err := HostProgram(low)
		if err != nil {
			t.Fatal(err)
		}
		pending := map[string]bool{} // done[k] recorded on the communication stream, not waited for
		records, afterCollective := 0, 0
		for _, line := range strings.Split(host, "\n") {
			line = strings.TrimSpace(line)
			if i := strings.Index(line, "cuEventRecord(s->done["); i >= 0 && strings.Contains(line, "s->comm_stream)") {
				pending[line[i+len("cuEventRecord(s->done["):][:strings.Index(line[i+len("cuEventRecord(s->done["):], "]")]] = true
			}
			if i := strings.Index(line, "cuStreamWaitEvent(s->stream, s->done["); i >= 0 {
				rest := line[i+len("cuStreamWaitEvent(s->stream, s->done["):]
				delete(pending, rest[:strings.Index(rest, "]")])
			}
			if strings.Contains(line, "cuEventRecord(s->compute_at[") {
				records++
				if len(pending) > 0 {
					t.Fatalf("rank %d: %s with collectives %v not waited for", r, line, slices.Sorted(maps.Keys(pending)))
				}
			}
			if strings.Contains(line, "the unified cache's copies wait for op ") {
				afterCollective++
			}
		}
		if records == 0 || afterCollective == 0 {
			t.Errorf("rank %d: %d compute events for the copies, %d waits for collectives before them: the layout should need them", r, records, afterCollective)
		}
	}
}
