package gpu

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/moec-dev/moec/compiler/params"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/internal/longtest"
	"github.com/moec-dev/moec/runtime/nn"
)

// TestEmulatedPipelineMatchesExecutor: hunyuan_tiny's dense stage (its attention weights
// not shared, which pipeline stages refuse) on two pipeline stages, two micro-batches in
// 1F1B order: the activations sent forward and their gradients back (ncclSend and
// ncclRecv on the communication stream, each send grouped with the next micro-batch's
// receive), the gradient norm summed over the stages, as runtime/exec's in-process ranks
// do. The communication stream runs its work as soon as it is queued
// (MOEC_EMU_STREAMS=eager-comm): a send that did not wait for the compute stream would
// send activations not yet computed.
func TestEmulatedPipelineMatchesExecutor(t *testing.T) {
	longtest.Require(t, "two stages' generated steps compiled: a minute or two; codegen/cudastep's TestPipelineGroupsPair and TestPipelineStreamsAndEvents hold the lowering by default")
	t.Setenv("MOEC_EMU_STREAMS", "eager-comm")
	start := time.Now()
	m, cfg := hunyuanTiny(t, 1)
	m.Attention.ShareWeights = 1
	matchRanks(t, m, step.Batch{MicroBatch: 1, SeqLen: 16, Micro: 2}, step.Layout{DP: 1, EP: 1, TP: 1, PP: 2}, cfg, 2)
	t.Logf("%v in all", time.Since(start))
}

// TestEmulatedDataPipelineMatchesExecutor: dp 2 × pp 2, four ranks: each pipeline pair
// sends over its own communicator while the data-parallel pairs reduce the stages'
// gradients (in buckets during the last backward) over theirs.
func TestEmulatedDataPipelineMatchesExecutor(t *testing.T) {
	longtest.Require(t, "four ranks' generated steps compiled: several minutes; codegen/cudastep's TestPipelineBesideDataParallel holds the lowering by default")
	t.Setenv("MOEC_EMU_STREAMS", "eager-comm")
	start := time.Now()
	m, cfg := hunyuanTiny(t, 1)
	m.Attention.ShareWeights = 1
	matchRanks(t, m, step.Batch{MicroBatch: 1, SeqLen: 16, Micro: 2}, step.Layout{DP: 2, EP: 1, TP: 1, PP: 2}, cfg, 2)
	t.Logf("%v in all", time.Since(start))
}

// TestEmulatedFourStagesMatchesExecutor: hunyuan_tiny on four pipeline stages (one layer
// each, its attention weights not shared), four micro-batches in 1F1B order, so every
// stage has a steady state: the middle stages receive from the stage above and send to
// the one below, forward and backward, each pair of neighbours over its own communicator,
// the crossing send and receive of the steady state one group on both sides, the
// warm-up's and cool-down's messages alone; the losses and weights match runtime/exec's
// four ranks. The communication stream runs eagerly, as above.
func TestEmulatedFourStagesMatchesExecutor(t *testing.T) {
	longtest.Require(t, "four stages' generated steps compiled: several minutes; codegen/cudastep's TestPipelineStagesNeverWaitOnEachOther and TestFourStagesStreamsAndEvents hold the lowering by default")
	t.Setenv("MOEC_EMU_STREAMS", "eager-comm")
	start := time.Now()
	m, cfg := hunyuanTiny(t, 1)
	m.Attention.ShareWeights = 1
	matchRanks(t, m, step.Batch{MicroBatch: 1, SeqLen: 16, Micro: 4}, step.Layout{DP: 1, EP: 1, TP: 1, PP: 4}, cfg, 2)
	t.Logf("%v in all", time.Since(start))
}

