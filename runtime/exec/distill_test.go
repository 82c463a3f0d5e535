package exec

import (
	"math"
	"testing"
	"time"

	"github.com/moec-dev/moec/compiler/params"
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
// micro-batch into its distill_loss op and verifies; under tp 2 each rank reads its slice
// of the vocabulary and the loss runs in four passes between three all-reduces over tp
// (the maxima, the sums, the KL's cross terms), which every rank of the group runs in the
// same order.
func TestDistillLowering(t *testing.T) {
	m := hunyuanTiny(t, 8)
	m.Attention.TalkingHeads, m.Attention.ShareWeights, m.MoE.Router = false, 1, program.RouteHidden
	b := step.Batch{MicroBatch: 2, SeqLen: 16, Micro: 3}
	d := step.Distill{Temperature: 2, SoftWeight: 0.5, HardWeight: 0.5}
	for _, l := range []step.Layout{{DP: 1, EP: 1, TP: 1, PP: 1, Distill: d}, {DP: 1, EP: 1, TP: 2, PP: 1, Distill: d}} {
		t.Run(l.String(), func(t *testing.T) {
			progs, err := step.Lower(m, b, l)
			if err != nil {
				t.Fatal(err)
			}
			if err := step.VerifyLayout(progs); err != nil {
				t.Fatal(err)
			}
			p := progs[0]
			if err := step.Verify(p); err != nil {
				t.Fatal(err)
			}
			inputs, losses, passes, reductions := 0, 0, 0, 0
			for _, buf := range p.Buffers {
				if _, name := microOf(buf.Name); name == "teacher_logits" && buf.Kind == step.KindInput {
					inputs++
					if want := int(m.Vocab) / l.TP; buf.Shape[1] != want {
						t.Errorf("%s holds %d columns, want the rank's %d", buf.Name, buf.Shape[1], want)
					}
				}
			}
			inLoss := false // between a micro-batch's first distill_loss pass and its loss
			for _, op := range p.Ops {
				switch op.Kind {
				case step.OpDistillLoss:
					if op.Distill != d {
						t.Errorf("distill_loss carries %v", op.Distill)
					}
					if len(op.Out) == 2 {
						losses++
						inLoss = false
					} else {
						passes++
						inLoss = true
					}
				case step.OpAllReduce:
					if inLoss {
						reductions++
						if op.Group != "tp" {
							t.Errorf("the loss's all-reduce runs over %s", op.Group)
						}
					}
				case step.OpCrossEntropy:
					t.Errorf("a distilling program runs cross_entropy")
				}
			}
			wantPasses := 0
			if l.TP > 1 {
				wantPasses = 3 * b.Micro
			}
			if inputs != b.Micro || losses != b.Micro || passes != wantPasses || reductions != wantPasses {
				t.Errorf("%d teacher inputs, %d distill_loss ops, %d passes before them and %d all-reduces between for %d micro-batches",
					inputs, losses, passes, reductions, b.Micro)
			}
		})
	}
}

// TestDistillTensorParallel trains a distillation stage for several steps under tp 2,
// tp 2 with sequence parallelism, pp 2 × tp 2 and dp 2 × ep 2 × tp 2, and holds every
// step's loss, cross-entropy and soft loss, and the first step's reduced gradient of every
// parameter, to one rank running the same micro-batches: the vocabulary-parallel distill_loss computes
// what the fused one does. The teacher is hunyuan_tiny as shipped (talking heads, which tp
// does not lower): every tp rank runs it whole and takes its slice.
func TestDistillTensorParallel(t *testing.T) {
	const mb, T, M, steps = 2, 16, 2, 4
	teacherModel := hunyuanTiny(t, 8)
	tnet, err := nn.New(teacherModel, 11)
	if err != nil {
		t.Fatal(err)
	}
	var teacher []safetensors.Tensor
	for _, p := range tnet.Params() {
		teacher = append(teacher, safetensors.Tensor{Name: p.Name, Shape: p.Shape, Data: p.W})
	}
	m := hunyuanTiny(t, 8)
	moe := *m.MoE
	m.MoE = &moe
	m.Attention.TalkingHeads, m.Attention.ShareWeights, m.MoE.Router = false, 1, program.RouteHidden
	net, err := nn.New(m, 4)
	if err != nil {
		t.Fatal(err)
	}
	var weights []safetensors.Tensor
	for _, p := range net.Params() {
		weights = append(weights, safetensors.Tensor{Name: p.Name, Shape: p.Shape, Data: p.W})
	}
	walk, err := params.Walk(m)
	if err != nil {
		t.Fatal(err)
	}
	d := step.Distill{Temperature: 2, SoftWeight: 0.7, HardWeight: 0.3}
	start := func(l step.Layout, b step.Batch) *Local {
		l.Distill = d
		lc, err := NewLocal(m, b, l, 20*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if err := lc.Load(weights); err != nil {
			t.Fatal(err)
		}
		if err := lc.SetOptimizer(trainConfig(steps)); err != nil {
			t.Fatal(err)
		}
		if err := lc.SetTeacher(teacherModel, teacher); err != nil {
			t.Fatal(err)
		}
		return lc
	}
	grads := func(lc *Local) map[params.ID][]float32 {
		progs := make([]*step.Program, len(lc.Ranks))
		for r, ex := range lc.Ranks {
			progs[r] = ex.p
		}
		return assemble(t, progs, lc.Ranks, walk)
	}
	for _, l := range []step.Layout{
		{DP: 1, EP: 1, TP: 2, PP: 1},
		{DP: 1, EP: 1, TP: 2, PP: 1, SequenceParallel: true},
		{DP: 1, EP: 1, TP: 2, PP: 2},
		{DP: 2, EP: 2, TP: 2, PP: 1, ZeRO: 1},
	} {
		t.Run(l.String(), func(t *testing.T) {
			one := start(step.Layout{DP: 1, EP: 1, TP: 1, PP: 1}, step.Batch{MicroBatch: mb, SeqLen: T, Micro: l.DP * M})
			many := start(l, step.Batch{MicroBatch: mb, SeqLen: T, Micro: M})
			for s := int64(0); s < steps; s++ {
				micro := make([][]int32, l.DP*M)
				for i := range micro {
					micro[i] = randomTokens(mb, T, int(m.Vocab), 1000*s+int64(i))
				}
				o := Options{Seed: 3, Step: s}
				want, err := one.Step(micro, o)
				if err != nil {
					t.Fatal(err)
				}
				got, err := many.Step(micro, o)
				if err != nil {
					t.Fatal(err)
				}
				for _, x := range []struct {
					what      string
					got, want float64
				}{{"loss", got.Loss, want.Loss}, {"cross-entropy", got.CE, want.CE}, {"soft loss", got.Distill, want.Distill}} {
					if math.Abs(x.got-x.want) > 1e-5*math.Abs(x.want) {
						t.Errorf("step %d: %s %.9g, one rank %.9g", s, x.what, x.got, x.want)
					}
				}
				if want.Distill < 1e-3 {
					t.Fatalf("step %d: soft loss %g: the teacher does not differ from the student", s, want.Distill)
				}
				if s == 0 {
					// The first step's gradients, on the same weights (later steps' weights
					// differ by the updates' rounding, as any two layouts' do).
					worst, worstID := 0.0, params.ID{}
					ref := grads(one)
					for id, g := range grads(many) {
						if e := relErr(g, ref[id]); e > worst {
							worst, worstID = e, id
						}
					}
					if worst > 1e-5 {
						t.Errorf("gradient of %s differs from one rank's by %.3g (relative)", worstID, worst)
					}
					t.Logf("step 0: worst gradient error %.2g (%s)", worst, worstID)
				}
				if s == steps-1 {
					t.Logf("step %d: loss %.7f (one rank %.7f), soft loss %.7f (%.7f)", s, got.Loss, want.Loss, got.Distill, want.Distill)
				}
			}
		})
	}
}
