package plan

import (
	"fmt"
	"testing"

	"github.com/moec-dev/moec/compiler/catalog"
	"github.com/moec-dev/moec/compiler/program"
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
	m := &program.Model{
		Name: "hunyuan", Vocab: 150000, VocabPadTo: 1, DModel: 2560, Layers: 32, SeqLen: 2048,
		Norm: program.RMSNorm, NormEps: 1e-5, NormPlacement: program.PreNorm, FinalNorm: true,
		Position: program.Rotary, RopeBase: 10000, MaxPosition: 2048,
		Attention: program.Attention{Heads: 32, KVHeads: 32, HeadDim: 80, TalkingHeads: true, ShareWeights: 0.5, ShareKV: 1},
		FFN:       program.FFN{Hidden: 10240, Activation: program.GELU},
		MoE: &program.MoE{Experts: 1536, TopK: 1, ExpertHidden: 10240, Activation: program.GELU, Every: 2,
			Router: program.RouteTokenEmbedding, RouterDim: 2560, Score: program.Softmax,
			CapacityFactor: 1.25, DroplessSkew: 2, BalanceLoss: 0.01},
	}
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
