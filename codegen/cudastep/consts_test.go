package cudastep

import (
	"math"
	"testing"

	"github.com/moec-dev/moec/compiler/program/programtest"
)

// TestRopeFillIsRopeTable: the rotary table the host program computes when it opens (the
// C of moec_fill_rope, mirrored by ropeFillTable) is compiler/program's RopeTable rounded
// to float32, plain and under yarn scaling (an attention factor on cos and sin); the
// emulated steps' differential tests (runtime/gpu) run the C itself.
func TestRopeFillIsRopeTable(t *testing.T) {
	for _, tc := range []struct{ name, src string }{
		{"plain", `vocab = 64; d_model = 32; layers = 1; seq_len = 64; position = rotary; rope_base = 10000
attention { heads = 2 }
ffn { hidden = 64 }`},
		{"yarn", `vocab = 64; d_model = 32; layers = 1; seq_len = 64; position = rotary; rope_base = 10000
rope_scaling = yarn; rope_factor = 4; rope_original_seq_len = 16
attention { heads = 2 }
ffn { hidden = 64 }`},
	} {
		m := programtest.MustModel(tc.name, tc.src)
		const dim, positions = 16, 48
		r := ropeFill(m, dim, positions)
		if tc.name == "yarn" && r.Attention == 1 {
			t.Fatalf("%s: attention factor 1: the case does not scale", tc.name)
		}
		cos, sin := m.RopeTable(dim, 0, positions)
		got := ropeFillTable(r)
		if len(got) != r.Floats() || len(got) != len(cos)+len(sin) {
			t.Fatalf("%s: %d floats, want %d", tc.name, len(got), len(cos)+len(sin))
		}
		for i, v := range append(cos, sin...) {
			if got[i] != float32(v) {
				t.Fatalf("%s: value %d is %g, RopeTable's %g", tc.name, i, got[i], float32(v))
			}
		}
	}
}

// ropeFillTable is r's table as moec_fill_rope computes it, in Go (C's cos and sin may
// differ from Go's in the last bit of a float64; the emulated steps run the C itself).
func ropeFillTable(r RopeFill) []float32 {
	half := len(r.Inv)
	tab := make([]float32, r.Floats())
	for p := 0; p < r.Positions; p++ {
		for i, f := range r.Inv {
			ang := float64(float32(p) * f)
			c, s := math.Cos(ang), math.Sin(ang)
			if r.Attention != 1 {
				c, s = c*r.Attention, s*r.Attention
			}
			tab[p*half+i], tab[(r.Positions+p)*half+i] = float32(c), float32(s)
		}
	}
	return tab
}
