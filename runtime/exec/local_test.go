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

func tensorsOf(net *nn.Model) []safetensors.Tensor {
	var out []safetensors.Tensor
	for _, p := range net.Params() {
		out = append(out, safetensors.Tensor{Name: p.Name, Shape: p.Shape, Data: p.W})
	}
	return out
}

// TestResumeUnderAnotherLayout trains 3 steps under one layout, moves the weights and the
// AdamW moments out in the single-rank layout, loads them into another layout and trains 3
// more: every loss equals an uninterrupted single-rank run's.
func TestResumeUnderAnotherLayout(t *testing.T) {
	const mb, T, steps = 2, 16, 6
	m := hunyuanTiny(t, 8)
	moe := *m.MoE
	m.MoE = &moe
	m.Attention.TalkingHeads = false
	m.Attention.ShareWeights = 1
	m.MoE.Router = program.RouteHidden
	net, err := nn.New(m, 8)
	if err != nil {
		t.Fatal(err)
	}
	cfg := trainConfig(steps)
	batches := func(s int64) [][]int32 {
		out := make([][]int32, 4)
		for i := range out {
			out[i] = randomTokens(mb, T, int(m.Vocab), 77*s+int64(i))
		}
		return out
	}
	newLocal := func(l step.Layout) *Local {
		lc, err := NewLocal(m, step.Batch{MicroBatch: mb, SeqLen: T, Micro: 4 / l.DP}, l, 20*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if err := lc.SetOptimizer(cfg); err != nil {
			t.Fatal(err)
		}
		return lc
	}
	ref := newLocal(step.Layout{DP: 1, EP: 1, TP: 1, PP: 1})
	if err := ref.Load(tensorsOf(net)); err != nil {
		t.Fatal(err)
	}
	var want []float64
	for s := int64(0); s < steps; s++ {
		st, err := ref.Step(batches(s), Options{Seed: 1, Step: s})
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, st.Loss)
	}
	layouts := []step.Layout{
		{DP: 2, EP: 2, TP: 1, PP: 1, ZeRO: 3},
		{DP: 1, EP: 1, TP: 2, PP: 2},
		{DP: 4, EP: 2, TP: 1, PP: 1, ZeRO: 2},
	}
	for i := range layouts {
		a, b := layouts[i], layouts[(i+1)%len(layouts)]
		first := newLocal(a)
		if err := first.Load(tensorsOf(net)); err != nil {
			t.Fatal(err)
		}
		for s := int64(0); s < 3; s++ {
			st, err := first.Step(batches(s), Options{Seed: 1, Step: s})
			if err != nil {
				t.Fatal(err)
			}
			if math.Abs(st.Loss-want[s]) > 1e-5*want[s] {
				t.Errorf("%s step %d: loss %.7f, one rank %.7f", a, s, st.Loss, want[s])
			}
		}
		model, moments, err := first.Tensors()
		if err != nil {
			t.Fatal(err)
		}
		second := newLocal(b)
		if err := second.Load(model); err != nil {
			t.Fatal(err)
		}
		if err := second.LoadMoments(moments, first.OptStep()); err != nil {
			t.Fatal(err)
		}
		for s := int64(3); s < steps; s++ {
			st, err := second.Step(batches(s), Options{Seed: 1, Step: s})
			if err != nil {
				t.Fatal(err)
			}
			if math.Abs(st.Loss-want[s]) > 1e-5*want[s] {
				t.Errorf("%s resumed under %s, step %d: loss %.7f, one rank %.7f", a, b, s, st.Loss, want[s])
			}
		}
	}
}
