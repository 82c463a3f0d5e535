package plan

import (
	"fmt"
	"testing"

	"github.com/moec-dev/moec/compiler/catalog"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/program/programtest"
)

// hunyuanProgram builds the design document's HunYuan-1T program in Go: the model, a
// Taiji-like cluster (nodes × 8 A100-40GB, 1 TB host, 1.6 Tbps) and the three-stage
// curriculum.
func hunyuanProgram(t testing.TB, nodes int) *program.Program {
	t.Helper()
	dev, ok := catalog.Lookup("a100_40gb")
	if !ok {
		t.Fatal("catalog lacks a100_40gb")
	}
	m := programtest.Model(t, "hunyuan", `vocab = 150000; vocab_pad_to = 1; d_model = 2560; layers = 32; seq_len = 2048
norm = rmsnorm; norm_eps = 1e-5; norm_placement = pre; final_norm = true
position = rotary; rope_base = 10000; max_position = 2048
attention { heads = 32; kv_heads = 32; head_dim = 80; talking_heads = true; share_weights = 0.5 }
ffn { hidden = 10240; activation = gelu }
moe {
  experts = 1536; top_k = 1; expert_hidden = 10240; activation = gelu; every = 2
  router = token_embedding; router_dim = 2560; score = softmax
  capacity_factor = 1.25; dropless_skew = 2; balance_loss = 0.01
}`)
	c := &program.Cluster{Name: "taiji", Nodes: nodes, GPUsPerNode: 8, Device: dev, HostMemory: 1e12,
		HostUsable: 0.8, Network: 1.6e12 / 8, NetLatency: 5e-6}
	tr := &program.Train{
		Name: "hunyuan", Model: "hunyuan", Cluster: "taiji", TokensPerBatch: 2_000_000, Precision: program.BF16,
		Optimizer: program.Optimizer{Kind: "adamw", LR: 1e-4, WeightDecay: 0.1, Beta1: 0.9, Beta2: 0.95, Eps: 1e-8},
		Memory:    program.MemoryStrategy{Kind: "unified_cache", ZeROStage: 3, Offload: "none", Recompute: "selective"},
		Stages: []*program.Stage{
			{Name: "dense", Experts: 1, Tokens: 300e9},
			{Name: "hundred_billion", From: "dense", Experts: 128, Tokens: 40e9, Grow: program.Grow{Kind: "copy", Noise: 0.01}},
			{Name: "trillion", From: "hundred_billion", Experts: 1536, Tokens: 10e9, Grow: program.Grow{Kind: "copy", Noise: 0.01}},
		},
	}
	sv := &program.Serve{Name: "hunyuan", Model: "hunyuan", Cluster: "taiji", Precision: program.FP16, Batch: 1, Layout: "auto"}
	return &program.Program{
		Models:     map[string]*program.Model{"hunyuan": m},
		Clusters:   map[string]*program.Cluster{"taiji": c},
		Trains:     map[string]*program.Train{"hunyuan": tr},
		Serves:     map[string]*program.Serve{"hunyuan": sv},
		ModelOrder: []string{"hunyuan"}, ClusterOrder: []string{"taiji"}, TrainOrder: []string{"hunyuan"}, ServeOrder: []string{"hunyuan"},
	}
}

// fmtSscan reads the leading integer of s.
func fmtSscan(s string, n *int) (int, error) { return fmt.Sscan(s, n) }
