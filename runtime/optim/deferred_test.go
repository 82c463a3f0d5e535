package optim

import (
	"math/rand/v2"
	"testing"
)

// TestDeferredIsStep applies a deferred update tensor by tensor, in an order of its own,
// over three steps with clipping and decay, and compares weights and moments bit for bit
// with Step's. A tensor left out stays where it was.
func TestDeferredIsStep(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	shapes := [][]int{{4, 5}, {7}, {3, 3}, {600000}} // the last spans chunks of updateChunk
	mk := func() []Param {
		r := rand.New(rand.NewPCG(3, 4))
		var ps []Param
		for i, s := range shapes {
			n := 1
			for _, d := range s {
				n *= d
			}
			p := Param{Name: string(rune('a' + i)), Shape: s, W: make([]float32, n), G: make([]float32, n)}
			for j := range p.W {
				p.W[j] = r.Float32() - 0.5
			}
			ps = append(ps, p)
		}
		return ps
	}
	cfg := Config{LR: 1e-2, MinLR: 1e-3, WeightDecay: 0.1, Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, Warmup: 1, TotalSteps: 3, Schedule: "cosine", ClipNorm: 0.5}
	want, got := mk(), mk()
	ow, err := NewAdamW(cfg, want)
	if err != nil {
		t.Fatal(err)
	}
	og, err := NewAdamW(cfg, got)
	if err != nil {
		t.Fatal(err)
	}
	for s := 0; s < 3; s++ {
		for i := range want {
			for j := range want[i].G {
				g := float32(r.NormFloat64())
				want[i].G[j], got[i].G[j] = g, g
			}
		}
		wi, err := ow.Step(0.5)
		if err != nil {
			t.Fatal(err)
		}
		gi, d, err := og.StepDeferred(0.5, nil)
		if err != nil {
			t.Fatal(err)
		}
		if wi != gi || !wi.Clipped {
			t.Fatalf("step %d: Step says %+v, StepDeferred %+v (the test wants clipping)", s, wi, gi)
		}
		for _, unit := range [][]int{{2}, {0, 3}, {1}} {
			if err := d.Apply(unit); err != nil {
				t.Fatal(err)
			}
		}
	}
	if og.StepCount() != ow.StepCount() {
		t.Errorf("%d updates counted, Step counts %d", og.StepCount(), ow.StepCount())
	}
	ws, gs := ow.State(), og.State()
	for i := range want {
		for j := range want[i].W {
			if want[i].W[j] != got[i].W[j] {
				t.Fatalf("%s[%d]: %v deferred, %v by Step", want[i].Name, j, got[i].W[j], want[i].W[j])
			}
		}
	}
	for k := range ws {
		for j := range ws[k].Data {
			if ws[k].Data[j] != gs[k].Data[j] {
				t.Fatalf("%s[%d]: %v deferred, %v by Step", ws[k].Name, j, gs[k].Data[j], ws[k].Data[j])
			}
		}
	}
	// A deferred update that is not applied changes nothing.
	before := append([]float32(nil), got[1].W...)
	if _, _, err := og.StepDeferred(1, nil); err != nil {
		t.Fatal(err)
	}
	for j := range before {
		if got[1].W[j] != before[j] {
			t.Fatal("StepDeferred updated a weight")
		}
	}
	if err := (&Deferred{o: og}).Apply([]int{len(got)}); err == nil {
		t.Error("an index past the parameters was applied")
	}
}
