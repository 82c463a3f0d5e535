package train

import (
	"github.com/moec-dev/moec/compiler/program"
)

// testCorpus is real text every Go installation has, small enough to read quickly.
const testCorpus = "$GOROOT/src/strings/*.go"

// tinyModel is a CPU-cheap MoE model with every default spelled out (as check would).
func tinyModel() *program.Model {
	return &program.Model{
		Name: "tiny", Vocab: 256, VocabPadTo: 1, DModel: 32, Layers: 2, SeqLen: 32,
		Norm: program.RMSNorm, NormEps: 1e-5, NormPlacement: program.PreNorm, FinalNorm: true,
		Position: program.Rotary, RopeBase: 10000, MaxPosition: 32,
		Attention: program.Attention{Heads: 2, KVHeads: 2, HeadDim: 16, ShareWeights: 1, ShareKV: 1},
		FFN:       program.FFN{Hidden: 64, Activation: program.SwiGLU},
		MoE: &program.MoE{Experts: 4, TopK: 1, ExpertHidden: 64, Activation: program.SwiGLU,
			Every: 1, Router: program.RouteHidden, RouterDim: 32, Score: program.Softmax,
			CapacityFactor: 0, DroplessSkew: 2, BalanceLoss: 0.01},
	}
}

// tinyProgram has one train block with a dense stage and an MoE stage grown from it.
func tinyProgram() *program.Program {
	m := tinyModel()
	t := &program.Train{
		Name: "tiny", Model: "tiny", Cluster: "local", TokensPerBatch: 256, MicroBatch: 4,
		Precision: program.FP32,
		Optimizer: program.Optimizer{Kind: "adamw", LR: 3e-3, MinLR: 3e-4, WeightDecay: 0.1, Beta1: 0.9,
			Beta2: 0.95, Eps: 1e-8, Warmup: 2, Schedule: "cosine", ClipNorm: 1},
		Data: testCorpus, Seed: 1234, CheckpointEvery: 4,
		Stages: []*program.Stage{
			{Name: "dense", Experts: 1, Steps: 8},
			{Name: "moe", From: "dense", Experts: 4, Grow: program.Grow{Kind: "copy", Noise: 0.01}, Steps: 8},
		},
	}
	return &program.Program{
		Models: map[string]*program.Model{"tiny": m}, ModelOrder: []string{"tiny"},
		Trains: map[string]*program.Train{"tiny": t}, TrainOrder: []string{"tiny"},
	}
}
