package gpu

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moec-dev/moec/codegen/cuda"
	"github.com/moec-dev/moec/codegen/cudastep"
	"github.com/moec-dev/moec/compiler/params"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/internal/longtest"
	moexec "github.com/moec-dev/moec/runtime/exec"
	"github.com/moec-dev/moec/runtime/nn"
	"github.com/moec-dev/moec/runtime/optim"
)

// matchRanks trains m at layout l for steps steps with cfg through runtime/exec's
// in-process ranks (Local) and through every rank's generated CUDA step under the
// emulation (OpenRanks: the collectives through the NCCL stand-in) from the same weights,
// and holds the losses and gradient norms (within 1e-5) and every rank's parameters after
// the updates (within 1e-5 relative) together.
func matchRanks(t *testing.T, m *program.Model, b step.Batch, l step.Layout, cfg optim.Config, steps int64) {
	t.Helper()
	matchRanksThen(t, m, b, l, cfg, steps, nil)
}

// matchRanksThen is matchRanks, then after (when not nil) with the executor's ranks and
// the sessions.
func matchRanksThen(t *testing.T, m *program.Model, b step.Batch, l step.Layout, cfg optim.Config, steps int64, after func(lc *moexec.Local, rs *Ranks)) {
	t.Helper()
	needClang(t)
	lc, err := moexec.NewLocal(m, b, l, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	net, err := nn.New(m, 7)
	if err != nil {
		t.Fatal(err)
	}
	whole := map[params.ID][]float32{}
	shapes := map[params.ID][]int{}
	for _, w := range net.Params() {
		whole[w.ID], shapes[w.ID] = w.W, w.Shape
	}
	for _, ex := range lc.Ranks {
		if err := ex.LoadParams(func(id params.ID) ([]float32, []int) { return whole[id], shapes[id] }); err != nil {
			t.Fatal(err)
		}
	}
	if err := lc.SetOptimizer(cfg); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	rs, err := OpenRanks(context.Background(), lc.Progs, m, Options{Mode: Emulated, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	t.Logf("%d ranks generated, compiled and joined in %v", len(rs.Sessions), time.Since(start))
	for r, s := range rs.Sessions {
		ex := lc.Ranks[r]
		get := func(id params.ID) []float32 {
			if w := ex.Param(id); w != nil {
				return w
			}
			return whole[id] // ZeRO 3: the rank holds no whole tensor, its shard is cut from it
		}
		if err := s.LoadParams(get); err != nil {
			t.Fatal(err)
		}
		s.SetOptimizer(cfg)
	}
	d, _ := m.Dims()
	for stepN := int64(0); stepN < steps; stepN++ {
		micro := make([][]int32, b.Micro*l.DP)
		for i := range micro {
			micro[i] = randomTokens(b.MicroBatch, b.SeqLen, d.V, 100*stepN+int64(i))
		}
		want, err := lc.Step(micro, moexec.Options{Seed: 5, Step: stepN})
		if err != nil {
			t.Fatal(err)
		}
		got, err := rs.Step(micro, StepOptions{Seed: 5, Step: stepN})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("step %d: loss %.7f (executor %.7f, relative difference %.2g), gradient norm %.7f (%.7f)", stepN, got.Loss, want.Loss,
			math.Abs(got.Loss-want.Loss)/math.Abs(want.Loss), got.GradNorm, want.GradNorm)
		if math.Abs(got.Loss-want.Loss) > 1e-5*max(1, want.Loss) {
			t.Errorf("step %d: loss %.8f, the executor's %.8f", stepN, got.Loss, want.Loss)
		}
		if math.Abs(got.GradNorm-want.GradNorm) > 1e-5*max(1, want.GradNorm) {
			t.Errorf("step %d: gradient norm %.8f, the executor's %.8f", stepN, got.GradNorm, want.GradNorm)
		}
	}
	worst, worstID := 0.0, ""
	for r, s := range rs.Sessions {
		if e, id := paramsAgree(t, fmt.Sprintf("rank %d: ", r), whole, 1e-5, lc.Ranks[r].Param, s.Param); e > worst {
			worst, worstID = e, id
		}
	}
	// ZeRO 3: the weights live in each rank's flat shard of its group, no whole tensor.
	for r, s := range rs.Sessions {
		for i, b := range s.Buffers() {
			if b.Kind != step.KindParam || b.Param != nil {
				continue
			}
			want := lc.Ranks[r].Buffer(i)
			if int64(len(want)) != b.Elements() {
				t.Fatalf("rank %d: the executor holds %d values of %s, the session %d", r, len(want), b.Name, b.Elements())
			}
			got := make([]float32, b.Elements())
			if err := s.DownloadBuffer(b, got); err != nil { // the unified cache's: in host memory
				t.Fatal(err)
			}
			e := relErr(got, want)
			if e > worst {
				worst, worstID = e, fmt.Sprintf("rank %d's %s", r, b.Name)
			}
			if e > 1e-5 {
				t.Errorf("rank %d: weight shard %s after the updates: relative error %.2g", r, b.Name, e)
			}
		}
	}
	t.Logf("largest relative error of a parameter after the updates: %.2g (%s)", worst, worstID)
	if after != nil {
		after(lc, rs)
	}
}

// TestEmulatedDataParallelMatchesExecutor: hunyuan_tiny's dense stage on two data-parallel
// ranks: the gradients all-reduced (ncclAllReduce on the communication stream) and the
// global norm summed over the ranks' halves, as runtime/exec's in-process ranks do.
//
// The communication streams run their work as soon as it is queued
// (MOEC_EMU_STREAMS=eager-comm): an all_reduce that did not wait for the backward would
// sum gradients not yet computed. The expert-parallel test runs the default policy (every
// stream as late as it may), where a compute stream that did not wait for a collective
// would read its output before it is written.
func TestEmulatedDataParallelMatchesExecutor(t *testing.T) {
	t.Setenv("MOEC_EMU_STREAMS", "eager-comm")
	m, cfg := hunyuanTiny(t, 1)
	matchRanks(t, m, step.Batch{MicroBatch: 1, SeqLen: 16, Micro: 1}, step.Layout{DP: 2, EP: 1, TP: 1, PP: 1}, cfg, 2)
}

// TestEmulatedExpertParallelMatchesExecutor: hunyuan_tiny's four-expert stage on two
// expert-parallel ranks (two experts each): the permuted tokens exchanged (ncclSend and
// ncclRecv in one group, each expert's slots) towards the experts and back, forward and
// backward, and the dense gradients all-reduced.
func TestEmulatedExpertParallelMatchesExecutor(t *testing.T) {
	longtest.Require(t, "two ranks' generated steps compiled: most of a minute")
	m, cfg := hunyuanTiny(t, 4)
	matchRanks(t, m, step.Batch{MicroBatch: 1, SeqLen: 16, Micro: 1}, step.Layout{DP: 2, EP: 2, TP: 1, PP: 1}, cfg, 2)
}

// TestEmulatedZeROMatchesExecutor: two data-parallel ranks under ZeRO 1 (the gradients
// all-reduced, each rank updating its shard of the flat vector with its shard of the
// moments, then the shards exchanged in place: grouped ncclSend and ncclRecv) and ZeRO 2
// (the gradients packed into their flat vector and reduce-scattered into the rank's shard).
func TestEmulatedZeROMatchesExecutor(t *testing.T) {
	longtest.Require(t, "two ranks' generated steps compiled twice: over a minute")
	m, cfg := hunyuanTiny(t, 1)
	for _, zero := range []int{1, 2} {
		t.Run(fmt.Sprintf("zero %d", zero), func(t *testing.T) {
			matchRanks(t, m, step.Batch{MicroBatch: 1, SeqLen: 16, Micro: 1}, step.Layout{DP: 2, EP: 1, TP: 1, PP: 1, ZeRO: zero}, cfg, 2)
		})
	}
}

// TestEmulatedTensorParallelMatchesExecutor: hunyuan_tiny's dense stage (without talking
// heads, which tp cannot split) on two tensor-parallel ranks: the column- and row-parallel
// products' all-reduces forward and backward, the vocabulary-parallel embedding and
// cross-entropy (the row maxima and sums all-reduced over tp between its passes) and the
// global norm counting the replicated tensors once, as runtime/exec's ranks do.
func TestEmulatedTensorParallelMatchesExecutor(t *testing.T) {
	longtest.Require(t, "two ranks' generated steps compiled: over two minutes on a loaded machine; TestGroupCommunicators (codegen/cudastep) checks the lowering by default")
	m, cfg := hunyuanTiny(t, 1)
	m.Attention.TalkingHeads = false
	matchRanks(t, m, step.Batch{MicroBatch: 1, SeqLen: 16, Micro: 1}, step.Layout{DP: 1, EP: 1, TP: 2, PP: 1}, cfg, 2)
}

// TestEmulatedMoETensorParallelMatchesExecutor: hunyuan_tiny's four-expert stage (without
// talking heads) under tensor parallelism: the router, the routing and the dispatch
// replicated on the tp ranks, each expert's hidden width split over them (Megatron's expert
// tensor parallelism: the rank's rows of expert_in, columns of expert_down), the experts'
// outputs all-reduced over tp before the combine and the dispatched tokens' gradient
// before permute's backward, as runtime/exec's ranks do; on tp 2, on tp 2 with sequence
// parallelism (the experts read the tokens gathered over tp) and on dp 2 × ep 2 × tp 2
// (the tp sums on the exchanged slots, the exchange on the ep pairs).
func TestEmulatedMoETensorParallelMatchesExecutor(t *testing.T) {
	longtest.Require(t, "three layouts' generated steps compiled: about two minutes each, six and a half in all on a loaded machine; TestMoETensorParallelLowering (codegen/cudastep) checks the lowering by default")
	m, cfg := hunyuanTiny(t, 4)
	m.Attention.TalkingHeads = false
	for _, c := range []struct {
		name   string
		layout step.Layout
	}{
		{"tp 2", step.Layout{DP: 1, EP: 1, TP: 2, PP: 1}},
		{"tp 2 sp", step.Layout{DP: 1, EP: 1, TP: 2, PP: 1, SequenceParallel: true}},
		{"dp 2 × ep 2 × tp 2", step.Layout{DP: 2, EP: 2, TP: 2, PP: 1}},
	} {
		t.Run(c.name, func(t *testing.T) {
			matchRanks(t, m, step.Batch{MicroBatch: 1, SeqLen: 16, Micro: 1}, c.layout, cfg, 2)
		})
	}
}

// TestEmulatedSequenceParallelMatchesExecutor: the same two tensor-parallel ranks with
// sequence parallelism: the norms and residuals on each rank's half of the tokens, the
// all_gather along the tokens before the column-parallel products (ncclAllGather) and the
// reduce_scatter after the row-parallel ones (ncclReduceScatter), their transposes in the
// backward, and the norms' gradients summed over tp, as runtime/exec's ranks do.
func TestEmulatedSequenceParallelMatchesExecutor(t *testing.T) {
	longtest.Require(t, "two ranks' generated steps compiled: minutes on a loaded machine; TestSequenceParallelCollectives (codegen/cudastep) checks the lowering by default")
	m, cfg := hunyuanTiny(t, 1)
	m.Attention.TalkingHeads = false
	matchRanks(t, m, step.Batch{MicroBatch: 1, SeqLen: 16, Micro: 1}, step.Layout{DP: 1, EP: 1, TP: 2, PP: 1, SequenceParallel: true}, cfg, 2)
}

// TestEmulatedDataTensorParallelMatchesExecutor: dp 2 × tp 2 (four ranks): the tp
// all-reduces run on the communicators of the tp pairs {0, 1} and {2, 3}, the gradients'
// on those of the dp pairs {0, 2} and {1, 3}, none over every rank. Under ZeRO 1 the
// shards are exchanged within the dp pairs, each rank sending as its place in its pair.
func TestEmulatedDataTensorParallelMatchesExecutor(t *testing.T) {
	longtest.Require(t, "four ranks' generated steps compiled: about five minutes a case")
	m, cfg := hunyuanTiny(t, 1)
	m.Attention.TalkingHeads = false
	for _, zero := range []int{0, 1} {
		t.Run(fmt.Sprintf("zero %d", zero), func(t *testing.T) {
			matchRanks(t, m, step.Batch{MicroBatch: 1, SeqLen: 16, Micro: 1}, step.Layout{DP: 2, EP: 1, TP: 2, PP: 1, ZeRO: zero}, cfg, 2)
		})
	}
}

// TestEmulatedExpertDataParallelPairsMatchExecutor: dp 4 × ep 2 (four ranks): the slot
// exchange on the ep pairs {0, 1} and {2, 3}, the experts' gradients summed on the expert
// data-parallel pairs {0, 2} and {1, 3}, the dense gradients over all four: three
// communicators a rank, two of them over part of the ranks.
func TestEmulatedExpertDataParallelPairsMatchExecutor(t *testing.T) {
	longtest.Require(t, "four ranks' generated steps compiled: minutes")
	m, cfg := hunyuanTiny(t, 4)
	matchRanks(t, m, step.Batch{MicroBatch: 1, SeqLen: 16, Micro: 1}, step.Layout{DP: 4, EP: 2, TP: 1, PP: 1}, cfg, 2)
}

// TestDeviceBuildRanks compiles rank 0 of an expert-parallel layout for a GPU: the host
// program with its collectives (ncclAllReduce, grouped ncclSend and ncclRecv, the streams
// and events) and the libcuda.so.1 and libnccl.so.2 fillings of its tables, warnings as
// errors. Without NCCL, OpenRanks on GPUs says libnccl.so.2 is missing.
func TestDeviceBuildRanks(t *testing.T) {
	needClang(t)
	m, _ := hunyuanTiny(t, 4)
	progs, err := step.Lower(m, step.Batch{MicroBatch: 1, SeqLen: 16, Micro: 1}, step.Layout{DP: 2, EP: 2, TP: 1, PP: 1, ZeRO: 2})
	if err != nil {
		t.Fatal(err)
	}
	low, err := cudastep.Lower(progs[0], m)
	if err != nil {
		t.Fatal(err)
	}
	dir, clang := t.TempDir(), cuda.FindClang()
	if err := writeSources(low, dir); err != nil {
		t.Fatal(err)
	}
	if _, err := compileHost(context.Background(), dir, clang, Device); err != nil {
		t.Fatal(err)
	}
	host, err := os.ReadFile(filepath.Join(dir, cudastep.HostName))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ncclAllReduce(", "ncclSend(", "ncclRecv(", "ncclReduceScatter(", "ncclGroupStart()", "cuStreamWaitEvent(s->comm_stream"} {
		if !strings.Contains(string(host), want) {
			t.Errorf("the host program has no %s", want)
		}
	}
	if CheckNCCL() == nil {
		t.Skip("this machine has NCCL")
	}
	_, err = OpenRanks(context.Background(), progs, m, Options{Mode: Device, Dir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "libnccl.so.2") {
		t.Errorf("opening two ranks on GPUs without NCCL: %v", err)
	}
}

// TestLocalRank: under mpirun a process opens the device of its node-local rank (Open
// MPI's OMPI_COMM_WORLD_LOCAL_RANK), without it its world rank; a value that is not a
// rank is an error naming the variable.
func TestLocalRank(t *testing.T) {
	t.Setenv("OMPI_COMM_WORLD_LOCAL_RANK", "")
	if d, err := localRank(5); err != nil || d != 5 {
		t.Errorf("no local rank: device %d, %v; want the world rank 5", d, err)
	}
	t.Setenv("OMPI_COMM_WORLD_LOCAL_RANK", "1")
	if d, err := localRank(5); err != nil || d != 1 {
		t.Errorf("local rank 1 of world rank 5: device %d, %v; want 1", d, err)
	}
	t.Setenv("OMPI_COMM_WORLD_LOCAL_RANK", "x")
	if _, err := localRank(5); err == nil || !strings.Contains(err.Error(), "OMPI_COMM_WORLD_LOCAL_RANK") {
		t.Errorf("a local rank of x: %v, want an error naming the variable", err)
	}
}
