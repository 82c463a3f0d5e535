package exec

import (
	"os"
	"runtime"
	"runtime/debug"
)

// GCPercentEnv is the environment variable that sets the Go collector's GOGC itself; when
// it is set, LimitHeap leaves the collector alone.
const GCPercentEnv = "GOGC"

// PlannedBytes is the bytes of the arenas of this process's ranks (both tiers): every
// buffer of their step programs, the model states (weights, gradients, AdamW moments) and
// the activations their memory plans place.
func (lc *Local) PlannedBytes() int64 {
	var n int64
	for _, ex := range lc.Ranks {
		for _, b := range ex.arenaBytes {
			n += b
		}
	}
	return n
}

// MemoryHeadroom is the garbage LimitHeap lets the heap gather above what is live before
// the collector runs: the larger of 256 MiB and an eighth of the planned bytes.
func MemoryHeadroom(planned int64) int64 { return max(256<<20, planned/8) }

// GCPercentFor is the GOGC that lets a heap of live bytes grow by the headroom of planned
// bytes (MemoryHeadroom) between collections: 100, Go's default, where that headroom is the
// live heap or more (small models), down to 10 at most.
func GCPercentFor(live, planned int64) int {
	if live <= 0 {
		return 100
	}
	return int(min(100, max(10, 100*MemoryHeadroom(planned)/live)))
}

// LimitHeap sets the Go collector for training through lc and returns the GOGC it set
// (set false, and the GOGC in force, when GOGC is in the environment, which stands). Call
// it once the weights are loaded.
//
// The ranks' arenas are live for the whole run and hold almost all of it, so under Go's
// default GOGC=100 the collector waits for the heap to double, a model's size and more,
// before freeing anything: the initial weights or a checkpoint's tensors, dropped once
// loaded, would stay resident through every step and set the process's peak. So LimitHeap
// collects now and returns what is free to the operating system (debug.FreeOSMemory), then
// sets GOGC (debug.SetGCPercent) to GCPercentFor the live heap and the planned bytes: the
// heap gathers about MemoryHeadroom of garbage between collections instead of a model's
// size. A percentage and not a fixed limit, the collector's goal follows the live heap
// wherever the run takes it (an evaluation's model, a checkpoint's tensors), so it never
// runs back to back because something live outgrew a limit.
func (lc *Local) LimitHeap() (gcPercent int, set bool) {
	if os.Getenv(GCPercentEnv) != "" {
		p := debug.SetGCPercent(100)
		debug.SetGCPercent(p)
		return p, false
	}
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms) // after a full collection HeapAlloc is the live heap
	gcPercent = GCPercentFor(int64(ms.HeapAlloc), lc.PlannedBytes())
	debug.SetGCPercent(gcPercent)
	return gcPercent, true
}
