package gpu

import (
	"os"
	"testing"

	"github.com/moec-dev/moec/compiler/check"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/internal/longtest"
	"github.com/moec-dev/moec/runtime/optim"
)

// deepseekTiny is examples/deepseek_tiny.moe's model at its stage (latent attention, a
// dense first layer, then eight sigmoid-scored experts in four groups routed on scores
// plus a selection bias, routed_scale 2.5, one shared expert) and its train block's
// optimizer.
func deepseekTiny(t testing.TB) (*program.Model, optim.Config) {
	t.Helper()
	src, err := os.ReadFile("../../examples/deepseek_tiny.moe")
	if err != nil {
		t.Fatal(err)
	}
	prog, _, ds := check.Load("deepseek_tiny.moe", func(string) ([]byte, error) { return src, nil })
	if ds.HasErrors() {
		t.Fatalf("%v", ds)
	}
	tr := prog.Trains["deepseek_tiny"]
	if tr == nil || len(tr.Stages) == 0 {
		t.Fatal("deepseek_tiny.moe has no train block deepseek_tiny with a stage")
		return nil, optim.Config{}
	}
	return program.StageModel(prog.Models["deepseek_tiny"], tr.Stages[0]), optim.FromProgram(tr.Optimizer, 0, 600)
}

// TestEmulatedDeepSeekRoutingMatchesExecutor: DeepSeek-V3's routing through the generated
// step (deepseek_tiny with multi-head attention in place of latent attention): sigmoid
// scores, the top 2 of the best 2 of 4 groups chosen by score + selection bias, the gates
// renormalised unbiased scores times routed_scale 2.5, and after each step the bias moved
// by aux_free_bias·sign(mean load − load). The losses, gradient norms and every parameter
// after two updates (the selection biases among them: a bias the step did not move, or
// moved by other loads, is off by the whole move) equal the executor's. A compiled host
// program and two emulated steps take over a minute: MOEC_LONG_EMULATION=1 runs it; by
// default codegen/cudastep's TestMoELaunchesMatchExec holds the routing kernels alone to
// runtime/exec's.
func TestEmulatedDeepSeekRoutingMatchesExecutor(t *testing.T) {
	longtest.Require(t, "a compiled host program and two emulated steps: over a minute; make test stays under ten minutes")
	m, cfg := deepseekTiny(t)
	a := m.Attention
	a.MLA, a.KVLoraRank, a.QLoraRank, a.QKNopeHeadDim, a.QKRopeHeadDim, a.VHeadDim = false, 0, 0, 0, 0, 0
	m.Attention = a
	if e := m.MoE; e.AuxFreeBias == 0 || e.Groups == 0 || e.RoutedScaleOrOne() == 1 || e.Score != program.Sigmoid {
		t.Fatalf("deepseek_tiny's routing changed (%+v): this test checks DeepSeek-V3's", *e)
	}
	matchExecutor(t, m, step.Batch{MicroBatch: 2, SeqLen: 16, Micro: 1}, "", cfg, 1e-5)
}

// TestEmulatedDeepSeekTinyMatchesExecutor: examples/deepseek_tiny.moe as shipped through
// the generated step: latent attention's training (the low-rank query and its norm, the
// latent's split, norm and kv_b, the heads with rotary rope features, the attention that
// keeps its weights, and every backward: kernels_mla.cu's training kernels) beside
// DeepSeek-V3's routing. Two steps' losses, gradient norms and every parameter after the
// updates equal the executor's. MOEC_LONG_EMULATION=1 runs it (over a minute).
func TestEmulatedDeepSeekTinyMatchesExecutor(t *testing.T) {
	longtest.Require(t, "a compiled host program and two emulated steps: over a minute; make test stays under ten minutes")
	m, cfg := deepseekTiny(t)
	if !m.Attention.MLA || m.Attention.QLoraRank == 0 {
		t.Fatalf("deepseek_tiny's attention changed (%+v): this test checks latent attention with a low-rank query", m.Attention)
	}
	matchExecutor(t, m, step.Batch{MicroBatch: 2, SeqLen: 16, Micro: 1}, "", cfg, 1e-5)
}

// TestEmulatedDeepSeekTinyRanksMatchExecutor: deepseek_tiny on two data- and
// expert-parallel ranks (four experts each): each rank's expert loads summed over the
// ranks (an all_reduce of expert_load's counts) before the selection biases move, so both
// ranks move them alike, as runtime/exec's in-process ranks. MOEC_LONG_EMULATION=1 runs it
// (two ranks' host programs compiled: minutes).
func TestEmulatedDeepSeekTinyRanksMatchExecutor(t *testing.T) {
	longtest.Require(t, "two ranks' generated steps compiled: minutes; make test stays under ten minutes")
	m, cfg := deepseekTiny(t)
	matchRanks(t, m, step.Batch{MicroBatch: 1, SeqLen: 16, Micro: 1}, step.Layout{DP: 2, EP: 2, TP: 1, PP: 1}, cfg, 2)
}
