// Package steptest builds random models for tests of the step program (lowering,
// verification, execution against the hand-written model).
package steptest

import (
	"fmt"
	"math/rand/v2"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
)

// Model is a random small model with the features the step program lowers, drawn from r:
// sizes, norms, positions, attention (GQA, biases, talking heads, sharing), FFN
// activations and biases, and an MoE (experts, top-k, scores, routers, capacity, shared
// experts, biases) in some layers.
func Model(r *rand.Rand, name string) *program.Model {
	pick := func(xs ...int) int { return xs[r.IntN(len(xs))] }
	heads := pick(1, 2, 4)
	kv := heads
	if heads > 1 && r.IntN(2) == 0 {
		kv = heads / 2
	}
	dh := pick(4, 8)
	acts := []program.Activation{program.GELU, program.ReLU, program.SiLU, program.SwiGLU, program.GeGLU}
	m := &program.Model{
		Name: name, Vocab: int64(pick(32, 64)), VocabPadTo: 1, DModel: int64(heads * dh), Layers: pick(1, 2, 3, 4),
		SeqLen: 8, Norm: program.RMSNorm, NormPlacement: program.PreNorm, FinalNorm: r.IntN(4) > 0, RopeBase: 10000,
		Position: []program.Position{program.Rotary, program.Learned, program.NoPosition}[r.IntN(3)], MaxPosition: 8,
		TieEmbeddings: r.IntN(3) == 0,
		Attention: program.Attention{Heads: heads, KVHeads: kv, HeadDim: int64(dh), ShareWeights: 1, ShareKV: 1,
			BiasQKV: r.IntN(3) == 0, BiasOut: r.IntN(3) == 0, TalkingHeads: r.IntN(3) == 0},
		FFN: program.FFN{Hidden: int64(pick(8, 16, 32)), Activation: acts[r.IntN(len(acts))], Bias: r.IntN(3) == 0},
	}
	if r.IntN(2) == 0 {
		m.Norm = program.LayerNorm
	}
	if r.IntN(3) == 0 {
		m.Attention.ShareWeights = 0.5
	}
	if r.IntN(4) > 0 {
		e := pick(2, 4, 8)
		moe := &program.MoE{Experts: e, TopK: min(pick(1, 2), e), ExpertHidden: int64(pick(8, 16)), Activation: acts[r.IntN(len(acts))],
			Every: pick(1, 2), Router: program.RouteHidden, Score: program.Softmax, Normalize: r.IntN(2) == 0,
			CapacityFactor: []float64{0, 1, 1.25, 2}[r.IntN(4)], DroplessSkew: 2, BalanceLoss: 0.01, ZLoss: []float64{0, 1e-3}[r.IntN(2)],
			ExpertBias: r.IntN(3) == 0, RouterBias: r.IntN(3) == 0}
		if r.IntN(3) == 0 {
			moe.Router, moe.RouterDim = program.RouteTokenEmbedding, int64(pick(8, 16))
		}
		if r.IntN(3) == 0 {
			moe.Score = program.Sigmoid
		}
		if r.IntN(4) == 0 {
			moe.SharedExperts, moe.SharedHidden = 1, int64(pick(8, 16))
		}
		m.MoE = moe
	}
	return m
}

// Layout is a random layout of at most 8 ranks for m (it may not divide m: Lower says so).
func Layout(r *rand.Rand, m *program.Model) step.Layout {
	pick := func(xs ...int) int { return xs[r.IntN(len(xs))] }
	l := step.Layout{DP: pick(1, 1, 2, 4), TP: pick(1, 1, 2), PP: pick(1, 1, 2), ZeRO: r.IntN(4), OffloadOpt: r.IntN(4) == 0}
	l.EP = 1
	if m.MoE != nil && l.DP > 1 && r.IntN(2) == 0 {
		l.EP = pick(2, l.DP)
	}
	return l
}

// String describes m in one line, for failure messages.
func String(m *program.Model) string {
	s := fmt.Sprintf("L%d D%d H%d/%d %s %s ffn %d %s bias %v tied %v th %v share %g", m.Layers, m.DModel, m.Attention.Heads,
		m.Attention.KVHeads, m.Norm, m.Position, m.FFN.Hidden, m.FFN.Activation, m.FFN.Bias, m.TieEmbeddings,
		m.Attention.TalkingHeads, m.Attention.ShareWeights)
	if moe := m.MoE; moe != nil {
		s += fmt.Sprintf(" | E%d k%d every %d %s %s norm %v cf %g z %g ebias %v rbias %v shared %d %s",
			moe.Experts, moe.TopK, moe.Every, moe.Router, moe.Score, moe.Normalize, moe.CapacityFactor, moe.ZLoss,
			moe.ExpertBias, moe.RouterBias, moe.SharedExperts, moe.Activation)
	}
	return s
}
