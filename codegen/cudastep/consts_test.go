package cudastep

import (
	"testing"

	"github.com/moec-dev/moec/compiler/program/programtest"
)

// TestRopeFillIsRopeTable: the rotary table the host program computes when it opens (the
// C of moec_fill_rope, mirrored by RopeFill.Table) is compiler/program's RopeTable rounded
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
		got := r.Table()
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
