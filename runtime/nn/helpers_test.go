package nn

import (
	"math/rand/v2"

	"github.com/moec-dev/moec/compiler/program"
)

// tinyDense is a small dense model the tests vary field by field.
func tinyDense() *program.Model {
	return &program.Model{
		Name: "tiny", Vocab: 13, VocabPadTo: 1, DModel: 8, Layers: 2, SeqLen: 6,
		Norm: program.RMSNorm, NormEps: 1e-5, NormPlacement: program.PreNorm, FinalNorm: true,
		Position: program.Rotary, RopeBase: 10000,
		Attention: program.Attention{Heads: 2, KVHeads: 2, HeadDim: 4, ShareWeights: 1},
		FFN:       program.FFN{Hidden: 12, Activation: program.SwiGLU},
	}
}

// tinyMoE adds a softmax top-2 MoE with balance and z losses to tinyDense.
func tinyMoE() *program.Model {
	m := tinyDense()
	m.MoE = &program.MoE{Experts: 4, TopK: 2, ExpertHidden: 6, Activation: program.SwiGLU,
		Router: program.RouteHidden, Score: program.Softmax, Normalize: true,
		BalanceLoss: 0.01, ZLoss: 0.001, Every: 1}
	return m
}

func randBatch(r *rand.Rand, vocab int64, B, T int) Batch {
	b := Batch{B: B, T: T, Tokens: make([]int32, B*(T+1))}
	for i := range b.Tokens {
		b.Tokens[i] = int32(r.IntN(int(vocab)))
	}
	return b
}
