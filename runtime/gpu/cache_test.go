package gpu

import (
	"context"
	"fmt"
	"math"
	"testing"

	"github.com/moec-dev/moec/codegen/cuda"
	"github.com/moec-dev/moec/codegen/cudastep"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/internal/longtest"
	moexec "github.com/moec-dev/moec/runtime/exec"
)

// TestEmulatedCacheMatchesExecutor: hunyuan_tiny's dense stage on one rank under a
// unified cache of 3 MiB in 64 KiB pages (small enough that the step evicts layers and
// fetches them again for the backward) and two micro-batches (the second's write-backs
// add into the host gradients on the CPU), three steps, and its four-expert stage under
// 6 MiB (two parameter groups), two steps, against runtime/exec: the losses,
// norms and weights as matchRanks holds them, then every persistent host buffer (the
// weights and the AdamW moments the CPU updated within 1e-6 relative, the last step's
// gradients within 1e-5: the device's reductions sum in another order than the CPU's, and
// the talking heads' 16-value gradients sum over every token) against the executor's host
// tier. The streams run as late as they may (the emulation's
// default): a kernel that read a copy before its fetch landed, a write-back that copied a
// gradient after a later op overwrote its bytes, or a host update before the write-backs,
// would read wrong values. The dense stage runs two steps more with the copy stream as
// early as it may (MOEC_EMU_STREAMS=eager-comm): a fetch that overwrote a slot before its
// previous occupant's last reader ran, or a write-back that copied a gradient before the
// op writing it ran, would read wrong values.
func TestEmulatedCacheMatchesExecutor(t *testing.T) {
	longtest.Require(t, "the steps' kernels compiled under the emulation, three steps of the dense stage and two of the MoE stage: about two minutes on a loaded machine; cudastep's TestUnifiedCacheHostProgram and TestUnifiedCacheUpdatesOnce check the host program by default")
	for _, c := range []struct {
		experts int
		budget  int64
		micro   int
		steps   int64
		streams string // MOEC_EMU_STREAMS
	}{
		{1, 3 << 20, 2, 3, ""},           // the dense stage: two micro-batches, the second's write-backs add
		{4, 6 << 20, 1, 2, ""},           // the four-expert stage: two groups, one optimizer step over both
		{1, 3 << 20, 2, 2, "eager-comm"}, // the dense stage's copies as early as their waits let them
	} {
		t.Run(fmt.Sprintf("%d experts %s", c.experts, c.streams), func(t *testing.T) {
			t.Setenv("MOEC_EMU_STREAMS", c.streams)
			matchCache(t, c.experts, step.Layout{DP: 1, EP: 1, TP: 1, PP: 1, Cache: step.Cache{Budget: c.budget, Page: 64 << 10}}, c.micro, c.steps)
		})
	}
}

// matchCache is matchRanks of hunyuan_tiny's stage with experts experts at layout l (under
// a unified cache), then every persistent host buffer against the executor's host tier.
func matchCache(t *testing.T, experts int, l step.Layout, micro int, steps int64) {
	t.Helper()
	m, _ := hunyuanTiny(t, experts)
	matchCacheModel(t, m, l, micro, steps, 1e-6)
}

// matchCacheModel is matchCache of stage m (hunyuan_tiny's optimizer), the host weights
// and moments within tol relative.
func matchCacheModel(t *testing.T, m *program.Model, l step.Layout, micro int, steps int64, tol float64) {
	t.Helper()
	_, cfg := hunyuanTiny(t, 1)
	matchRanksThen(t, m, step.Batch{MicroBatch: 1, SeqLen: 16, Micro: micro}, l, cfg, steps, func(lc *moexec.Local, rs *Ranks) {
		p := lc.Progs[0]
		evictions := 0
		for _, op := range p.Ops {
			if op.Kind == step.OpCacheEvict {
				evictions++
			}
		}
		if evictions == 0 {
			t.Fatal("the program evicts nothing: the budget does not exercise the cache")
		}
		worst, worstName, host := 0.0, "", 0
		for r, s := range rs.Sessions {
			for i, b := range s.Buffers() {
				if b.Tier != step.Host || !b.Kind.Persistent() {
					continue
				}
				host++
				want := lc.Ranks[r].Buffer(i)
				got := make([]float32, b.Elements())
				if err := s.DownloadBuffer(b, got); err != nil {
					t.Fatal(err)
				}
				e := relErr(got, want)
				tol := tol
				if b.Kind == step.KindGrad {
					tol = 1e-5
				} else if e > worst {
					worst, worstName = e, fmt.Sprintf("rank %d's %s", r, b.Name)
				}
				if e > tol || math.IsNaN(e) {
					t.Errorf("rank %d: host buffer %s after the updates: relative error %.2g", r, b.Name, e)
				}
			}
		}
		if host == 0 {
			t.Fatal("no buffer in host memory: the layout does not run the cache")
		}
		t.Logf("%d evictions a step; %d host buffers; largest relative error of a weight or moment %.2g (%s)", evictions, host, worst, worstName)
	})
}

