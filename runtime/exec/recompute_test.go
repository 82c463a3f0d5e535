package exec

import (
	"testing"
	"time"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/runtime/nn"
)

// TestRecomputeFull: with recompute = full each layer's forward runs again before its
// backward, so the losses and gradients are the same bits as keeping every activation,
// while the arena's peak is lower. hunyuan_tiny's eight-expert stage on one rank (talking
// heads, sharing, token routing) and the plain model at tp 2 × pp 2 with ZeRO-3 over dp.
func TestRecomputeFull(t *testing.T) {
	plain := func(m *program.Model) {
		m.Attention.TalkingHeads, m.Attention.ShareWeights, m.MoE.Router = false, 1, program.RouteHidden
	}
	for _, c := range []struct {
		name   string
		edit   func(*program.Model)
		layout step.Layout
	}{
		{"one rank", func(*program.Model) {}, step.Layout{DP: 1, EP: 1, TP: 1, PP: 1}},
		{"dp2 tp2 pp2 zero3", plain, step.Layout{DP: 2, EP: 2, TP: 2, PP: 2, ZeRO: 3}},
		{"tp2 pp2 sp", plain, step.Layout{DP: 1, EP: 1, TP: 2, PP: 2, SequenceParallel: true}},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := hunyuanTiny(t, 8)
			moe := *m.MoE
			m.MoE = &moe
			c.edit(m)
			net, err := nn.New(m, 6)
			if err != nil {
				t.Fatal(err)
			}
			b := step.Batch{MicroBatch: 2, SeqLen: 32, Micro: 2}
			run := func(l step.Layout) (Stats, *Local) {
				lc, err := NewLocal(m, b, l, 10*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				if err := lc.Load(tensorsOf(net)); err != nil {
					t.Fatal(err)
				}
				micro := make([][]int32, 2*l.DP)
				for k := range micro {
					micro[k] = randomTokens(2, 32, int(m.Vocab), int64(k))
				}
				st, err := lc.Step(micro, Options{Seed: 4, Step: 3})
				if err != nil {
					t.Fatal(err)
				}
				return st, lc
			}
			keep, a := run(c.layout)
			l := c.layout
			l.Recompute = program.RecomputeFull
			re, b2 := run(l)
			if keep.Loss != re.Loss || keep.Balance != re.Balance || keep.Dropped != re.Dropped {
				t.Fatalf("loss %v balance %v dropped %d with recompute; %v %v %d without", re.Loss, re.Balance, re.Dropped, keep.Loss, keep.Balance, keep.Dropped)
			}
			for r := range a.Ranks {
				for id, g := range a.Ranks[r].grad {
					want, got := a.Ranks[r].f32[g], b2.Ranks[r].Grad(id)
					if want == nil || a.Progs[r].Buffers[g].Kind != step.KindGrad {
						continue
					}
					for k := range want {
						if want[k] != got[k] {
							t.Errorf("rank %d: gradient of %s differs at %d: %v with recompute, %v without", r, id, k, got[k], want[k])
							break
						}
					}
				}
				if err := step.Verify(b2.Progs[r]); err != nil {
					t.Fatal(err)
				}
			}
			before, after := a.Progs[0].Memory.Peak[step.Device], b2.Progs[0].Memory.Peak[step.Device]
			t.Logf("peak live bytes on rank 0: %d keeping every activation, %d recomputing (%.2f)", before, after, float64(after)/float64(before))
			if after >= before {
				t.Errorf("recompute does not lower the peak: %d vs %d", after, before)
			}
		})
	}
}

// TestRecomputeSelective: with recompute = selective the backward computes the attention
// core (scores, talking-heads mixers, softmax, the sharing select) again just before its
// use in AV's backward, so the losses and gradients are the same bits as keeping every
// activation; the activation peak lies between keeping everything and recompute = full.
func TestRecomputeSelective(t *testing.T) {
	plain := func(m *program.Model) {
		m.Attention.TalkingHeads, m.Attention.ShareWeights, m.MoE.Router = false, 1, program.RouteHidden
	}
	for _, c := range []struct {
		name   string
		edit   func(*program.Model)
		layout step.Layout
	}{
		{"one rank", func(*program.Model) {}, step.Layout{DP: 1, EP: 1, TP: 1, PP: 1}},
		{"dp2 tp2 pp2 zero3", plain, step.Layout{DP: 2, EP: 2, TP: 2, PP: 2, ZeRO: 3}},
		{"tp2 sp", plain, step.Layout{DP: 1, EP: 1, TP: 2, PP: 1, SequenceParallel: true}},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := hunyuanTiny(t, 8)
			moe := *m.MoE
			m.MoE = &moe
			c.edit(m)
			net, err := nn.New(m, 6)
			if err != nil {
				t.Fatal(err)
			}
			b := step.Batch{MicroBatch: 2, SeqLen: 32, Micro: 2}
			run := func(mode program.Recompute) (Stats, *Local) {
				l := c.layout
				l.Recompute = mode
				lc, err := NewLocal(m, b, l, 10*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				if err := lc.Load(tensorsOf(net)); err != nil {
					t.Fatal(err)
				}
				micro := make([][]int32, 2*l.DP)
				for k := range micro {
					micro[k] = randomTokens(2, 32, int(m.Vocab), int64(k))
				}
				st, err := lc.Step(micro, Options{Seed: 4, Step: 3})
				if err != nil {
					t.Fatal(err)
				}
				if err := step.VerifyLayout(lc.Progs); err != nil {
					t.Fatal(err)
				}
				return st, lc
			}
			keep, a := run(program.RecomputeNone)
			sel, s := run(program.RecomputeSelective)
			_, f := run(program.RecomputeFull)
			if keep.Loss != sel.Loss || keep.Balance != sel.Balance || keep.Dropped != sel.Dropped {
				t.Fatalf("loss %v balance %v dropped %d recomputing the attention core; %v %v %d without", sel.Loss, sel.Balance, sel.Dropped, keep.Loss, keep.Balance, keep.Dropped)
			}
			recomputed := 0
			for _, op := range s.Progs[0].Ops {
				if op.Recomputed {
					recomputed++
					if op.Kind != step.OpScores && op.Kind != step.OpSoftmax && op.Kind != step.OpHeadMix && op.Kind != "share_select" {
						t.Errorf("selective recompute runs %s again", op.Kind)
					}
				}
			}
			if recomputed == 0 {
				t.Error("selective recompute runs nothing again")
			}
			for r := range a.Ranks {
				for id, g := range a.Ranks[r].grad {
					want, got := a.Ranks[r].f32[g], s.Ranks[r].Grad(id)
					if want == nil || a.Progs[r].Buffers[g].Kind != step.KindGrad {
						continue
					}
					for k := range want {
						if want[k] != got[k] {
							t.Errorf("rank %d: gradient of %s differs at %d: %v recomputing the attention core, %v without", r, id, k, got[k], want[k])
							break
						}
					}
				}
			}
			none, selective, full := activationPeak(a.Progs[0]), activationPeak(s.Progs[0]), activationPeak(f.Progs[0])
			t.Logf("rank 0 activation peak: none %d, selective %d (%.2f), full %d (%.2f); device peak %d, %d, %d", none, selective, float64(selective)/float64(none),
				full, float64(full)/float64(none), a.Progs[0].Memory.Peak[step.Device], s.Progs[0].Memory.Peak[step.Device], f.Progs[0].Memory.Peak[step.Device])
			if !(full < selective && selective < none) {
				t.Errorf("activation peaks: none %d, selective %d, full %d; want none > selective > full", none, selective, full)
			}
		})
	}
}
