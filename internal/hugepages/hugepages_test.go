package hugepages

import (
	"testing"
	"unsafe"
)

// TestInteriorIsWholeHugePagesInside: the interior of a slice is whole, aligned huge pages
// inside it, and none for a slice too small to hold one.
func TestInteriorIsWholeHugePagesInside(t *testing.T) {
	if b := Interior(make([]float32, 1)); b != nil {
		t.Errorf("one value has a huge-page interior of %d bytes", len(b))
	}
	big := make([]float32, 3*Size/4)
	in := Interior(big)
	start := uintptr(unsafe.Pointer(&big[0]))
	if lo := uintptr(unsafe.Pointer(&in[0])); lo%Size != 0 || len(in)%Size != 0 || len(in) < Size || lo < start || lo+uintptr(len(in)) > start+uintptr(len(big))*4 {
		t.Errorf("interior [%#x, +%d) of [%#x, +%d) is not whole huge pages inside it", lo, len(in), start, len(big)*4)
	}
	Back(big) // advice: must not fail or change the values
	for i, v := range big {
		if v != 0 {
			t.Fatalf("value %d is %v after the advice", i, v)
		}
	}
}
