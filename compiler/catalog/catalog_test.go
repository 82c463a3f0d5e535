package catalog

import (
	"slices"
	"testing"

	"github.com/moec-dev/moec/compiler/program"
)

// TestEntries: the devices the issue names are present with every value the planner reads.
func TestEntries(t *testing.T) {
	names := Names()
	if !slices.IsSorted(names) {
		t.Errorf("Names() not sorted: %v", names)
	}
	for _, want := range []string{"a100_40gb", "a100_80gb", "h100_80gb", "h200_141gb", "cpu"} {
		d, ok := Lookup(want)
		if !ok {
			t.Errorf("catalog lacks %s", want)
			continue
		}
		if d.Name != want || d.Memory <= 0 || d.HBMBandwidth <= 0 || d.IntraLink <= 0 || d.HostLink <= 0 || d.IntraLinkName == "" {
			t.Errorf("%s: incomplete entry %+v", want, d)
		}
		for _, p := range []program.Precision{program.FP32, program.BF16, program.FP16} {
			if d.PeakFLOPs[p] <= 0 {
				t.Errorf("%s: no peak FLOP/s at %s", want, p)
			}
		}
		if d.Name != "cpu" && d.PeakFLOPs[program.BF16] < 10*d.PeakFLOPs[program.FP32] {
			t.Errorf("%s: tensor-core bf16 peak %.3g should dwarf fp32 %.3g", want, d.PeakFLOPs[program.BF16], d.PeakFLOPs[program.FP32])
		}
	}
	if _, ok := Lookup("a100"); ok {
		t.Error("Lookup accepts a name that is not an entry")
	}
}

// TestLookupIsACopy: editing a looked-up device (as a cluster override does) must not
// change what the next caller sees.
func TestLookupIsACopy(t *testing.T) {
	d, _ := Lookup("a100_40gb")
	d.Memory = 1
	d.PeakFLOPs[program.BF16] = 1
	again, _ := Lookup("a100_40gb")
	if again.Memory == 1 || again.PeakFLOPs[program.BF16] == 1 {
		t.Error("a cluster override leaked into the catalog")
	}
}