// TestEmulatedCacheDataParallelMatchesExecutor: hunyuan_tiny's dense stage on two
// data-parallel ranks under the unified cache (3 MiB in 64 KiB pages), two steps, against
// runtime/exec: the gradients' all_reduce runs over the host tier, staged through the
// device in chunks of a page (codegen/cudastep's collective_cache.go), each rank's host
// grad_norm counts its part of the flat vector, and the host update reads the reduced
// gradients. The streams run as late as they may (the emulation's default): a staged copy
// that did not wait for the write-backs would reduce gradients not yet written back, and
// a host update that did not wait for the copies back would read the unreduced ones (the
// test fails without either wait). Under MOEC_LONG_EMULATION the same with two
// micro-batches (the second's write-backs add into the host gradients on the CPU before
// the staging), with the communication and copy streams as early as their waits let them.
func TestEmulatedCacheDataParallelMatchesExecutor(t *testing.T) {
	l := step.Layout{DP: 2, EP: 1, TP: 1, PP: 1, Cache: step.Cache{Budget: 3 << 20, Page: 64 << 10}}
	t.Run("one micro-batch", func(t *testing.T) {
		t.Setenv("MOEC_EMU_STREAMS", "")
		matchCache(t, 1, l, 1, 2)
	})
	t.Run("two micro-batches eager-comm", func(t *testing.T) {
		longtest.Require(t, "two ranks' generated steps compiled again: most of a minute on a loaded machine")
		t.Setenv("MOEC_EMU_STREAMS", "eager-comm")
		matchCache(t, 1, l, 2, 3)
	})
}

// TestEmulatedCacheZeROMatchesExecutor: the same two data-parallel ranks under the
// unified cache with ZeRO 1 (the gradients all-reduced over the host tier, each rank
// updating its shard of the flat vector on the CPU, then the updated shards all-gathered
// into the host weights), ZeRO 2 (the host gradients reduce-scattered into the rank's
// host gradient shard), both staged through the device in chunks of each rank's shard
// (codegen/cudastep's collective_cache.go), and ZeRO 3 (the weights' shards in host
// memory too: each fetch gathers a unit's tensors from the ranks' host shards into the
// device copies, zero3.go), two steps against runtime/exec: the losses, norms, weights
// and every host buffer (the moments', gradients' and weights' shards included).
func TestEmulatedCacheZeROMatchesExecutor(t *testing.T) {
	for _, zero := range []int{1, 2, 3} {
		t.Run(fmt.Sprintf("zero %d", zero), func(t *testing.T) {
			longtest.Require(t, "two ranks' generated steps compiled: fifteen to twenty seconds a case on a loaded machine; TestCacheZeROStagedShards (codegen/cudastep) checks the staging and ZeRO 3's fetches by default")
			l := step.Layout{DP: 2, EP: 1, TP: 1, PP: 1, ZeRO: zero, Cache: step.Cache{Budget: 3 << 20, Page: 64 << 10}}
			matchCache(t, 1, l, 1, 2)
		})
	}
}

// TestEmulatedCacheExpertParallelMatchesExecutor: hunyuan_tiny's four-expert stage under
// the unified cache (6 MiB in 64 KiB pages) with expert parallelism, two steps against
// runtime/exec: dp 2 × ep 2 (the permuted tokens exchanged on the device, the dense
// gradients' all_reduce over the host tier staged), dp 4 × ep 2 under ZeRO 2 (the dense
// group's reduce_scatter over four ranks, the experts' over the expert-data-parallel
// pairs {0, 2} and {1, 3}, each on its communicator, staged) and under ZeRO 3 (the
// fetches gather the experts from the pairs' host shards, where a rank's place is not its
// global rank).
func TestEmulatedCacheExpertParallelMatchesExecutor(t *testing.T) {
	longtest.Require(t, "two and four ranks' generated steps compiled: about a minute and a half in all on a loaded machine; TestZeRO3GatherPairsInGroups (codegen/cudastep) checks the expert pairs' gathers by default")
	for _, l := range []step.Layout{
		{DP: 2, EP: 2, TP: 1, PP: 1},
		{DP: 4, EP: 2, TP: 1, PP: 1, ZeRO: 2},
		{DP: 4, EP: 2, TP: 1, PP: 1, ZeRO: 3},
	} {
		l.Cache = step.Cache{Budget: 6 << 20, Page: 64 << 10}
		t.Run(fmt.Sprintf("dp %d × ep %d zero %d", l.DP, l.EP, l.ZeRO), func(t *testing.T) {
			matchCache(t, 4, l, 1, 2)
		})
	}
}

