package plan

import (
	"fmt"
	"math"
	"testing"

	"github.com/moec-dev/moec/compiler/catalog"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/program/programtest"
)

// denseModel is a GPT-style decoder: 4h non-gated MLP, full multi-head attention.
func denseModel(h int64, heads, layers int, seq int64) *program.Model {
	return programtest.MustModel("dense", fmt.Sprintf(`vocab = 50304; vocab_pad_to = 1; d_model = %d; layers = %d; seq_len = %d
norm = layernorm; norm_placement = pre; final_norm = true; position = rotary
attention { heads = %d; kv_heads = %d; head_dim = %d }
ffn { hidden = %d; activation = gelu }`, h, layers, seq, heads, heads, h/int64(heads), 4*h))
}

func testCluster(t testing.TB, device string, nodes, gpn int) *program.Cluster {
	t.Helper()
	d, ok := catalog.Lookup(device)
	if !ok {
		t.Fatalf("catalog lacks %s", device)
	}
	return &program.Cluster{Name: "c", Nodes: nodes, GPUsPerNode: gpn, Device: d, HostMemory: 1e12, HostUsable: 0.8,
		Network: 200e9, NetLatency: 5e-6}
}

func testEnv(t testing.TB, m *program.Model, c *program.Cluster) *env {
	a := assumptionsFor(program.BF16, c, m, &program.Optimizer{Kind: "adamw"})
	w := newWorkload(m, m.SeqLen, &a)
	w.sequences = 1024
	return newEnv(w, c, &a, program.BF16, true)
}

func near(t *testing.T, what string, got, want float64) {
	t.Helper()
	if math.Abs(got-want) > 1e-9*math.Max(1, math.Abs(want)) {
		t.Errorf("%s = %.6g, want %.6g", what, got, want)
	}
}

// TestZeROModelStates holds the model states of a dense model against the ZeRO paper
// (Rajbhandari et al. 2020, Figure 1): with Ψ parameters, Nd data-parallel ranks and
// K = 12, stage 0 keeps (2+2+K)Ψ, stage 1 2Ψ+2Ψ+KΨ/Nd, stage 2 2Ψ+(2+K)Ψ/Nd, stage 3
// (2+2+K)Ψ/Nd per device.
func TestZeROModelStates(t *testing.T) {
	m := denseModel(4096, 32, 32, 2048)
	e := testEnv(t, m, testCluster(t, "a100_80gb", 8, 8))
	psi := float64(e.w.totalParams())
	const nd, k = 64.0, 12.0
	want := map[int]float64{
		0: (2 + 2 + k) * psi,
		1: 2*psi + 2*psi + k*psi/nd,
		2: 2*psi + (2+k)*psi/nd,
		3: (2 + 2 + k) * psi / nd,
	}
	for stage := 0; stage <= 3; stage++ {
		l := ParallelLayout{DP: 64, EP: 1, EDP: 64, TP: 1, PP: 1, Memory: "zero", ZeRO: stage, Offload: "none", MicroBatch: 1, GradAccum: 1, Batch: 64, Recompute: "full"}
		mem := e.memory(l)
		got := mem.gpu[compParams] + mem.gpu[compGrads] + mem.gpu[compOptimizer]
		near(t, "ZeRO stage "+string(rune('0'+stage))+" states", got, want[stage])
	}
}

// TestExpertStatesShardOverEDP checks that routed experts are partitioned over the
// expert-data-parallel group (dp/ep), not the whole world, as DeepSpeed-MoE does.
func TestExpertStatesShardOverEDP(t *testing.T) {
	prog := hunyuanProgram(t, 24)
	tr := prog.Trains["hunyuan"]
	m := program.StageModel(prog.Models["hunyuan"], tr.Stages[1]) // 128 experts
	e := testEnv(t, m, prog.Clusters["taiji"])
	st := e.stageShapes(1)[0]
	dense, experts := float64(st.dense), float64(st.experts)
	for _, ep := range []int{1, 8, 32} {
		l := ParallelLayout{DP: 64, EP: ep, EDP: 64 / ep, TP: 1, PP: 1, Memory: "zero", ZeRO: 1, Offload: "none", MicroBatch: 1, GradAccum: 1, Batch: 64, Recompute: "full"}
		mem := e.memory(l)
		// Stage 1: weights and gradients whole on the rank; optimizer states partitioned.
		rank := dense + experts/float64(ep)
		near(t, "weights", mem.gpu[compParams], 2*rank)
		near(t, "optimizer", mem.gpu[compOptimizer], 12*(dense/64+experts/float64(ep)/float64(64/ep)))
	}
}

// TestMegatronActivations holds activations per layer against Korthikanti et al. 2022:
// sbh(34 + 5as/h) without recompute and no tensor parallelism; sbh/t (34 + 5as/h) with
// tensor and sequence parallelism; sbh(10 + 24/t + 5as/(ht)) with tensor parallelism
// alone; 34 sbh/t with selective recompute.
func TestMegatronActivations(t *testing.T) {
	const h, a, s, b = 4096, 32, 2048, 4
	m := denseModel(h, a, 32, s)
	e := testEnv(t, m, testCluster(t, "a100_80gb", 1, 8))
	sbh := float64(s * b * h)
	for _, tp := range []int{1, 2, 8} {
		l := ParallelLayout{DP: 1, EP: 1, EDP: 1, TP: tp, PP: 1, Memory: "zero", Offload: "none", MicroBatch: b, GradAccum: 1, Batch: b}
		tf := float64(tp)
		e.a.SequenceParallel = true
		dense, score, _, _ := e.layerActivations(l)
		near(t, "TP+SP, no recompute", dense+score, sbh/tf*(34+5.0*a*s/h))
		near(t, "TP+SP, selective", dense, 34*sbh/tf)
		e.a.SequenceParallel = false
		dense, score, _, _ = e.layerActivations(l)
		near(t, "TP only, no recompute", dense+score, sbh*(10+24/tf+5.0*a*s/(h*tf)))
	}
	e.a.SequenceParallel = true
}

