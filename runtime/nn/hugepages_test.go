package nn

import (
	"strings"
	"testing"
	"unsafe"

	"github.com/moec-dev/moec/compiler/program/programtest"
	"github.com/moec-dev/moec/runtime/quant"
)

// TestWeightsShareOneArena: a model large enough for the arena (the moebench model, 54 MB)
// holds every weight buffer in one allocation, back to back in creation order (the
// allocation whose huge-page interior decoding streams); a model below minArenaBytes gets
// none.
func TestWeightsShareOneArena(t *testing.T) {
	m, err := New(benchModel(), 1)
	if err != nil {
		t.Fatal(err)
	}
	var next uintptr
	owned := 0
	for _, s := range m.c.storage {
		if s.w == nil {
			continue
		}
		at := uintptr(unsafe.Pointer(&s.w[0]))
		if next != 0 && at != next {
			t.Fatalf("%s starts at %#x, not where the weight before it ends (%#x): not one arena", s.name, at, next)
		}
		next = at + uintptr(len(s.w))*4
		owned++
	}
	if owned < 10 {
		t.Fatalf("only %d weight buffers", owned)
	}
	if a := newWeightArena[float32](programtest.MustModel("small", `vocab = 256; d_model = 64; layers = 2; seq_len = 32
attention { heads = 2 }
ffn { hidden = 128; activation = swiglu }`)); a != nil {
		t.Errorf("a %d-value model got an arena", len(a.all))
	}
}

// TestQuantizedLeavesTheArena: quantising a model whose weights share the arena moves the
// float32 weights it keeps (norms, router, anything not quantised) into buffers of their
// own, same values, listed parameters pointing at them, so the arena, the quantised
// matrices' float32 values among them, can be freed.
func TestQuantizedLeavesTheArena(t *testing.T) {
	m, err := New(benchModel(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if !m.c.inArena {
		t.Fatal("the moebench model's weights are not in an arena")
	}
	lo := uintptr(unsafe.Pointer(&m.c.storage[0].w[0]))
	last := m.c.storage[len(m.c.storage)-1].w
	hi := uintptr(unsafe.Pointer(&last[0])) + uintptr(len(last))*4
	kept := map[string][]float32{}
	qs := map[string]*quant.Matrix{}
	for _, p := range m.Params() {
		if strings.Contains(p.Name, "experts.") || strings.Contains(p.Name, "_proj.") {
			q, err := quant.Quantize(p.W, p.Shape[0], p.Shape[1], 8, 0)
			if err != nil {
				t.Fatal(err)
			}
			qs[p.Name] = q
		} else {
			kept[p.Name] = append([]float32(nil), p.W...)
		}
	}
	if err := m.SetQuantized(qs); err != nil {
		t.Fatal(err)
	}
	if m.c.inArena {
		t.Error("still in the arena after quantising")
	}
	for _, p := range m.Params() {
		want, ok := kept[p.Name]
		if !ok {
			continue
		}
		at := uintptr(unsafe.Pointer(&p.W[0]))
		if at >= lo && at < hi {
			t.Errorf("%s still points into the arena", p.Name)
		}
		for i := range want {
			if p.W[i] != want[i] {
				t.Fatalf("%s[%d] = %g, was %g", p.Name, i, p.W[i], want[i])
			}
		}
	}
	for _, s := range m.c.storage {
		if len(s.w) > 0 {
			if at := uintptr(unsafe.Pointer(&s.w[0])); at >= lo && at < hi {
				t.Errorf("tensor %s still in the arena", s.name)
			}
		}
	}
}
