package exec

import (
	"fmt"
	"testing"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/runtime/nn"
)

// TestEvaluationProgram: the forward-only program of every layout computes the training
// step's forward losses bit for bit, from an arena no larger than the training program's
// activations need (smaller wherever more than one layer's values were kept), and holds
// no gradient or optimizer state.
func TestEvaluationProgram(t *testing.T) {
	plain := func(m *program.Model) {
		m.Attention.TalkingHeads = false
		m.Attention.ShareWeights = 1
		m.MoE.Router = program.RouteHidden
	}
	cases := []struct {
		name   string
		edit   func(*program.Model)
		layout step.Layout
	}{
		{"one rank", func(*program.Model) {}, step.Layout{DP: 1, EP: 1, TP: 1, PP: 1}},
		{"one rank recompute full", func(*program.Model) {}, step.Layout{DP: 1, EP: 1, TP: 1, PP: 1, Recompute: program.RecomputeFull}},
		{"dp2 ep2 zero3", func(*program.Model) {}, step.Layout{DP: 2, EP: 2, TP: 1, PP: 1, ZeRO: 3}},
		{"dp2 ep2", func(*program.Model) {}, step.Layout{DP: 2, EP: 2, TP: 1, PP: 1}},
		{"dp2 zero3", func(*program.Model) {}, step.Layout{DP: 2, EP: 1, TP: 1, PP: 1, ZeRO: 3}},
		{"dp2", func(*program.Model) {}, step.Layout{DP: 2, EP: 1, TP: 1, PP: 1}},
		{"tp2 sp", plain, step.Layout{DP: 1, EP: 1, TP: 2, PP: 1, SequenceParallel: true}},
		{"pp2", plain, step.Layout{DP: 1, EP: 1, TP: 1, PP: 2}},
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
			b := step.Batch{MicroBatch: mb, SeqLen: T, Micro: M}
			micro := make([][]int32, c.layout.DP*M)
			for i := range micro {
				micro[i] = randomTokens(mb, T, int(m.Vocab), int64(200+i))
			}
			progs, err := step.Lower(m, b, c.layout)
			if err != nil {
				t.Fatal(err)
			}
			evals := make([]*step.Program, len(progs))
			for r, p := range progs {
				if evals[r], err = step.Evaluation(p); err != nil {
					t.Fatal(err)
				}
				ev := evals[r]
				for _, buf := range ev.Buffers {
					if buf.Kind == step.KindGrad || buf.Kind == step.KindOptimizer || buf.Kind == step.KindActGrad {
						t.Errorf("rank %d: evaluation program holds %s buffer %s", r, buf.Kind, buf.Name)
					}
				}
				for _, op := range ev.Ops {
					if op.Phase != step.Forward || op.Recomputed {
						t.Fatalf("rank %d: evaluation program runs %s op %s", r, op.Phase, op.Kind)
					}
				}
				act := ev.Memory.Arena[step.Device] - ev.Memory.Persistent[step.Device]
				trainAct := p.Memory.Arena[step.Device] - p.Memory.Persistent[step.Device]
				if act >= trainAct {
					t.Errorf("rank %d: evaluation arena holds %d bytes besides the parameters, the training program's %d", r, act, trainAct)
				}
			}
			o := Options{Seed: 9, Step: 1}
			want := runPrograms(t, m, net, progs, b, micro, o)
			got := runPrograms(t, m, net, evals, b, micro, o)
			for _, x := range []struct {
				what      string
				got, want float64
			}{{"CE", got.ce, want.ce}, {"balance", got.balance, want.balance}, {"z-loss", got.zloss, want.zloss}} {
				if x.got != x.want {
					t.Errorf("%s: evaluation %s, training forward %s", x.what, fmt.Sprint(x.got), fmt.Sprint(x.want))
				}
			}
		})
	}
}