// TestEmulatedZeRO3MatchesExecutor: two data-parallel ranks under ZeRO 3: each layer's
// weights gathered from the ranks' flat shards before its forward and again before its
// backward (grouped ncclSend and ncclRecv, the rank's own part copied on the compute
// stream), the gradients reduce-scattered into the rank's shard, the update on the weight
// shard; the shards after the updates match the executor's.
func TestEmulatedZeRO3MatchesExecutor(t *testing.T) {
	longtest.Require(t, "two ranks' generated steps compiled: a minute or two; codegen/cudastep's TestZeRO3GatherStreamsAndEvents holds the lowering by default")
	start := time.Now()
	m, cfg := hunyuanTiny(t, 1)
	matchRanks(t, m, step.Batch{MicroBatch: 1, SeqLen: 16, Micro: 1}, step.Layout{DP: 2, EP: 1, TP: 1, PP: 1, ZeRO: 3}, cfg, 2)
	t.Logf("%v in all", time.Since(start))
}

// TestEmulatedMoEPipelineMatchesExecutor: hunyuan_tiny's four-expert stage on two pipeline
// stages (layers 0–1 and 2–3, an MoE layer on each; its attention weights not shared,
// since compiler/step refuses attention-weight sharing under pipeline parallelism, and
// its router reading the hidden state: TestEmulatedTokenRoutingPipelineMatchesExecutor
// runs the token-embedding router table), two
// micro-batches in 1F1B order: each stage routes, dispatches, runs its experts and
// combines between the activations' receive and send (the gradients' on the way back),
// the crossing send and receive grouped; the balance and z-loss terms and dropped
// assignments summed over the stages as runtime/exec's ranks sum them. The communication
// stream runs eagerly, as above.
func TestEmulatedMoEPipelineMatchesExecutor(t *testing.T) {
	longtest.Require(t, "two stages' generated steps compiled: a minute or two; codegen/cudastep's TestPipelineMoELowering holds the lowering by default")
	matchMoEPipeline(t, program.RouteHidden, 1, 2)
}

// TestEmulatedTokenRoutingPipelineMatchesExecutor: hunyuan_tiny's four-expert stage with
// its token-embedding router on two pipeline stages (attention weights not shared): each
// stage holds a copy of the router table and looks up its rows from the micro-batch's
// token ids, the copies' gradients are summed with ncclAllReduce over the router group
// before the update, and the global norm counts the table on the first stage only, as
// runtime/exec's ranks do (which hold one rank: runtime/exec's TestGapLayoutsTrainAlike).
func TestEmulatedTokenRoutingPipelineMatchesExecutor(t *testing.T) {
	longtest.Require(t, "two stages' generated steps compiled: a minute or two; codegen/cudastep's TestPipelineTokenRoutingLowering holds the lowering by default")
	matchMoEPipeline(t, program.RouteTokenEmbedding, 1, 2)
}

// TestEmulatedSharedWeightsPipelineMatchesExecutor: hunyuan_tiny's four-expert stage with
// attention-weight sharing (p = 0.5) and its token-embedding router on two pipeline
// stages, two micro-batches: the first stage sends its last layer's attention weights
// right after the activations and receives their gradient right after the activations',
// the crossing sends and receives one NCCL group, and the second stage's first layer
// reuses them on the same dice as the executor's ranks (which hold one rank:
// runtime/exec's TestGapLayoutsTrainAlike).
func TestEmulatedSharedWeightsPipelineMatchesExecutor(t *testing.T) {
	longtest.Require(t, "two stages' generated steps compiled: a minute or two; codegen/cudastep's TestPipelineSharedWeightsLowering holds the lowering by default")
	matchMoEPipeline(t, program.RouteTokenEmbedding, 0.5, 3)
}

// matchMoEPipeline runs hunyuan_tiny's four-expert stage with router and attention-weight
// sharing share on two pipeline stages (two micro-batches, the copy and communication
// streams as early as their waits let them) for steps steps against runtime/exec's ranks.
func matchMoEPipeline(t *testing.T, router program.RouterInput, share float64, steps int64) {
	t.Helper()
	t.Setenv("MOEC_EMU_STREAMS", "eager-comm")
	start := time.Now()
	m, cfg := hunyuanTiny(t, 4)
	moe := *m.MoE
	moe.Router = router
	m.MoE = &moe
	m.Attention.ShareWeights = share
	matchRanks(t, m, step.Batch{MicroBatch: 1, SeqLen: 16, Micro: 2}, step.Layout{DP: 1, EP: 1, TP: 1, PP: 2}, cfg, steps)
	t.Logf("%v in all", time.Since(start))
}

