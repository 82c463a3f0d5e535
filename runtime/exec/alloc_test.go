package exec

import (
	"runtime"
	"testing"

	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/runtime/nn"
)

// TestStepAllocatesNothing: after its first step, a rank's forward and backward run in
// its arena and reused scratch: what a step still allocates (the products' worker
// goroutines, the sharing dice) is under 1% of the arena and 256 KiB, so no buffer is
// allocated outside the memory plan.
func TestStepAllocatesNothing(t *testing.T) {
	m := hunyuanTiny(t, 8)
	net, err := nn.New(m, 1)
	if err != nil {
		t.Fatal(err)
	}
	progs, err := step.Lower(m, step.Batch{MicroBatch: 2, SeqLen: 32, Micro: 2}, step.Layout{DP: 1, EP: 1, TP: 1, PP: 1})
	if err != nil {
		t.Fatal(err)
	}
	ex, err := New(progs[0], m, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range net.Params() {
		copy(ex.Param(p.ID), p.W)
	}
	micro := [][]int32{randomTokens(2, 32, 256, 1), randomTokens(2, 32, 256, 2)}
	if _, err := ex.Run(micro, Options{Seed: 1}); err != nil {
		t.Fatal(err)
	}
	// Bytes, not objects: the products' worker goroutines are allocations too, but no
	// buffer is.
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	const steps = 3
	for s := int64(1); s <= steps; s++ {
		if _, err := ex.Run(micro, Options{Seed: 1, Step: s}); err != nil {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	perStep := (after.TotalAlloc - before.TotalAlloc) / steps
	arena := progs[0].Memory.Arena[step.Device]
	t.Logf("%d bytes allocated per step beside an arena of %d", perStep, arena)
	if perStep > 256<<10 || perStep > uint64(arena)/100 {
		t.Errorf("a step allocates %d bytes; its buffers (%d bytes) are all in the arena", perStep, arena)
	}
}
