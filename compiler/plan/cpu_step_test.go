package plan

import (
	"math"
	"testing"

	"github.com/moec-dev/moec/compiler/step"
)

// TestPredictCPUStep times a hand-made program of two units: a fetch of 100 parameters,
// 1000 FLOPs, a fetch of 300 parameters, 3000 FLOPs, the update; at 1000 FLOP/s, 400 B/s
// and 100 parameters/s. Serial: 4 s compute + 4 s copies + 4 s update. Overlapped: the
// helper lands unit 0 at 1 s (the rank waits 1 s at its fetch) and unit 1 at 4 s, 2 s
// after the rank reaches that fetch: 2 s exposed, and the 2 s hidden take 1 s from the
// compute on two cores. The serial update runs at 200 parameters/s over both: 2 s. The
// delayed update adds 3200 bytes of copies (8 s at 400 B/s) and hides its 4 s behind the
// 16 s step, taking 2 s from the compute.
func TestPredictCPUStep(t *testing.T) {
	p := &step.Program{Buffers: []*step.Buffer{
		{Name: "p0", Shape: []int{100}, Elem: 4, Kind: step.KindParam, Tier: step.Host},
		{Name: "p1", Shape: []int{300}, Elem: 4, Kind: step.KindParam, Tier: step.Host},
		{Name: "p0/c0", Shape: []int{100}, Elem: 4, Kind: step.KindGathered},
		{Name: "p1/c0", Shape: []int{300}, Elem: 4, Kind: step.KindGathered},
	}, Ops: []step.Op{
		{Kind: step.OpCacheFetch, Phase: step.Forward, In: []int{0}, Out: []int{2}, Bytes: 400},
		{Kind: step.OpMatMul, Phase: step.Forward, FLOPs: 1000},
		{Kind: step.OpCacheFetch, Phase: step.Forward, In: []int{1}, Out: []int{3}, Bytes: 1200},
		{Kind: step.OpMatMul, Phase: step.Forward, FLOPs: 3000},
		{Kind: step.OpAdamW, Phase: step.Update, FLOPs: 4800},
	}}
	r := CPURates{Compute: 1000, Copy: 400, Update: 100, UpdateAll: 200, Cores: 2}
	for _, c := range []struct {
		moves, update, exposed, contention, step float64
		mode                                     string
	}{
		{4, 2, 2, 0, 10, HostUpdateAfterBackward},
		{4, 4, 2, 1, 11, HostUpdatePipelined},
		{12, 4, 0, 2, 18, HostUpdateDelayed},
	} {
		s, err := PredictCPUStep(p, r, c.mode)
		if err != nil {
			t.Fatal(err)
		}
		if math.Abs(s.Compute-4) > 1e-12 || math.Abs(s.Moves-c.moves) > 1e-12 || math.Abs(s.Update-c.update) > 1e-12 || math.Abs(s.Contention-c.contention) > 1e-12 ||
			math.Abs(s.UpdateExposed-c.exposed) > 1e-12 || math.Abs(s.Step-c.step) > 1e-12 || s.Units != 2 || s.HostUpdate != c.mode {
			t.Errorf("%s: %s; want %g s exposed, a %g s step", c.mode, s, c.exposed, c.step)
		}
	}
	if _, err := PredictCPUStep(p, CPURates{Compute: 1, Copy: 1, UpdateAll: 1, Cores: 1}, HostUpdatePipelined); err == nil {
		t.Error("a zero update rate predicted a step")
	}
	if _, err := PredictCPUStep(p, r, HostUpdateNone); err == nil {
		t.Error("a step without host state was timed as one with it")
	}
}
