package exec

import (
	"testing"
	"unsafe"

	"github.com/moec-dev/moec/compiler/step"
)

// TestBufferViewsSitAtPlannedOffsets: every buffer's view (Buffer) starts at its planned
// offset from one arena base per tier, so another copy of the arena (a GPU's, laid out by
// the same memory plan) exchanges buffers with the executor offset for offset.
func TestBufferViewsSitAtPlannedOffsets(t *testing.T) {
	m := hunyuanTiny(t, 4)
	progs, err := step.Lower(m, step.Batch{MicroBatch: 2, SeqLen: 16, Micro: 2}, step.Layout{DP: 1, EP: 1, TP: 1, PP: 1, OffloadOpt: true})
	if err != nil {
		t.Fatal(err)
	}
	p := progs[0]
	ex, err := New(p, m, nil)
	if err != nil {
		t.Fatal(err)
	}
	var base [2]uintptr
	seen := 0
	for i, b := range p.Buffers {
		v := ex.Buffer(i)
		if p.Memory.Lifetime[i][0] < 0 {
			if v != nil {
				t.Errorf("%s: no op touches it, yet it has a view", b.Name)
			}
			continue
		}
		if int64(len(v)) != b.Elements() {
			t.Fatalf("%s: a view of %d values for %d", b.Name, len(v), b.Elements())
		}
		at := uintptr(unsafe.Pointer(&v[0])) - uintptr(b.Offset)
		if base[b.Tier] == 0 {
			base[b.Tier] = at
		}
		if at != base[b.Tier] {
			t.Errorf("%s (%s tier): its view starts %d bytes from where its offset %d says", b.Name, b.Tier, int64(at-base[b.Tier]), b.Offset)
		}
		seen++
	}
	if base[step.Host] == 0 || seen == 0 {
		t.Errorf("no host-tier buffer in an offloaded program (%d views)", seen)
	}
}
