package exec

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/compiler/step/steptest"
	"github.com/moec-dev/moec/runtime/nn"
	"github.com/moec-dev/moec/runtime/rng"
)

// TestRandomModelsMatchHandWritten runs random models' forward and backward through the
// step program on one rank and through runtime/nn: the loss terms and every gradient
// agree (biases and other parameters set to random values first, so every path counts).
// Each model then also trains two steps at a random layout against one rank on the same
// micro-batches.
func TestRandomModelsMatchHandWritten(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 5))
	const B, T = 2, 8
	layouts := 0
	for i := 0; i < 150; i++ {
		m := steptest.Model(r, "rnd")
		net, err := nn.New(m, int64(i))
		if err != nil {
			t.Fatalf("%s: %v", steptest.String(m), err)
		}
		noise := rng.New(rng.Key(int64(i), 0, 0, rng.PurposeInit))
		for _, p := range net.Params() {
			for k := range p.W {
				p.W[k] += float32(0.05 * noise.Normal())
			}
		}
		progs, err := step.Lower(m, step.Batch{MicroBatch: B, SeqLen: T, Micro: 1}, step.Layout{DP: 1, EP: 1, TP: 1, PP: 1})
		if err != nil {
			t.Fatalf("%s: %v", steptest.String(m), err)
		}
		ex, err := New(progs[0], m, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := ex.LoadTensors(tensorsOf(net)); err != nil {
			t.Fatal(err)
		}
		toks := randomTokens(B, T, int(m.Vocab), int64(i))
		net.ZeroGrad()
		want, err := net.ForwardBackward(nn.Batch{B: B, T: T, Tokens: toks}, nn.StepOptions{Seed: 1, Step: int64(i), Train: true})
		if err != nil {
			t.Fatal(err)
		}
		got, err := ex.Run([][]int32{toks}, Options{Seed: 1, Step: int64(i)})
		if err != nil {
			t.Fatalf("%s: %v", steptest.String(m), err)
		}
		if math.Abs(got.Loss-want.Loss) > 1e-5*math.Abs(want.Loss) || got.Dropped != want.Dropped {
			t.Fatalf("%s: loss %.8f dropped %d, nn %.8f dropped %d", steptest.String(m), got.Loss, got.Dropped, want.Loss, want.Dropped)
		}
		bad := 0
		for _, p := range net.Params() {
			// Relative, but not below 1e-4 of scale: some gradients are zero in exact
			// arithmetic (a key bias shifts every score of a row alike) and only rounding.
			if e := diffNorm(ex.Grad(p.ID), p.G) / max(norm(p.G), 1e-4); e > 1e-4 {
				t.Errorf("%s: gradient of %s differs by %.3g (norm %.3g vs %.3g)", steptest.String(m), p.Name, e, norm(ex.Grad(p.ID)), norm(p.G))
				bad++
			}
		}
		if bad > 0 {
			t.Fatalf("shared layers %d", want.SharedLayers)
		}

		// The same model at a random layout, two training steps, against one rank.
		l := steptest.Layout(r, m)
		b := step.Batch{MicroBatch: 1, SeqLen: T, Micro: 2}
		if _, err := step.Lower(m, b, l); err != nil {
			continue
		}
		layouts++
		cfg := trainConfig(2)
		one, err := NewLocal(m, step.Batch{MicroBatch: 1, SeqLen: T, Micro: 2 * l.DP}, step.Layout{DP: 1, EP: 1, TP: 1, PP: 1}, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		many, err := NewLocal(m, b, l, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		for _, lc := range []*Local{one, many} {
			if err := lc.Load(tensorsOf(net)); err != nil {
				t.Fatal(err)
			}
			if err := lc.SetOptimizer(cfg); err != nil {
				t.Fatal(err)
			}
		}
		for s := int64(0); s < 2; s++ {
			micro := make([][]int32, 2*l.DP)
			for k := range micro {
				micro[k] = randomTokens(1, T, int(m.Vocab), 100*s+int64(k))
			}
			a, err := one.Step(micro, Options{Seed: 2, Step: s})
			if err != nil {
				t.Fatal(err)
			}
			c, err := many.Step(micro, Options{Seed: 2, Step: s})
			if err != nil {
				t.Fatalf("%s at %s: %v", steptest.String(m), l, err)
			}
			if math.Abs(a.Loss-c.Loss) > 1e-5*math.Abs(a.Loss) {
				t.Fatalf("%s at %s: step %d loss %.8f, one rank %.8f", steptest.String(m), l, s, c.Loss, a.Loss)
			}
		}
	}
	t.Logf("150 random models match the hand-written model; %d also trained alike at a random layout", layouts)
}

func norm(x []float32) float64 {
	var s float64
	for _, v := range x {
		s += float64(v) * float64(v)
	}
	return math.Sqrt(s)
}

func diffNorm(a, b []float32) float64 {
	var s float64
	for i := range a {
		d := float64(a[i]) - float64(b[i])
		s += d * d
	}
	return math.Sqrt(s)
}
