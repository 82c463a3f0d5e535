package exec

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/compiler/step/steptest"
	"github.com/moec-dev/moec/runtime/nn"
)

// decodeAlike feeds the same tokens to the decoding step program and to runtime/nn's
// Decoder, position by position, and holds every step's logits together.
func decodeAlike(t *testing.T, m *program.Model, seed int64, batch, steps int) float64 {
	t.Helper()
	net, err := nn.New(m, seed)
	if err != nil {
		t.Fatalf("%s: %v", steptest.String(m), err)
	}
	prog, err := step.LowerDecode(m, batch, steps)
	if err != nil {
		t.Fatalf("%s: %v", steptest.String(m), err)
	}
	if err := step.Verify(prog); err != nil {
		t.Fatal(err)
	}
	ex, err := New(prog, m, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ex.LoadTensors(tensorsOf(net)); err != nil {
		t.Fatal(err)
	}
	dec := net.NewDecoder(batch, steps)
	toks := randomTokens(batch, steps, int(m.Vocab), seed)
	worst := 0.0
	for pos := 0; pos < steps; pos++ {
		in := make([]int32, batch)
		for i := range in {
			in[i] = toks[i*(steps+1)+pos]
		}
		want, err := dec.Step(in)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ex.Decode(in, pos)
		if err != nil {
			t.Fatalf("%s: %v", steptest.String(m), err)
		}
		var scale float64
		for _, v := range want {
			scale = math.Max(scale, math.Abs(float64(v)))
		}
		for j := range want {
			worst = math.Max(worst, math.Abs(float64(got[j]-want[j]))/math.Max(scale, 1e-6))
		}
	}
	return worst
}

// TestDecodeMatchesHandWritten decodes through the step program of one decoding step
// (step.LowerDecode) and through runtime/nn's Decoder: hunyuan_tiny's stages (talking
// heads, the token-embedding router, capacity ignored in decoding) and 60 random models,
// 2 sequences of 12 positions; every step's logits agree within 1e-5 of their largest.
func TestDecodeMatchesHandWritten(t *testing.T) {
	for _, experts := range []int{1, 8} {
		if w := decodeAlike(t, hunyuanTiny(t, experts), 1, 2, 12); w > 1e-5 {
			t.Errorf("hunyuan_tiny with %d experts: logits differ by %.3g", experts, w)
		}
	}
	r := rand.New(rand.NewPCG(9, 9))
	worst := 0.0
	for i := 0; i < 60; i++ {
		m := steptest.Model(r, "rnd")
		w := decodeAlike(t, m, int64(i), 2, 8)
		if w > 1e-5 {
			t.Fatalf("%s: logits differ by %.3g", steptest.String(m), w)
		}
		worst = math.Max(worst, w)
	}
	t.Logf("60 random models decode alike; worst logit difference %.2g of the largest", worst)
}
