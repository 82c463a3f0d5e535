package exec

import (
	"errors"
	"math"
	"testing"

	"github.com/moec-dev/moec/compiler/params"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/runtime/nn"
	"github.com/moec-dev/moec/runtime/optim"
)

// auxFreeVariants are DeepSeek-V3's MoE side with auxiliary-loss-free balancing (sigmoid
// scores, groups, a shared expert, routed_scale), and the plain top-k one beside it. The
// update rate is large so that the bias changes the choice within a few steps.
func auxFreeVariants() []moeVariant {
	return []moeVariant{
		{"aux_free_bias", func(m *program.Model) { m.MoE.AuxFreeBias = 0.05 }},
		{"deepseek-v3 MoE with aux_free_bias and groups", func(m *program.Model) {
			e := m.MoE
			e.Score, e.RoutedScale, e.SharedExperts, e.SharedHidden = program.Sigmoid, 2.5, 1, 8
			e.Groups, e.TopKGroups, e.AuxFreeBias = 2, 1, 0.05
		}},
	}
}

// TestAuxFreeBiasMatchesHandWrittenModel: with a selection bias moved off zero, one step
// program step gives runtime/nn's loss terms and gradients, and its prefill and decoding
// runtime/nn's logits (on one rank and under tp, ep and pp).
func TestAuxFreeBiasMatchesHandWrittenModel(t *testing.T) {
	variantsMatchHandWrittenModel(t, auxFreeVariants())
	variantsInfer(t, auxFreeVariants())
}

// TestAuxFreeBiasTrainsLikeHandWritten trains 8 steps on one rank through the step program
// and through runtime/nn with the trainer's AdamW and UpdateRouterBias: the losses agree at
// every step, and the selection biases after the last.
func TestAuxFreeBiasTrainsLikeHandWritten(t *testing.T) {
	const B, T, steps = 2, 8, 8
	for _, v := range auxFreeVariants() {
		t.Run(v.name, func(t *testing.T) {
			m := variantModel(t, v)
			net := variantNet(t, m)
			cfg := trainConfig(steps)
			tr := newTrainer(t, m, net, step.Layout{DP: 1, EP: 1, TP: 1, PP: 1}, step.Batch{MicroBatch: B, SeqLen: T, Micro: 1}, cfg)
			var ps []optim.Param
			for _, p := range net.Params() {
				ps = append(ps, optim.Param{Name: p.Name, Shape: p.Shape, W: p.W, G: p.G})
			}
			adam, err := optim.NewAdamW(cfg, ps)
			if err != nil {
				t.Fatal(err)
			}
			for s := int64(0); s < steps; s++ {
				toks := randomTokens(B, T, int(m.Vocab), 700+s)
				net.ZeroGrad()
				want, err := net.ForwardBackward(nn.Batch{B: B, T: T, Tokens: toks}, nn.StepOptions{Seed: 2, Step: s, Train: true})
				if err != nil {
					t.Fatal(err)
				}
				if _, err := adam.Step(1); err != nil {
					t.Fatal(err)
				}
				if err := net.UpdateRouterBias(want.ExpertTokens); err != nil {
					t.Fatal(err)
				}
				got, _ := tr.step(t, [][]int32{toks}, Options{Seed: 2, Step: s})
				if math.Abs(got-want.Loss) > 1e-5*math.Abs(want.Loss) {
					t.Errorf("step %d: loss %.7f, runtime/nn %.7f", s, got, want.Loss)
				}
			}
			moved := false
			for _, p := range net.Params() {
				if p.ID.Role != params.RoleRouterCorrection {
					continue
				}
				got := tr.exs[0].Param(p.ID)
				for e := range p.W {
					moved = moved || p.W[e] != 0
					if math.Abs(float64(got[e]-p.W[e])) > 1e-6 {
						t.Errorf("%s[%d] = %g, runtime/nn %g", p.Name, e, got[e], p.W[e])
					}
				}
			}
			if !moved {
				t.Error("no selection bias moved: the test does not exercise the update")
			}
		})
	}
}