// TestActivationsUnderPipeline: the first 1F1B stage holds pp micro-batches, so the
// activation memory of the whole model sits on it (Korthikanti §4.2.3).
func TestActivationsUnderPipeline(t *testing.T) {
	m := denseModel(2048, 16, 16, 1024)
	e := testEnv(t, m, testCluster(t, "a100_80gb", 1, 8))
	one := ParallelLayout{DP: 1, EP: 1, EDP: 1, TP: 1, PP: 1, MicroBatch: 1, GradAccum: 8, Batch: 8, Recompute: "selective", Offload: "none"}
	four := one
	four.PP = 4
	a1, _ := e.activations(one, e.stageShapes(1)[0])
	a4, _ := e.activations(four, e.stageShapes(4)[0])
	if math.Abs(a1-a4)/a1 > 1e-9 {
		t.Errorf("first stage of 4 holds %.4g bytes, want the whole model's %.4g", a4, a1)
	}
	last, _ := e.activations(four, e.stageShapes(4)[len(e.stageShapes(4))-1])
	if last >= a4 {
		t.Errorf("last stage holds %.4g bytes, want less than the first's %.4g", last, a4)
	}
}

// TestMoEDispatchBuffers: capacity factor and the dropless skew bound size the buffers.
func TestMoEDispatchBuffers(t *testing.T) {
	prog := hunyuanProgram(t, 24)
	m := prog.Models["hunyuan"]
	e := testEnv(t, m, prog.Clusters["taiji"])
	l := ParallelLayout{DP: 8, EP: 8, EDP: 1, TP: 1, PP: 1, MicroBatch: 2, GradAccum: 1, Batch: 16, Recompute: "none", Offload: "none"}
	_, _, _, d := e.layerActivations(l)
	want := 2 * 2 * 1.25 * float64(2*2048*2560) // dispatch + combine, 2 bytes, cf 1.25, top-1
	near(t, "capacity-factor buffers", d, want)

	drop := *m
	moe := *m.MoE
	moe.CapacityFactor, moe.DroplessSkew = 0, 3
	drop.MoE = &moe
	e2 := testEnv(t, &drop, prog.Clusters["taiji"])
	_, _, _, d2 := e2.layerActivations(l)
	near(t, "dropless buffers", d2, want/1.25*3)
}

// TestOffloadAccounting pins where offloaded states live: ZeRO-Infinity puts 20 bytes per
// partitioned parameter (2+2 16-bit weights and gradients, 4 fp32 gradient, 12 optimizer)
// on the host with the fragmentation factor and none on the GPU; the unified cache splits
// the same 20 bytes between the GPU's free memory and the host, with no such factor.
func TestOffloadAccounting(t *testing.T) {
	m := denseModel(4096, 32, 32, 2048)
	c := testCluster(t, "a100_40gb", 4, 8)
	e := testEnv(t, m, c)
	psi := float64(e.w.totalParams())
	const n, gpn = 32.0, 8.0
	inf := ParallelLayout{DP: 32, EP: 1, EDP: 32, TP: 1, PP: 1, Memory: "zero", ZeRO: 3, Offload: "cpu", MicroBatch: 1, GradAccum: 1, Batch: 32, Recompute: "full"}
	mem := e.memory(inf)
	near(t, "ZeRO-Infinity host bytes per node", mem.host.sum(), 20*psi/n*gpn*e.a.OffloadFragmentation)
	if s := mem.gpu[compParams] + mem.gpu[compGrads] + mem.gpu[compOptimizer]; s != 0 {
		t.Errorf("ZeRO-Infinity keeps %g bytes of states on the GPU", s)
	}
	uc := inf
	uc.Memory, uc.Offload = "unified_cache", "none"
	mem = e.memory(uc)
	near(t, "unified cache states per rank", mem.gpu[compParams]+mem.gpu[compGrads]+mem.gpu[compOptimizer]+mem.host.sum()/gpn, 20*psi/n)
	if mem.gpu.sum() > mem.gpuCap*(1+1e-12) {
		t.Errorf("unified cache overfills the GPU: %g of %g", mem.gpu.sum(), mem.gpuCap)
	}
	if mem.cachedFraction != 1 || mem.host.sum() != 0 {
		t.Errorf("a 6.7B model on 32 GPUs should be all cached: fraction %g, host %g", mem.cachedFraction, mem.host.sum())
	}
	// A 39B model on one node spills to the host.
	big := testEnv(t, denseModel(8192, 64, 48, 2048), testCluster(t, "a100_40gb", 1, 8))
	psi = float64(big.w.totalParams())
	uc.DP, uc.EDP, uc.Batch = 8, 8, 8
	mem = big.memory(uc)
	near(t, "spilled unified cache states per rank", mem.gpu[compParams]+mem.gpu[compGrads]+mem.gpu[compOptimizer]+mem.host.sum()/gpn, 20*psi/8)
	if mem.cachedFraction <= 0 || mem.cachedFraction >= 1 || mem.host.sum() <= 0 {
		t.Errorf("cached fraction %g, host %g: want a split", mem.cachedFraction, mem.host.sum())
	}
	near(t, "GPU filled to capacity", mem.gpu.sum(), mem.gpuCap)
}
