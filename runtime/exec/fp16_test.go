package exec

import (
	"math"
	"sync"
	"testing"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/runtime/nn"
)

// runStats runs one step on every rank of tr and returns rank 0's stats.
func (tr *trainer) runStats(t *testing.T, micro [][]int32, o Options) Stats {
	t.Helper()
	stats := make([]Stats, len(tr.exs))
	errs := make([]error, len(tr.exs))
	var wg sync.WaitGroup
	for r := range tr.exs {
		wg.Add(1)
		go func(r int) {
			defer wg.Done()
			c, b := tr.progs[r].Coord, tr.progs[r].Batch
			stats[r], errs[r] = tr.exs[r].Run(micro[c.DP*b.Micro:(c.DP+1)*b.Micro], o)
			if errs[r] != nil {
				tr.world.Fail(errs[r])
			}
		}(r)
	}
	wg.Wait()
	for r, err := range errs {
		if err != nil {
			t.Fatalf("rank %d: %v", r, err)
		}
	}
	return stats[0]
}

// TestLossScaleIsExact trains hunyuan_tiny's eight-expert stage (cross-entropy, balance
// and z-loss gradients) 4 steps with float32 products, unscaled and with a loss scale of
// 2¹², on one rank, on two ZeRO-1 replicas with expert parallelism, and under tp 2 (the
// vocabulary-parallel loss) and pp 2 (the loss on the last stage): a power-of-two scale commutes with every
// float32 rounding of the backward, so the unscaled update sees the same gradients and the
// runs agree bit for bit (weights, norms and losses). It fails where a loss gradient is
// left unscaled (the routing terms'), or the update does not unscale.
func TestLossScaleIsExact(t *testing.T) {
	const mb, T, steps = 2, 16, 4
	for _, l := range []step.Layout{{DP: 1, EP: 1, TP: 1, PP: 1}, {DP: 2, EP: 2, TP: 1, PP: 1, ZeRO: 1},
		{DP: 1, EP: 1, TP: 2, PP: 1}, {DP: 1, EP: 1, TP: 1, PP: 2}} {
		t.Run(l.String(), func(t *testing.T) {
			m := hunyuanTiny(t, 8)
			if l.TP > 1 || l.PP > 1 { // what tp and pp lower (TestLayoutsTrainAlike's plain model)
				moe := *m.MoE
				m.MoE = &moe
				m.Attention.TalkingHeads = false
				m.Attention.ShareWeights = 1
				m.MoE.Router = program.RouteHidden
			}
			net, err := nn.New(m, 5)
			if err != nil {
				t.Fatal(err)
			}
			cfg := trainConfig(steps)
			b := step.Batch{MicroBatch: mb / l.DP, SeqLen: T, Micro: 1}
			plain, scaled := newTrainer(t, m, net, l, b, cfg), newTrainer(t, m, net, l, b, cfg)
			for s := int64(0); s < steps; s++ {
				micro := make([][]int32, l.DP)
				for i := range micro {
					micro[i] = randomTokens(mb/l.DP, T, int(m.Vocab), 70*s+int64(i))
				}
				want := plain.runStats(t, micro, Options{Seed: 1, Step: s})
				got := scaled.runStats(t, micro, Options{Seed: 1, Step: s, LossScale: 1 << 12})
				if got.Skipped || got.CE != want.CE || got.GradNorm != want.GradNorm {
					t.Errorf("step %d: scaled CE %v, norm %v (skipped %v); unscaled %v, %v", s, got.CE, got.GradNorm, got.Skipped, want.CE, want.GradNorm)
				}
			}
			for _, p := range net.Params() {
				for r := range plain.exs {
					w, g := plain.exs[r].Param(p.ID), scaled.exs[r].Param(p.ID)
					if w == nil {
						continue // another rank's expert, stage or slice
					}
					for i := range w {
						if math.Float32bits(w[i]) != math.Float32bits(g[i]) {
							t.Fatalf("rank %d %s[%d]: %v with the loss scale, %v without", r, p.ID, i, g[i], w[i])
						}
					}
				}
			}
		})
	}
}

// TestFP16OverflowSkipsTheStep: with half products a loss scale of 2⁴⁰ overflows the
// scaled gradients where the products round them (past 65504), so the step is skipped —
// weights and optimizer count untouched, no error — while float32 products take the same
// scale in their stride; a scale of 2⁸ then trains.
func TestFP16OverflowSkipsTheStep(t *testing.T) {
	const mb, T = 2, 16
	m := hunyuanTiny(t, 4)
	net, err := nn.New(m, 6)
	if err != nil {
		t.Fatal(err)
	}
	l := step.Layout{DP: 1, EP: 1, TP: 1, PP: 1}
	b := step.Batch{MicroBatch: mb, SeqLen: T, Micro: 1}
	micro := [][]int32{randomTokens(mb, T, int(m.Vocab), 9)}
	snapshot := func(tr *trainer) [][]float32 {
		var out [][]float32
		for _, p := range net.Params() {
			out = append(out, append([]float32(nil), tr.exs[0].Param(p.ID)...))
		}
		return out
	}
	changed := func(a, b [][]float32) bool {
		for i := range a {
			for j := range a[i] {
				if math.Float32bits(a[i][j]) != math.Float32bits(b[i][j]) {
					return true
				}
			}
		}
		return false
	}

	fp32 := newTrainer(t, m, net, l, b, trainConfig(4))
	if st := fp32.runStats(t, micro, Options{Seed: 1, LossScale: 1 << 40}); st.Skipped {
		t.Errorf("float32 products skipped the step at a loss scale of 2⁴⁰ (norm %v)", st.GradNorm)
	}

	fp16 := newTrainer(t, m, net, l, b, trainConfig(4))
	fp16.exs[0].SetFP16Products(true)
	before := snapshot(fp16)
	st := fp16.runStats(t, micro, Options{Seed: 1, LossScale: 1 << 40})
	if !st.Skipped {
		t.Fatalf("half products at a loss scale of 2⁴⁰: not skipped (norm %v)", st.GradNorm)
	}
	if changed(before, snapshot(fp16)) || fp16.exs[0].opt.StepCount() != 0 {
		t.Fatalf("the skipped step changed the weights or counted an update (%d)", fp16.exs[0].opt.StepCount())
	}
	st = fp16.runStats(t, micro, Options{Seed: 1, Step: 1, LossScale: 1 << 8})
	if st.Skipped || math.IsNaN(st.GradNorm) || st.GradNorm == 0 {
		t.Fatalf("half products at a loss scale of 2⁸: skipped %v, norm %v", st.Skipped, st.GradNorm)
	}
	if !changed(before, snapshot(fp16)) || fp16.exs[0].opt.StepCount() != 1 {
		t.Fatalf("the step after the overflow did not update (count %d)", fp16.exs[0].opt.StepCount())
	}
}