// TestAuxFreeBiasLayoutsTrainAlike: under data and expert parallelism (where each replica
// routes its own tokens and the loads are summed over the replicas), ZeRO 1–3, an
// offloaded optimizer, tensor, sequence and pipeline parallelism, 8 steps train as one
// rank running the same micro-batches: the same loss at every step and the same selection
// biases after (assembled from the ranks' tensors or ZeRO-3 shards).
func TestAuxFreeBiasLayoutsTrainAlike(t *testing.T) {
	const mb, T, M, steps = 2, 8, 2, 8
	layouts := []step.Layout{
		{DP: 2, EP: 2, TP: 1, PP: 1},
		{DP: 2, EP: 1, TP: 1, PP: 1, ZeRO: 1},
		{DP: 2, EP: 2, TP: 1, PP: 1, ZeRO: 2},
		{DP: 2, EP: 2, TP: 1, PP: 1, ZeRO: 3},
		{DP: 1, EP: 1, TP: 1, PP: 1, OffloadOpt: true},
		{DP: 2, EP: 1, TP: 1, PP: 1, ZeRO: 1, OffloadOpt: true},
		{DP: 4, EP: 2, TP: 1, PP: 1, ZeRO: 3, OffloadOpt: true},
		{DP: 1, EP: 1, TP: 2, PP: 1},
		{DP: 2, EP: 2, TP: 2, PP: 1, SequenceParallel: true},
		{DP: 1, EP: 1, TP: 1, PP: 2},
		{DP: 1, EP: 1, TP: 1, PP: 1, Recompute: program.RecomputeFull},
	}
	v := auxFreeVariants()[1]
	for _, l := range layouts {
		t.Run(l.String(), func(t *testing.T) {
			m := variantModel(t, v)
			net := variantNet(t, m)
			cfg := trainConfig(steps)
			one := newTrainer(t, m, net, step.Layout{DP: 1, EP: 1, TP: 1, PP: 1}, step.Batch{MicroBatch: mb, SeqLen: T, Micro: l.DP * M}, cfg)
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
			walk, err := params.Walk(m)
			if err != nil {
				t.Fatal(err)
			}
			checked := 0
			for _, p := range walk {
				if p.ID.Role != params.RoleRouterCorrection {
					continue
				}
				checked++
				if e := relErr(trainedBias(many, p.ID, int(p.Elements())), one.exs[0].Param(p.ID)); e > 1e-6 {
					t.Errorf("%s differs from one rank's by %.3g", p.ID, e)
				}
			}
			if checked == 0 {
				t.Error("no selection bias checked")
			}
		})
	}
}

// TestAuxFreeBiasRefusedLayouts: under the unified cache, where the bias's update is not
// lowered, the step program says so (E0510).
func TestAuxFreeBiasRefusedLayouts(t *testing.T) {
	m := variantModel(t, auxFreeVariants()[0])
	b := step.Batch{MicroBatch: 2, SeqLen: 8, Micro: 1}
	for _, l := range []step.Layout{
		{DP: 2, EP: 2, TP: 1, PP: 1, ZeRO: 3, Cache: step.Cache{Budget: 1 << 30, Page: 4096}},
	} {
		_, err := step.Lower(m, b, l)
		var le *step.LayoutError
		if !errors.As(err, &le) || len(le.Unsupported) == 0 || le.Code() != diag.CodeNotLowered {
			t.Errorf("%s: %v, want the aux-free bias refused (E0510)", l, err)
		}
	}
}

// trainedBias is a selection bias as the ranks of tr hold it: whole, or under ZeRO-3
// gathered from the flat parameter shards.
func trainedBias(tr *trainer, id params.ID, n int) []float32 {
	out := make([]float32, n)
	for r, p := range tr.progs {
		ex := tr.exs[r]
		if w := ex.Param(id); w != nil {
			return w
		}
		for _, b := range p.Buffers {
			if b.Param == nil || *b.Param != id || b.Flat < 0 || (b.Kind != step.KindGrad && b.Kind != step.KindActGrad) {
				continue
			}
			g := groupFor(p, id)
			shard := ex.bufferNamed(step.KindParam, "params["+g.Name+"]")
			lo := int64(g.Index) * g.Shard
			for e := range out {
				if i := b.Flat + int64(e) - lo; i >= 0 && i < int64(len(shard)) {
					out[e] = shard[i]
				}
			}
		}
	}
	return out
}
