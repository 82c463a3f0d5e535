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

// TestGapLayoutsTrainAlike: the layouts lowered last (tied embeddings under pipeline
// parallelism) train as one rank does. One step's reduced gradients equal one rank's;
// over several steps with the optimizer (clipping by the global norm) every step's loss
// and gradient norm equal one rank's; and the checkpoint assembled from the ranks equals
// one rank's, parameters and moments.
func TestGapLayoutsTrainAlike(t *testing.T) {
	const mb, T, M, steps = 2, 16, 2, 6
	tied := func(m *program.Model) {
		m.Attention.TalkingHeads = false
		m.Attention.ShareWeights = 1
		m.MoE.Router = program.RouteHidden
		m.TieEmbeddings = true
	}
	cases := []struct {
		name   string
		edit   func(*program.Model)
		layout step.Layout
	}{
		{"tied pp2", tied, step.Layout{DP: 1, EP: 1, TP: 1, PP: 2}},
		{"tied pp2 dp2", tied, step.Layout{DP: 2, EP: 1, TP: 1, PP: 2}},
		{"tied pp2 dp2 zero2", tied, step.Layout{DP: 2, EP: 1, TP: 1, PP: 2, ZeRO: 2}},
		{"tied pp2 tp2", tied, step.Layout{DP: 1, EP: 1, TP: 2, PP: 2}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := hunyuanTiny(t, 8)
			moe := *m.MoE
			m.MoE = &moe
			c.edit(m)
			net, err := nn.New(m, 4)
			if err != nil {
				t.Fatal(err)
			}
			one := step.Layout{DP: 1, EP: 1, TP: 1, PP: 1}
			oneBatch := step.Batch{MicroBatch: mb, SeqLen: T, Micro: c.layout.DP * M}
			batch := step.Batch{MicroBatch: mb, SeqLen: T, Micro: M}

			// One step's gradients, assembled from the ranks that hold them.
			micro := make([][]int32, c.layout.DP*M)
			for i := range micro {
				micro[i] = randomTokens(mb, T, int(m.Vocab), int64(300+i))
			}
			ref := runLayout(t, m, net, one, oneBatch, micro, Options{Seed: 5, Step: 1})
			got := runLayout(t, m, net, c.layout, batch, micro, Options{Seed: 5, Step: 1})
			for id, want := range ref.grads {
				if e := relErr(got.grads[id], want); e > 1e-5 {
					t.Errorf("gradient of %s differs from one rank's by %.3g (relative)", id, e)
				}
			}

			// Several steps with the optimizer, then the assembled checkpoint.
			var ts []safetensors.Tensor
			for _, p := range net.Params() {
				ts = append(ts, safetensors.Tensor{Name: p.Name, Shape: p.Shape, Data: p.W})
			}
			cfg := trainConfig(steps)
			start := func(l step.Layout, b step.Batch) *Local {
				lc, err := NewLocal(m, b, l, 20*time.Second)
				if err != nil {
					t.Fatalf("%s: %v", l, err)
				}
				if err := lc.Load(ts); err != nil {
					t.Fatal(err)
				}
				if err := lc.SetOptimizer(cfg); err != nil {
					t.Fatal(err)
				}
				return lc
			}
			a, b := start(one, oneBatch), start(c.layout, batch)
			for s := int64(0); s < steps; s++ {
				for i := range micro {
					micro[i] = randomTokens(mb, T, int(m.Vocab), 1000*s+int64(i))
				}
				want, err := a.Step(micro, Options{Seed: 3, Step: s})
				if err != nil {
					t.Fatal(err)
				}
				got, err := b.Step(micro, Options{Seed: 3, Step: s})
				if err != nil {
					t.Fatal(err)
				}
				if math.Abs(got.Loss-want.Loss) > 1e-5*math.Abs(want.Loss) {
					t.Errorf("step %d: loss %.7f, one rank %.7f", s, got.Loss, want.Loss)
				}
				if math.Abs(got.GradNorm-want.GradNorm) > 1e-4*want.GradNorm {
					t.Errorf("step %d: gradient norm %.7g, one rank %.7g", s, got.GradNorm, want.GradNorm)
				}
				if s == steps-1 {
					t.Logf("step %d: loss %.7f (one rank %.7f), norm %.6g (one rank %.6g)", s, got.Loss, want.Loss, got.GradNorm, want.GradNorm)
				}
			}
			wantW, wantM, err := a.Tensors()
			if err != nil {
				t.Fatal(err)
			}
			gotW, gotM, err := b.Tensors()
			if err != nil {
				t.Fatal(err)
			}
			for i := range wantW {
				if e := relErr(gotW[i].Data, wantW[i].Data); e > 1e-5 {
					t.Errorf("checkpoint tensor %s differs from one rank's by %.3g", wantW[i].Name, e)
				}
			}
			for i := range wantM {
				if e := relErr(gotM[i].Data, wantM[i].Data); e > 1e-4 {
					t.Errorf("checkpoint moment %s differs from one rank's by %.3g", wantM[i].Name, e)
				}
			}
		})
	}
}
