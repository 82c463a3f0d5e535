package exec

import (
	"math"
	"testing"
	"time"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/runtime/nn"
	"github.com/moec-dev/moec/runtime/safetensors"
)

// TestSelfDistillation: a student distilled from a teacher holding its own weights (no
// attention sharing, so training's forward is inference's) finds the teacher's soft
// targets equal to its own: the soft loss is zero and the cross-entropy is the plain
// program's, under one rank and under dp 2 × ep 2 with ZeRO 1, where each rank runs
// its own teacher on its replica's micro-batches.
func TestSelfDistillation(t *testing.T) {
	m := hunyuanTiny(t, 8)
	m.Attention.ShareWeights = 1
	net, err := nn.New(m, 3)
	if err != nil {
		t.Fatal(err)
	}
	var weights []safetensors.Tensor
	for _, p := range net.Params() {
		weights = append(weights, safetensors.Tensor{Name: p.Name, Shape: p.Shape, Data: p.W})
	}
	const mb, T, M = 2, 16, 2
	d := step.Distill{Temperature: 2, SoftWeight: 0.5, HardWeight: 0.5}
	for _, l := range []step.Layout{{DP: 1, EP: 1, TP: 1, PP: 1}, {DP: 2, EP: 2, TP: 1, PP: 1, ZeRO: 1}} {
		t.Run(l.String(), func(t *testing.T) {
			micro := make([][]int32, l.DP*M)
			for i := range micro {
				micro[i] = randomTokens(mb, T, int(m.Vocab), int64(40+i))
			}
			b := step.Batch{MicroBatch: mb, SeqLen: T, Micro: M}
			step1 := func(l step.Layout, teacher bool) Stats {
				lc, err := NewLocal(m, b, l, 20*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				if err := lc.Load(weights); err != nil {
					t.Fatal(err)
				}
				if teacher {
					if err := lc.SetTeacher(m, weights); err != nil {
						t.Fatal(err)
					}
				}
				st, err := lc.Step(micro, Options{Seed: 1, Step: 0})
				if err != nil {
					t.Fatal(err)
				}
				return st
			}
			plain := step1(l, false)
			dl := l
			dl.Distill = d
			got := step1(dl, true)
			if math.Abs(got.Distill) > 1e-9 {
				t.Errorf("soft loss %g against its own weights, want 0", got.Distill)
			}
			if got.CE != plain.CE {
				t.Errorf("cross-entropy %v, the plain program's %v", got.CE, plain.CE)
			}
			if want := 0.5*got.CE + 0.5*got.Distill + m.MoE.BalanceLoss*got.Balance + m.MoE.ZLoss*got.ZLoss; math.Abs(got.Loss-want) > 1e-12 {
				t.Errorf("loss %v, want %v", got.Loss, want)
			}
		})
	}
}

// TestDistillLowering: a distilling program reads one teacher_logits input per
// micro-batch into its distill_loss op, verifies, and is refused under tp > 1 (a
// vocabulary-parallel head splits the teacher's rows).
func TestDistillLowering(t *testing.T) {
	m := hunyuanTiny(t, 8)
	m.Attention.TalkingHeads, m.Attention.ShareWeights, m.MoE.Router = false, 1, program.RouteHidden
	b := step.Batch{MicroBatch: 2, SeqLen: 16, Micro: 3}
	d := step.Distill{Temperature: 2, SoftWeight: 0.5, HardWeight: 0.5}
	progs, err := step.Lower(m, b, step.Layout{DP: 1, EP: 1, TP: 1, PP: 1, Distill: d})
	if err != nil {
		t.Fatal(err)
	}
	p := progs[0]
	if err := step.Verify(p); err != nil {
		t.Fatal(err)
	}
	inputs, losses := 0, 0
	for _, buf := range p.Buffers {
		if _, name := microOf(buf.Name); name == "teacher_logits" && buf.Kind == step.KindInput {
			inputs++
		}
	}
	for _, op := range p.Ops {
		switch op.Kind {
		case step.OpDistillLoss:
			losses++
			if op.Distill != d {
				t.Errorf("distill_loss carries %v", op.Distill)
			}
		case step.OpCrossEntropy:
			t.Errorf("a distilling program runs cross_entropy")
		}
	}
	if inputs != b.Micro || losses != b.Micro {
		t.Errorf("%d teacher inputs and %d distill_loss ops for %d micro-batches", inputs, losses, b.Micro)
	}
	_, err = step.Lower(m, b, step.Layout{DP: 1, EP: 1, TP: 2, PP: 1, Distill: d})
	if le, ok := err.(*step.LayoutError); !ok || len(le.Unsupported) != 1 || le.Unsupported[0].Feature != "distillation" {
		t.Errorf("tp 2: %v, want distillation refused", err)
	}
}
