package exec

import (
	"math"
	"testing"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
)

// mlaVariants are featuretest's Base with DeepSeek's latent attention: DeepSeek-V3's shape
// (a low-rank query, sigmoid routing within groups on scores plus the selection bias, a
// shared expert, routed_scale) and DeepSeek-V2-Lite's (queries by q_proj, softmax routing).
func mlaVariants() []moeVariant {
	latent := func(m *program.Model, qLora int64) {
		a := &m.Attention
		a.MLA, a.QLoraRank, a.KVLoraRank, a.QKNopeHeadDim, a.QKRopeHeadDim, a.VHeadDim = true, qLora, 8, 4, 2, 6
	}
	return []moeVariant{
		{"deepseek-v3 shape", func(m *program.Model) {
			latent(m, 12)
			e := m.MoE
			e.Score, e.RoutedScale, e.SharedExperts, e.SharedHidden = program.Sigmoid, 2.5, 1, 8
			e.Groups, e.TopKGroups, e.AuxFreeBias = 2, 1, 0.05
		}},
		{"deepseek-v2-lite shape", func(m *program.Model) {
			latent(m, 0)
			m.MoE.SharedExperts, m.MoE.SharedHidden = 2, 8
		}},
	}
}

// TestMLAMatchesHandWrittenModel: latent attention's step program, on one rank, gives
// runtime/nn's loss terms and every gradient over three steps, in both shapes.
func TestMLAMatchesHandWrittenModel(t *testing.T) {
	variantsMatchHandWrittenModel(t, mlaVariants())
}

// TestMLAUnderLayouts: latent attention computes under data and expert, tensor (heads
// split, the latents replicated; with and without sequence parallelism) and pipeline
// parallelism, ZeRO-3 and recomputation what one rank computes on the same micro-batches:
// the loss terms and every reduced gradient.
func TestMLAUnderLayouts(t *testing.T) {
	layouts := []step.Layout{
		{DP: 2, EP: 2, TP: 1, PP: 1},
		{DP: 1, EP: 1, TP: 2, PP: 1},
		{DP: 1, EP: 1, TP: 1, PP: 2},
		{DP: 2, EP: 2, TP: 2, PP: 1, ZeRO: 1},
		{DP: 1, EP: 1, TP: 2, PP: 1, SequenceParallel: true},
		{DP: 2, EP: 2, TP: 2, PP: 1, ZeRO: 3, SequenceParallel: true},
		{DP: 1, EP: 1, TP: 1, PP: 1, Recompute: program.RecomputeFull},
		{DP: 1, EP: 1, TP: 2, PP: 1, Recompute: program.RecomputeSelective},
	}
	v2 := mlaVariants()[1]
	cases := []struct {
		v moeVariant
		l step.Layout
	}{{v2, step.Layout{DP: 2, EP: 2, TP: 1, PP: 1, ZeRO: 3}}}
	for _, v := range mlaVariants() {
		for _, l := range layouts {
			cases = append(cases, struct {
				v moeVariant
				l step.Layout
			}{v, l})
		}
	}
	const mb, T, M = 2, 8, 2
	for _, c := range cases {
		t.Run(c.v.name+"/"+c.l.String(), func(t *testing.T) {
			m := variantModel(t, c.v)
			net := variantNet(t, m)
			micro := make([][]int32, c.l.DP*M)
			for i := range micro {
				micro[i] = randomTokens(mb, T, int(m.Vocab), int64(300+i))
			}
			o := Options{Seed: 9, Step: 1}
			ref := runLayout(t, m, net, oneRank(), step.Batch{MicroBatch: mb, SeqLen: T, Micro: c.l.DP * M}, micro, o)
			got := runLayout(t, m, net, c.l, step.Batch{MicroBatch: mb, SeqLen: T, Micro: M}, micro, o)
			if math.Abs(got.ce-ref.ce) > 1e-5*math.Abs(ref.ce) {
				t.Errorf("CE %.9g, one rank %.9g", got.ce, ref.ce)
			}
			for id, want := range ref.grads {
				if e := relErr(got.grads[id], want); e > 1e-5 {
					t.Errorf("gradient of %s differs from one rank's by %.3g (relative)", id, e)
				}
			}
		})
	}
}

// TestMLATrainsAlikeUnderLayouts: DeepSeek-V3's shape (latent attention and the selection
// bias) trains 6 steps with the optimizer under dp 2 × ep 2, tp 2, and both with ZeRO-3
// and sequence parallelism, as one rank running the same micro-batches.
func TestMLATrainsAlikeUnderLayouts(t *testing.T) {
	const mb, T, M, steps = 2, 8, 2, 6
	v := mlaVariants()[0]
	for _, l := range []step.Layout{{DP: 2, EP: 2, TP: 1, PP: 1}, {DP: 1, EP: 1, TP: 2, PP: 1}, {DP: 2, EP: 2, TP: 2, PP: 1, ZeRO: 3, SequenceParallel: true}} {
		t.Run(l.String(), func(t *testing.T) {
			m := variantModel(t, v)
			net := variantNet(t, m)
			cfg := trainConfig(steps)
			one := newTrainer(t, m, net, oneRank(), step.Batch{MicroBatch: mb, SeqLen: T, Micro: l.DP * M}, cfg)
			many := newTrainer(t, m, net, l, step.Batch{MicroBatch: mb, SeqLen: T, Micro: M}, cfg)
			for s := int64(0); s < steps; s++ {
				micro := make([][]int32, l.DP*M)
				for i := range micro {
					micro[i] = randomTokens(mb, T, int(m.Vocab), 1000*s+int64(i))
				}
				want, _ := one.step(t, micro, Options{Seed: 3, Step: s})
				got, _ := many.step(t, micro, Options{Seed: 3, Step: s})
				if math.Abs(got-want) > 1e-5*math.Abs(want) {
					t.Errorf("step %d: loss %.7f, one rank %.7f", s, got, want)
				}
			}
		})
	}
}

// TestMLADecodesAsHandWritten: latent attention's prefill and decoding programs (per-head
// K/V caches) give runtime/nn's Decoder's logits (which caches the latent), prompts of 3
// and 5 tokens decoded to 8 positions, on one rank and under tp 2, dp 2 × ep 2, both, and
// pp 2, within 1e-5 of each position's largest logit.
func TestMLADecodesAsHandWritten(t *testing.T) {
	variantsInfer(t, mlaVariants())
}
