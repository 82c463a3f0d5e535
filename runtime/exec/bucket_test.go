package exec

import (
	"math"
	"testing"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/runtime/nn"
)

// TestBucketedReductionIsBitEqual runs one step of each layout with the data-parallel
// gradient all-reduces in buckets during the last backward (the default) and with one
// all-reduce per group after it (GradBucket < 0): the losses and every reduced gradient
// must be equal to the bit, since the buckets sum the same values in the same order. The
// layouts cover the expert group (edp), ZeRO 1 and 2, pipeline stages with a tied
// embedding, and the reductions that keep their gradients at the end (sequence
// parallelism, per-head q/k norms under tp).
func TestBucketedReductionIsBitEqual(t *testing.T) {
	plain := func(m *program.Model) {
		m.Attention.TalkingHeads = false
		m.Attention.ShareWeights = 1
		if m.MoE != nil {
			m.MoE.Router = program.RouteHidden
		}
	}
	cases := []struct {
		name   string
		edit   func(m *program.Model)
		layout step.Layout
	}{
		{"dp2 ep2", func(*program.Model) {}, step.Layout{DP: 2, EP: 2, TP: 1, PP: 1}},
		{"dp4 ep2 zero1", func(*program.Model) {}, step.Layout{DP: 4, EP: 2, TP: 1, PP: 1, ZeRO: 1}},
		{"dp2 zero2", func(*program.Model) {}, step.Layout{DP: 2, EP: 1, TP: 1, PP: 1, ZeRO: 2}},
		{"pp2 dp2 zero1 tied", func(m *program.Model) { plain(m); m.TieEmbeddings = true }, step.Layout{DP: 2, EP: 1, TP: 1, PP: 2, ZeRO: 1}},
		{"dp2 tp2 sp qk-norm", func(m *program.Model) { plain(m); m.Attention.QKNorm = true }, step.Layout{DP: 2, EP: 1, TP: 2, PP: 1, SequenceParallel: true}},
	}
	const mb, T, M = 2, 16, 2
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := hunyuanTiny(t, 8)
			moe := *m.MoE
			m.MoE = &moe
			c.edit(m)
			net, err := nn.New(m, 3)
			if err != nil {
				t.Fatal(err)
			}
			micro := make([][]int32, c.layout.DP*M)
			for i := range micro {
				micro[i] = randomTokens(mb, T, int(m.Vocab), int64(200+i))
			}
			b := step.Batch{MicroBatch: mb, SeqLen: T, Micro: M}
			bucketed, err := step.Lower(m, b, c.layout)
			if err != nil {
				t.Fatal(err)
			}
			early := 0
			for _, op := range bucketed[0].Ops {
				if op.Phase == step.Reduce && op.Kind == step.OpAllReduce && op.Micro == -1 && op.Layer >= 0 {
					early++
				}
			}
			if c.layout.ZeRO < 2 && early == 0 {
				t.Fatalf("%s: no gradient all-reduce placed in the backward", c.layout)
			}
			atEnd := c.layout
			atEnd.GradBucket = -1
			o := Options{Seed: 9, Step: 1}
			got := runPrograms(t, m, net, bucketed, b, micro, o)
			want := runLayout(t, m, net, atEnd, b, micro, o)
			if got.ce != want.ce || got.balance != want.balance || got.zloss != want.zloss {
				t.Errorf("losses %v %v %v in buckets, %v %v %v after the backward", got.ce, got.balance, got.zloss, want.ce, want.balance, want.zloss)
			}
			for id, w := range want.grads {
				g := got.grads[id]
				for i := range w {
					if math.Float32bits(g[i]) != math.Float32bits(w[i]) {
						t.Errorf("gradient of %s differs at %d: %v in buckets, %v after the backward", id, i, g[i], w[i])
						break
					}
				}
			}
			t.Logf("%d bucket all-reduces in rank 0's backward; CE %.7f", early, got.ce)
		})
	}
}

// TestBucketedTrainingIsBitEqual trains three steps with the optimizer, gradients in
// buckets beside the backward and after it, and holds every step's loss and gradient
// norm, and at the end every rank's weights and AdamW moments, equal to the bit.
func TestBucketedTrainingIsBitEqual(t *testing.T) {
	const mb, T, M, steps = 2, 16, 2, 3
	cases := []struct {
		name   string
		layout step.Layout
	}{
		{"dp2 ep2 zero1", step.Layout{DP: 2, EP: 2, TP: 1, PP: 1, ZeRO: 1}},
		{"dp2 zero1 offload", step.Layout{DP: 2, EP: 1, TP: 1, PP: 1, ZeRO: 1, OffloadOpt: true}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := hunyuanTiny(t, 8)
			net, err := nn.New(m, 4)
			if err != nil {
				t.Fatal(err)
			}
			cfg := trainConfig(steps)
			b := step.Batch{MicroBatch: mb, SeqLen: T, Micro: M}
			atEnd := c.layout
			atEnd.GradBucket = -1
			bucketed := newTrainer(t, m, net, c.layout, b, cfg)
			after := newTrainer(t, m, net, atEnd, b, cfg)
			for s := int64(0); s < steps; s++ {
				micro := make([][]int32, c.layout.DP*M)
				for i := range micro {
					micro[i] = randomTokens(mb, T, int(m.Vocab), 3000*s+int64(i))
				}
				gotLoss, gotNorm := bucketed.step(t, micro, Options{Seed: 3, Step: s})
				wantLoss, wantNorm := after.step(t, micro, Options{Seed: 3, Step: s})
				if gotLoss != wantLoss || gotNorm != wantNorm {
					t.Errorf("step %d: loss %v norm %v in buckets, %v %v after the backward", s, gotLoss, gotNorm, wantLoss, wantNorm)
				}
			}
			compared := 0
			for r, ex := range bucketed.exs {
				other := after.exs[r]
				for i, buf := range ex.p.Buffers {
					if buf.Kind != step.KindParam && buf.Kind != step.KindOptimizer || ex.f32[i] == nil {
						continue
					}
					compared++
					for j, w := range other.f32[i] {
						if math.Float32bits(ex.f32[i][j]) != math.Float32bits(w) {
							t.Errorf("rank %d: %s differs at %d: %v in buckets, %v after the backward", r, buf.Name, j, ex.f32[i][j], w)
							break
						}
					}
				}
			}
			if compared == 0 {
				t.Fatal("no weights compared")
			}
		})
	}
}
