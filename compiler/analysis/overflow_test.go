package analysis

import (
	"errors"
	"math"
	"testing"

	"github.com/moec-dev/moec/compiler/program"
)

// TestCountOverflow: a model whose count leaves int64 is an error naming the part, never a
// wrapped (negative or too small) count; a model just inside the range counts exactly.
func TestCountOverflow(t *testing.T) {
	moe := func(experts int) *program.MoE {
		return &program.MoE{Experts: experts, TopK: 1, Every: 1}
	}
	cases := []struct {
		name string
		edit func(m *program.Model)
		part string // "" when the count fits
	}{
		{"base fits", func(m *program.Model) {}, ""},
		// The QA case: 4·(2·4M·16M) per expert × 1M experts = 1.3e20.
		{"routed experts", func(m *program.Model) {
			m.DModel, m.FFN.Hidden, m.MoE = 4_000_000, 16_000_000, moe(1_000_000)
		}, "routed expert"},
		{"embedding", func(m *program.Model) { m.Vocab, m.DModel = 1<<40, 1<<24 }, "embedding"},
		{"talking heads", func(m *program.Model) {
			m.DModel, m.Attention.Heads, m.Attention.HeadDim, m.Attention.TalkingHeads = 1<<10, 1<<31, 1, true
		}, "attention"},
		// Each layer fits (attention 4·2^60, FFN 2·2^60: 6.9e18), two of them do not.
		{"sum over layers", func(m *program.Model) {
			m.DModel, m.FFN.Hidden, m.Layers, m.Vocab, m.Attention.HeadDim = 1<<30, 1<<30, 2, 1, 0
		}, "total"},
		// The main model fits (2^62 routed), the MTP module adds as much again.
		{"with MTP", func(m *program.Model) {
			m.Vocab, m.Layers, m.DModel, m.FFN.Hidden, m.MoE = 1, 1, 1<<20, 1<<20, moe(1<<21)
			m.MTPDepth = 1
		}, "total"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := baseModel()
			tc.edit(m)
			c, err := CountChecked(m)
			var ovf *OverflowError
			switch {
			case tc.part == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.part == "":
				if c.TotalAll != Count(m).TotalAll || c.TotalAll != baseTotal {
					t.Errorf("total = %d, want %d", c.TotalAll, int64(baseTotal))
				}
			case !errors.As(err, &ovf):
				t.Fatalf("no overflow reported; total = %d", c.TotalAll)
			case ovf.Part != tc.part:
				t.Errorf("overflow in %q, want %q (%v)", ovf.Part, tc.part, err)
			}
		})
	}
}

// TestCheckedArithmetic holds the helpers at the edges of int64.
func TestCheckedArithmetic(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    func(s *spec) int64
		want int64
		ovf  bool
	}{
		{"mul fits", func(s *spec) int64 { return s.mul(1<<31, 1<<31) }, 1 << 62, false},
		{"mul max", func(s *spec) int64 { return s.mul(math.MaxInt64, 1) }, math.MaxInt64, false},
		{"mul over", func(s *spec) int64 { return s.mul(1<<32, 1<<31) }, math.MaxInt64, true},
		{"mul zero", func(s *spec) int64 { return s.mul(math.MaxInt64, 0, math.MaxInt64) }, 0, false},
		{"add fits", func(s *spec) int64 { return s.add(math.MaxInt64-1, 1) }, math.MaxInt64, false},
		{"add over", func(s *spec) int64 { return s.add(math.MaxInt64, 1) }, math.MaxInt64, true},
		{"add negative", func(s *spec) int64 { return s.add(5, -7) }, -2, false},
	} {
		s := &spec{part: "x"}
		if got := tc.f(s); got != tc.want || (s.overflow != "") != tc.ovf {
			t.Errorf("%s = %d (overflow %q), want %d (overflow %v)", tc.name, got, s.overflow, tc.want, tc.ovf)
		}
	}
}

// TestFLOPsDoNotListLayers: FLOPs need a running sum over the layers, not a list of them,
// so their allocations do not grow with the depth.
func TestFLOPsDoNotListLayers(t *testing.T) {
	allocs := func(layers int) float64 {
		m := baseModel()
		m.Layers = layers
		return testing.AllocsPerRun(3, func() { CountFLOPs(m, 0) })
	}
	if shallow, deep := allocs(4), allocs(100_000); deep > shallow {
		t.Errorf("CountFLOPs allocates %v times for 4 layers but %v for 100k", shallow, deep)
	}
}
