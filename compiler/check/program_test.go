package check

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moec-dev/moec/compiler/catalog"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/lang/parse"
)

// checkSource parses and checks one file, failing the test on any diagnostic.
func checkSource(t *testing.T, src string) *program.Program {
	t.Helper()
	f, diags := parse.File("t.moe", []byte(src))
	if len(diags) > 0 {
		t.Fatalf("parse: %v", diags.Err())
	}
	prog, diags := Check(f)
	if len(diags) > 0 {
		t.Fatalf("check: %v", diags)
	}
	return prog
}

// TestProgramFields holds the mapping from keys to program fields: every field of the
// typed program is read from the key the language reference names.
func TestProgramFields(t *testing.T) {
	prog := checkSource(t, `
model base {
  vocab = 1000; vocab_pad_to = 64; d_model = 256; layers = 6; encoder_layers = 2; seq_len = 512
  norm = layernorm; norm_eps = 1e-6; norm_placement = sandwich; final_norm = false
  position = rotary; rope_base = 500000; tie_embeddings = true; mtp_depth = 1
  attention {
    heads = 8; kv_heads = 2; qk_norm = true; talking_heads = true; share_weights = 0.5
    share_kv = 2; sinks = true; window = 128; bias = true; out_bias = false
  }
  ffn { hidden = 3 * d_model; activation = swiglu; bias = true }
  moe {
    experts = 16; top_k = 2; expert_hidden = 128; activation = geglu; expert_bias = true
    shared_experts = 1; every = 2; first_dense = 1; parallel_dense = true
    router = token_embedding; router_dim = 64; score = sigmoid; router_bias = true
    capacity_factor = dropless; dropless_skew = 1.5; balance_loss = 0.02; z_loss = 0.001
    aux_free_bias = 0.01; groups = 4; topk_groups = 2
  }
}
model child extends base { d_model = 512 }
cluster c {
  nodes = 2; gpus_per_node = 4; gpu = a100_80gb; host_memory = 1TiB; network = 200Gbps
  gpu_reserve = 3GiB; peak_flops = 100TFLOPS; nvme = 2TB; nvme_bandwidth = 4GB/s; ranks = 0
}
train child on c {
  tokens_per_batch = 64 * 512; micro_batch = 2; precision = fp16
  optimizer = adamw { lr = 1e-3; warmup = 10; clip = 0.5 }
  memory = zero(3, offload = cpu); recompute = none
  data = "d/*.txt"; val_data = "v/*.txt"; seed = 9; checkpoint_every = 50
  stage dense { experts = 1; tokens = 1M }
  stage grown from dense { experts = 16; grow = copy(noise = 0.02); top_k = 2; steps = 10; lr = 5e-4 }
}
serve child on c { precision = bf16; batch = 8; layout = expert; stage = grown }
compress child { distill_into = base; quantize = 8; prune_experts = 0.5 }
`)
	// A literal on purpose: it is what the checker must build, written out field by field.
	wantChild := &program.Model{
		Name: "child", Extends: "base", Vocab: 1000, VocabPadTo: 64, DModel: 512, Layers: 6, Encoder: 2, SeqLen: 512,
		Norm: program.LayerNorm, NormEps: 1e-6, NormPlacement: program.SandwichNorm, FinalNorm: false,
		Position: program.Rotary, RopeBase: 500000, MaxPosition: 512, TieEmbeddings: true, MTPDepth: 1,
		Attention: program.Attention{Heads: 8, KVHeads: 2, HeadDim: 64, QKNorm: true, TalkingHeads: true,
			ShareWeights: 0.5, ShareKV: 2, Sinks: true, Window: 128, BiasQKV: true, BiasOut: false},
		FFN: program.FFN{Hidden: 1536, Activation: program.SwiGLU, Bias: true},
		MoE: &program.MoE{Experts: 16, TopK: 2, ExpertHidden: 128, Activation: program.GeGLU, ExpertBias: true,
			SharedExperts: 1, SharedHidden: 128, Every: 2, FirstDense: 1, ParallelDense: true, EncoderMoE: true,
			Router: program.RouteTokenEmbedding, RouterDim: 64, Score: program.Sigmoid, Normalize: true, RouterBias: true,
			CapacityFactor: 0, DroplessSkew: 1.5, BalanceLoss: 0.02, ZLoss: 0.001, AuxFreeBias: 0.01, Groups: 4, TopKGroups: 2},
	}
	if d := cmp.Diff(wantChild, prog.Models["child"]); d != "" {
		t.Errorf("model child (-want +got):\n%s", d)
	}
	if !prog.Models["child"].MoE.Dropless() {
		t.Errorf("capacity_factor = dropless must read as dropless")
	}

	dev, _ := catalog.Lookup("a100_80gb")
	dev.Reserve = 3 << 30
	for p := range dev.PeakFLOPs {
		dev.PeakFLOPs[p] = 100e12
	}
	c := prog.Clusters["c"]
	c.Decl = program.Source{}
	wantCluster := &program.Cluster{Name: "c", Nodes: 2, GPUsPerNode: 4, Device: dev, HostMemory: 1 << 40,
		HostUsable: 0.8, Network: 25e9, NetLatency: 5e-6, NVMe: 2e12, NVMeBW: 4e9}
	if d := cmp.Diff(wantCluster, c); d != "" {
		t.Errorf("cluster c (-want +got):\n%s", d)
	}

	tr := prog.Trains["child"]
	if tr.Decl.File != "t.moe" || tr.Decl.Start.Line != 24 {
		t.Errorf("train Decl = %+v, want t.moe line 24", tr.Decl)
	}
	tr.Decl = program.Source{}
	if v := tr.ValDataDecl; v.File != "t.moe" || v.Start.Line != 28 || v.Start.Col != 32 {
		t.Errorf("train ValDataDecl = %+v, want t.moe:28:32 (the val_data value)", v)
	}
	tr.ValDataDecl = program.Source{}
	for _, s := range tr.Stages {
		s.Decl = program.Source{}
	}
	wantTrain := &program.Train{Name: "child", Model: "child", Cluster: "c", TokensPerBatch: 32768, MicroBatch: 2,
		SeqLen: 512, Precision: program.FP16, CPUProducts: program.FP16,
		Optimizer: program.Optimizer{Kind: "adamw", LR: 1e-3, MinLR: 1e-4, WeightDecay: 0.1, Beta1: 0.9, Beta2: 0.95,
			Eps: 1e-8, Warmup: 10, Schedule: "cosine", ClipNorm: 0.5},
		Memory: program.MemoryStrategy{Kind: "zero", ZeROStage: 3, Offload: "cpu", Recompute: "none"},
		Data:   "d/*.txt", ValData: "v/*.txt", Seed: 9, CheckpointEvery: 50,
		Stages: []*program.Stage{
			{Name: "dense", Experts: 1, Tokens: 1e6},
			{Name: "grown", From: "dense", Experts: 16, TopK: 2, Grow: program.Grow{Kind: "copy", Noise: 0.02}, Steps: 10, LR: 5e-4},
		}}
	if d := cmp.Diff(wantTrain, tr); d != "" {
		t.Errorf("train child (-want +got):\n%s", d)
	}

	sv := prog.Serves["child"]
	sv.Decl = program.Source{}
	if d := cmp.Diff(&program.Serve{Name: "child", Model: "child", Cluster: "c", Precision: program.BF16, Batch: 8,
		ContextLen: 512, Layout: "expert", Stage: "grown"}, sv); d != "" {
		t.Errorf("serve (-want +got):\n%s", d)
	}
	cp := prog.Compresses["child"]
	cp.Decl = program.Source{}
	// quantize = 8 makes every kind int8; prune_experts = 0.5 keeps 8 of 16 experts. The
	// model (an encoder, multi-token prediction) has no parameter walk: nothing is counted.
	if d := cmp.Diff(&program.Compress{Name: "child", Model: "child", DistillInto: "base", QuantBits: 8, PruneExperts: 0.5,
		Experts: "int8", Dense: "int8", Embed: "int8", Head: "int8", Group: 128, KeepExperts: 8, PruneBy: "frequency"}, cp); d != "" {
		t.Errorf("compress (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{"base", "child"}, prog.ModelOrder); d != "" {
		t.Errorf("ModelOrder: %s", d)
	}

	// The stage's model is the base model at the stage's size (program.StageModel); with
	// a shared expert the dense stage keeps its MoE block with one routed expert.
	dense := program.StageModel(prog.Models["child"], tr.Stages[0])
	if dense.MoE == nil || dense.MoE.Experts != 1 || dense.MoE.TopK != 1 {
		t.Errorf("dense stage model: MoE %+v; want 1 routed expert, top-1", dense.MoE)
	}
}

// TestUnifiedCache: unified_cache is ZeRO-3 with the host as backing store.
func TestUnifiedCache(t *testing.T) {
	prog := checkSource(t, `
model m { vocab = 256; d_model = 64; layers = 2; seq_len = 64; attention { heads = 2 } }
cluster c { gpu = cpu; host_memory = 8GiB }
train m on c { tokens_per_batch = 256; memory = unified_cache; data = "x" }
`)
	want := program.MemoryStrategy{Kind: "unified_cache", ZeROStage: 3, Offload: "cpu", Recompute: "selective", CachePage: 4 << 20, Eviction: "lru"}
	if d := cmp.Diff(want, prog.Trains["m"].Memory); d != "" {
		t.Errorf("memory (-want +got):\n%s", d)
	}
	if got := prog.Clusters["c"].Device.Memory; got != 8<<30 {
		t.Errorf("cpu device memory = %d, want host_memory 8GiB", got)
	}
}

// TestQKNormAndSharedGateFields holds qk_norm's words and shared_gate to their program
// fields: true and per_head are the per-head norm, full the whole-projection one.
func TestQKNormAndSharedGateFields(t *testing.T) {
	for _, tc := range []struct {
		qk         string
		norm, full bool
	}{{"false", false, false}, {"true", true, false}, {"per_head", true, false}, {"full", true, true}} {
		prog := checkSource(t, `
model m {
  vocab = 256; d_model = 64; layers = 2; seq_len = 64
  attention { heads = 2; qk_norm = `+tc.qk+` }
}`)
		a := prog.Models["m"].Attention
		if a.QKNorm != tc.norm || a.QKNormFull != tc.full {
			t.Errorf("qk_norm = %s: QKNorm %v QKNormFull %v, want %v %v", tc.qk, a.QKNorm, a.QKNormFull, tc.norm, tc.full)
		}
	}
	gated := checkSource(t, `model m { vocab = 256; d_model = 64; layers = 2; seq_len = 64
  attention { heads = 2 }
  moe { experts = 2; shared_experts = 1; shared_gate = true } }`)
	plain := checkSource(t, `model m { vocab = 256; d_model = 64; layers = 2; seq_len = 64
  attention { heads = 2 }
  moe { experts = 2; shared_experts = 1 } }`)
	if !gated.Models["m"].MoE.SharedGate || plain.Models["m"].MoE.SharedGate {
		t.Errorf("SharedGate: written true gives %v, default gives %v", gated.Models["m"].MoE.SharedGate, plain.Models["m"].MoE.SharedGate)
	}
}