// TestEmulatedCacheTensorPipelineMatchesExecutor: hunyuan_tiny's dense stage (without
// talking heads, which tp cannot split) under the unified cache (3 MiB in 64 KiB pages)
// with tensor, sequence and pipeline parallelism, two steps against runtime/exec: tp 2
// (the products' all-reduces on the device, the replicated norms' gradients counted
// once), tp 2 with sequence parallelism (the tokens gathered and scattered on the
// communication stream over arena bytes the cache's slots share: the copies wait for
// those collectives; the norms' gradients all-reduced over tp on the host tier, staged),
// pp 2, dp 2 × tp 2 under ZeRO 1 and dp 2 × pp 2 under ZeRO 3. The pipeline's host
// weights and moments are held within 1e-5 relative, as matchRanks holds the weights:
// pp 2 differs from the executor by 2.5e-6 in L0.o after the updates, with or without
// the cache, and so does one rank of this model, by the same 2.5e-6 in the same
// element. The pipeline adds nothing (TestEmulatedPipelineGradientsMatchOneRank: its
// gradients are the one rank's bit for bit); the SIMT GEMM sums in another order than
// the executor's BLAS (about 7e-7 relative in every gradient of step 0), and one element
// of dL0.o, a cancellation near zero (the executor's 3.3e-8, the emulation's −5.8e-10),
// takes Adam's first step, lr·g/(|g|+ε), the other way. The gradient norm of the second
// step inherits that (11.3697504 against 11.3697484; one rank 11.3697501 against
// 11.3697489): under pp both sides round each stage's sum of squares to float32 and add
// the two in float32, the same rounding of values that differ by the one rank's gap. tp 2,
// whose products are cut otherwise, lands that element alike (L0.o within 2e-8), and
// 1e-6 holds the layouts without pp.
func TestEmulatedCacheTensorPipelineMatchesExecutor(t *testing.T) {
	longtest.Require(t, "two and four ranks' generated steps compiled, five layouts: about a minute and a half on a loaded machine; TestCacheCopiesWaitForCollectives (codegen/cudastep) checks the copies' waits by default")
	m, _ := hunyuanTiny(t, 1)
	m.Attention.TalkingHeads = false
	for _, l := range []step.Layout{
		{DP: 1, EP: 1, TP: 2, PP: 1},
		{DP: 1, EP: 1, TP: 2, PP: 1, SequenceParallel: true},
		{DP: 1, EP: 1, TP: 1, PP: 2},
		{DP: 2, EP: 1, TP: 2, PP: 1, ZeRO: 1},
		{DP: 2, EP: 1, TP: 1, PP: 2, ZeRO: 3},
	} {
		l.Cache = step.Cache{Budget: 3 << 20, Page: 64 << 10}
		tol := 1e-6
		if l.PP > 1 {
			tol = 1e-5
		}
		t.Run(fmt.Sprintf("dp %d × tp %d × pp %d sp %v zero %d", l.DP, l.TP, l.PP, l.SequenceParallel, l.ZeRO), func(t *testing.T) {
			matchCacheModel(t, m, l, 1, 2, tol)
		})
	}
}

// TestDeviceBuildCacheRanks compiles rank 0's host program of the unified cache on two
// data-parallel ranks for a GPU, warnings as errors, under ZeRO 0 (the gradients'
// all_reduce staged from a table of chunks), ZeRO 1 (that and the updated shards'
// all_gather) and ZeRO 2 (the sharded collectives alone, their segments computed as the
// program runs): each program uses some of the staging helpers, none all of them in
// every case.
func TestDeviceBuildCacheRanks(t *testing.T) {
	needClang(t)
	m, _ := hunyuanTiny(t, 1)
	for _, zero := range []int{0, 1, 2} {
		l := step.Layout{DP: 2, EP: 1, TP: 1, PP: 1, ZeRO: zero, Cache: step.Cache{Budget: 3 << 20, Page: 64 << 10}}
		progs, err := step.Lower(m, step.Batch{MicroBatch: 1, SeqLen: 16, Micro: 1}, l)
		if err != nil {
			t.Fatal(err)
		}
		low, err := cudastep.Lower(progs[0], m)
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		if err := writeSources(low, dir); err != nil {
			t.Fatal(err)
		}
		if _, err := compileHost(context.Background(), dir, cuda.FindClang(), Device); err != nil {
			t.Fatalf("zero %d: %v", zero, err)
		}
	}
}

// TestDeviceBuildCache compiles the host program of the unified cache for a GPU (the
// libcuda.so.1 filling of the driver table, warnings as errors): the host arena's entry
// points, which the Go side looks up when it opens such a program, and the cache's events.
func TestDeviceBuildCache(t *testing.T) {
	needClang(t)
	m, _ := hunyuanTiny(t, 1)
	progs, err := step.Lower(m, step.Batch{MicroBatch: 1, SeqLen: 16, Micro: 2}, step.Layout{DP: 1, EP: 1, TP: 1, PP: 1, Cache: step.Cache{Budget: 3 << 20, Page: 64 << 10}})
	if err != nil {
		t.Fatal(err)
	}
	low, err := cudastep.Lower(progs[0], m)
	if err != nil {
		t.Fatal(err)
	}
	if low.CacheEvents == 0 || low.CacheStage == 0 {
		t.Fatalf("%d cache events, %d staging bytes: the program should fetch, write back and add", low.CacheEvents, low.CacheStage)
	}
	deviceBuildHasHostFuncs(t, low)
}
