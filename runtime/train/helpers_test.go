package train

import (
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/program/programtest"
)

// testCorpus is real text every Go installation has, small enough to read quickly.
const testCorpus = "$GOROOT/src/strings/*.go"

// tinyModel is a CPU-cheap MoE model: four dropless top-1 experts in every layer.
func tinyModel() *program.Model {
	return programtest.MustModel("tiny", `vocab = 256; vocab_pad_to = 1; d_model = 32; layers = 2; seq_len = 32
attention { heads = 2 }
ffn { hidden = 64; activation = swiglu }
moe { experts = 4; top_k = 1; capacity_factor = dropless; balance_loss = 0.01 }`)
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