// TestEmulatedPipelineGradientsMatchOneRank: hunyuan_tiny's dense stage (attention weights
// shared with p = 0.5, as the unified cache's pipeline comparison runs it) on two pipeline
// stages and on one rank, three micro-batches, one step through the generated CUDA steps:
// every gradient of the two stages is bit for bit the one rank's. The pipeline adds no
// arithmetic of its own: the activations and their gradients cross between the stages as
// they are, and each stage sums its micro-batches' gradients in the one rank's order. So
// the pipeline's gap to runtime/exec (TestEmulatedCacheTensorPipelineMatchesExecutor's
// L0.o, 2.5e-6 relative after the updates) is the one rank's, which has it too: the SIMT
// GEMM's sums run in another order than the executor's BLAS (about 7e-7 relative in every
// gradient), and one element of dL0.o, a cancellation near zero (the executor's 3.3e-8,
// the emulation's −5.8e-10), takes Adam's first step, lr·g/(|g|+ε), the other way.
func TestEmulatedPipelineGradientsMatchOneRank(t *testing.T) {
	longtest.Require(t, "three ranks' generated steps compiled and run: about fifteen seconds on a loaded machine; TestPipelineGroupsPair (codegen/cudastep) holds the lowering by default")
	needClang(t)
	t.Setenv("MOEC_EMU_STREAMS", "eager-comm")
	m, cfg := hunyuanTiny(t, 1)
	net, err := nn.New(m, 7)
	if err != nil {
		t.Fatal(err)
	}
	whole := map[params.ID][]float32{}
	for _, w := range net.Params() {
		whole[w.ID] = w.W
	}
	b := step.Batch{MicroBatch: 1, SeqLen: 16, Micro: 3} // three: a sum of two is the same either way round
	d, _ := m.Dims()
	micro := make([][]int32, b.Micro)
	for i := range micro {
		micro[i] = randomTokens(b.MicroBatch, b.SeqLen, d.V, int64(i))
	}
	// grads runs one step at layout l and returns every rank's gradients by name.
	grads := func(l step.Layout) (map[string][]float32, float64) {
		progs, err := step.Lower(m, b, l)
		if err != nil {
			t.Fatal(err)
		}
		rs, err := OpenRanks(context.Background(), progs, m, Options{Mode: Emulated, Dir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		defer rs.Close()
		for _, s := range rs.Sessions {
			if err := s.LoadParams(func(id params.ID) []float32 { return whole[id] }); err != nil {
				t.Fatal(err)
			}
			s.SetOptimizer(cfg)
		}
		st, err := rs.Step(micro, StepOptions{Seed: 5})
		if err != nil {
			t.Fatal(err)
		}
		out := map[string][]float32{}
		for r, s := range rs.Sessions {
			for _, buf := range s.Buffers() {
				if buf.Kind != step.KindGrad || buf.Tier != step.Device {
					continue
				}
				if _, ok := out[buf.Name]; ok {
					t.Fatalf("pp %d: %s on two ranks", l.PP, buf.Name)
				}
				g := make([]float32, buf.Elements())
				if err := s.DownloadBuffer(buf, g); err != nil {
					t.Fatalf("rank %d: %v", r, err)
				}
				out[buf.Name] = g
			}
		}
		return out, st.Loss
	}
	one, loss1 := grads(step.Layout{DP: 1, EP: 1, TP: 1, PP: 1})
	two, loss2 := grads(step.Layout{DP: 1, EP: 1, TP: 1, PP: 2})
	t.Logf("loss %.9f on one rank, %.9f on two stages; %d gradients", loss1, loss2, len(one))
	if len(one) != len(two) || len(one) == 0 {
		t.Fatalf("%d gradients on one rank, %d on two stages", len(one), len(two))
	}
	for name, want := range one {
		got, ok := two[name]
		if !ok || len(got) != len(want) {
			t.Errorf("%s: %d values on the stages, %d on one rank", name, len(got), len(want))
			continue
		}
		for i := range want {
			if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
				t.Errorf("%s[%d]: %.9g on the stages, %.9g on one rank (its first differing element)", name, i, got[i], want[i])
				break
			}
		}
	}
}
