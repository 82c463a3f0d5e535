package nn

import (
	"errors"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/moec-dev/moec/runtime/quant"
)

// TestNewQuantized: a model built around quantised expert and attention matrices holds no
// float32 buffers for them (the experts' contiguous buffers included), decodes exactly as
// a float32 model given the same quantised matrices afterwards, refuses to train, and
// counts its weight bytes.
func TestNewQuantized(t *testing.T) {
	cfg := tinyMoE()
	cfg.DModel, cfg.Attention.HeadDim, cfg.MoE.ExpertHidden, cfg.FFN.Hidden = 64, 32, 64, 64
	ref, err := New(cfg, 3)
	if err != nil {
		t.Fatal(err)
	}
	qs := map[string]*quant.Matrix{}
	for _, p := range ref.Params() {
		if strings.Contains(p.Name, "experts.") && strings.HasSuffix(p.Name, ".weight") || strings.HasSuffix(p.Name, "q_proj.weight") {
			bits := 8
			if strings.Contains(p.Name, "experts.") {
				bits = 4
			}
			q, err := quant.Quantize(p.W, p.Shape[0], p.Shape[1], bits, map[int]int{8: 0, 4: 32}[bits])
			if err != nil {
				t.Fatal(err)
			}
			qs[p.Name] = q
		}
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	m, err := NewQuantized(cfg, 3, qs)
	if err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	// Building it allocates less than the experts' float32 weights alone would take.
	if experts := uint64(cfg.Layers) * 3 * uint64(cfg.MoE.Experts) * 64 * 64 * 4; after.TotalAlloc-before.TotalAlloc >= experts {
		t.Errorf("NewQuantized allocated %d bytes; the experts in float32 are %d", after.TotalAlloc-before.TotalAlloc, experts)
	}
	for i, p := range m.Params() { // the float32 parameters as the reference holds them
		if qs[p.Name] == nil {
			copy(p.W, ref.Params()[i].W)
		} else if p.W != nil {
			t.Errorf("%s holds float32 weights", p.Name)
		}
	}
	for _, l := range m.c.layers {
		if l.moe.w1.w != nil || l.moe.w2.w != nil || l.moe.w3.w != nil {
			t.Error("the experts' contiguous float32 buffers were allocated")
		}
	}
	if err := ref.SetQuantized(qs); err != nil {
		t.Fatal(err)
	}
	toks := []int32{1, 5, 9, 2}
	a, b := ref.NewDecoder(1, 4), m.NewDecoder(1, 4)
	for _, tok := range toks {
		la, err := a.Step([]int32{tok})
		if err != nil {
			t.Fatal(err)
		}
		la = slices.Clone(la)
		lb, err := b.Step([]int32{tok})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(la, lb) {
			t.Fatalf("logits differ: %v vs %v", la[:4], lb[:4])
		}
	}
	if m.WeightBytes() != ref.WeightBytes() || m.WeightBytes() >= 3*int64(cfg.MoE.Experts)*64*64*4 {
		t.Errorf("weight bytes %d, %d", m.WeightBytes(), ref.WeightBytes())
	}
	if _, err := m.ForwardBackward(Batch{B: 1, T: 4, Tokens: []int32{1, 2, 3, 4, 5}}, StepOptions{}); !errors.Is(err, ErrQuantized) {
		t.Errorf("training a quantised model: %v", err)
	}
	// A router stays float32.
	gate := "model.layers.0.block_sparse_moe.gate.weight"
	for _, p := range ref.Params() {
		if p.Name == gate {
			q, _ := quant.Quantize(make([]float32, p.Shape[0]*p.Shape[1]), p.Shape[0], p.Shape[1], 8, 0)
			if _, err := NewQuantized(cfg, 3, map[string]*quant.Matrix{gate: q}); err == nil {
				t.Error("a quantised router was accepted")
			}
		}
	}
}
