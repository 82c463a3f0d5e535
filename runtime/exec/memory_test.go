package exec

import (
	"runtime"
	"runtime/debug"
	"slices"
	"testing"
	"time"

	"github.com/moec-dev/moec/compiler/params"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/runtime/weights"
)

// allocated is the bytes f allocates on the heap.
func allocated(t *testing.T, f func() error) uint64 {
	t.Helper()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if err := f(); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// modelBytes is the float32 bytes of m's parameters and the largest tensor's.
func modelBytes(walk []params.Param) (total, largest uint64) {
	for _, p := range walk {
		b := uint64(4 * p.Elements())
		total += b
		largest = max(largest, b)
	}
	return total, largest
}

// TestSetupHoldsNoSecondModel: filling a rank's arena allocates no copy of the model
// beside it. LoadInitial draws weights.Initial's values a tensor at a time (the same
// weights as Load of weights.Initial's tensors, under every layout: shards, ZeRO-3 pieces,
// pipeline stages), allocating about one tensor; Load slices whole tensors straight into
// the arena; SetOptimizer keeps the AdamW moments in the arena only.
func TestSetupHoldsNoSecondModel(t *testing.T) {
	m := hunyuanTiny(t, 8)
	moe := *m.MoE // what tensor and pipeline parallelism lower (TestResumeUnderAnotherLayout)
	m.MoE = &moe
	m.Attention.TalkingHeads = false
	m.Attention.ShareWeights = 1
	m.MoE.Router = program.RouteHidden
	const seed = 5
	init, err := weights.Initial(m, seed)
	if err != nil {
		t.Fatal(err)
	}
	whole := weights.Safetensors(init)
	newLocal := func(t *testing.T, l step.Layout) *Local {
		lc, err := NewLocal(m, step.Batch{MicroBatch: 2, SeqLen: 16, Micro: 4 / l.DP}, l, 20*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return lc
	}
	for _, l := range []step.Layout{
		{DP: 1, EP: 1, TP: 1, PP: 1},
		{DP: 2, EP: 2, TP: 1, PP: 1, ZeRO: 3},
		{DP: 1, EP: 1, TP: 2, PP: 2},
	} {
		t.Run(l.String(), func(t *testing.T) {
			loaded, drawn := newLocal(t, l), newLocal(t, l)
			total, largest := modelBytes(loaded.walk)
			cfg := trainConfig(4)
			if n := allocated(t, func() error { return drawn.SetOptimizer(cfg) }); n > total/4 {
				t.Errorf("SetOptimizer allocated %d bytes for a model of %d: the moments are the arena's", n, total)
			}
			if err := loaded.SetOptimizer(cfg); err != nil {
				t.Fatal(err)
			}
			if n := allocated(t, func() error { return loaded.Load(whole) }); n > total/4 {
				t.Errorf("Load allocated %d bytes for a model of %d: the tensors go straight into the arena", n, total)
			}
			n := allocated(t, func() error { return drawn.LoadInitial(seed) })
			if n > largest+total/4 {
				t.Errorf("LoadInitial allocated %d bytes for a model of %d (largest tensor %d): one tensor at a time", n, total, largest)
			}
			want, _, err := loaded.Tensors()
			if err != nil {
				t.Fatal(err)
			}
			got, _, err := drawn.Tensors()
			if err != nil {
				t.Fatal(err)
			}
			for i := range want {
				if !slices.Equal(got[i].Data, want[i].Data) {
					t.Fatalf("%s: LoadInitial's weights differ from Load(weights.Initial)'s", want[i].Name)
				}
			}
		})
	}
}

// TestLimitHeapFollowsThePlan: LimitHeap sets GOGC from the live heap and the planned
// bytes (GCPercentFor), leaves an environment's GOGC alone, and GCPercentFor keeps 100 for
// heaps within the headroom and lets a large one gather an eighth of its plan.
func TestLimitHeapFollowsThePlan(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		live, planned int64
		want          int
	}{
		{8 * mib, 4 * mib, 100},      // a test model: Go's default
		{454 * mib, 434 * mib, 56},   // moebench's small size: 256 MiB of garbage
		{4230 * mib, 4227 * mib, 12}, // the large size: an eighth of the plan
		{1 << 40, 1 << 20, 10},       // a floor
	} {
		if got := GCPercentFor(c.live, c.planned); got != c.want {
			t.Errorf("GCPercentFor(%d MiB live, %d MiB planned) = %d, want %d", c.live/mib, c.planned/mib, got, c.want)
		}
	}
	prev := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(prev) })
	m := hunyuanTiny(t, 8)
	lc, err := NewLocal(m, step.Batch{MicroBatch: 2, SeqLen: 16, Micro: 1}, step.Layout{DP: 1, EP: 1, TP: 1, PP: 1}, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if lc.PlannedBytes() != lc.Ranks[0].ArenaBytes()[step.Device]+lc.Ranks[0].ArenaBytes()[step.Host] {
		t.Errorf("PlannedBytes %d is not the rank's arenas %v", lc.PlannedBytes(), lc.Ranks[0].ArenaBytes())
	}
	t.Setenv(GCPercentEnv, "")
	debug.SetGCPercent(100)
	pct, set := lc.LimitHeap()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	if !set || pct != GCPercentFor(int64(ms.HeapAlloc), lc.PlannedBytes()) {
		t.Errorf("LimitHeap set %d (%v), want GCPercentFor(%d, %d) = %d", pct, set, ms.HeapAlloc, lc.PlannedBytes(), GCPercentFor(int64(ms.HeapAlloc), lc.PlannedBytes()))
	}
	if got := debug.SetGCPercent(100); got != pct {
		t.Errorf("GOGC is %d after LimitHeap returned %d", got, pct)
	}
	t.Setenv(GCPercentEnv, "37")
	debug.SetGCPercent(37)
	if pct, set := lc.LimitHeap(); set || pct != 37 {
		t.Errorf("with GOGC=37 in the environment LimitHeap returned %d, %v; want it left alone", pct, set)
	}
}
