package plan

import (
	"fmt"

	"github.com/moec-dev/moec/compiler/step"
)

// The step time of a CPU rank under the unified cache, from its step program and the
// machine's measured kernel rates: the planner's host-update timelines (overlap.go) as
// the CPU runtime runs them. On the CPU the "device" compute, the cache's copies and the
// AdamW update are all the host's: compute and copies run one after another on the
// rank's goroutine; the update runs either after the backward, inside the step (the
// serial update), or on a helper goroutine, unit by unit in the order the next step's
// forward fetches the units, each landing before its unit's fetch (runtime/exec's
// asynchronous host update). The helper has no core of its own: the rank's kernels
// spread over all Cores, so the part of the update that hides behind the compute still
// takes 1/Cores of its time from it.

// CPURates are one CPU rank's kernel rates, each measured on its own (not fitted to a
// step time).
type CPURates struct {
	Compute float64 // FLOP/s over the step's ops, as the listing counts their FLOPs
	Copy    float64 // bytes/s of one host↔device copy (the cache's fetches and write-backs)
	// Update is parameters/s of the AdamW update on one goroutine (the helper's);
	// UpdateAll the in-step update's over all cores.
	Update, UpdateAll float64
	Cores             int // the cores the rank's kernels spread over (GOMAXPROCS)
}

// CPUStep is a predicted step of one CPU rank, in seconds.
type CPUStep struct {
	Compute       float64 // the ops' FLOPs at Rates.Compute
	Moves         float64 // the cache's fetched and written-back bytes at Rates.Copy
	Update        float64 // the rank's parameters at Rates.UpdateAll (serial) or Rates.Update (the helper)
	UpdateExposed float64 // what of Update the step waits for
	Contention    float64 // the compute time the helper's hidden update takes: hidden / Cores
	Step          float64 // Compute + Moves + UpdateExposed + Contention
	Units         int     // the units the update lands in (the cache's fetch order)
	HostUpdate    string  // HostUpdateAfterBackward (serial), HostUpdatePipelined or HostUpdateDelayed
}

func (s CPUStep) String() string {
	return fmt.Sprintf("%.4g s (compute %.4g s, cache copies %.4g s, update %.4g s of which %.4g s exposed and %.4g s taken from the compute, %s over %d units)",
		s.Step, s.Compute, s.Moves, s.Update, s.UpdateExposed, s.Contention, s.HostUpdate, s.Units)
}

// PredictCPUStep predicts one step of p at rates r with the host update of mode:
// HostUpdateAfterBackward (serial, inside the step), HostUpdatePipelined (the helper
// updates unit k, the k-th the forward fetches, after units 0..k−1, and the rank waits at
// unit k's first fetch until it lands: the exposed update is the largest lead of the
// helper's cumulative update over the rank's time to that fetch, max over k of
// Σ_{j≤k} update_j − before_k) or HostUpdateDelayed (the helper updates a master copy
// during the whole next step, which waits for it at its own update: what exceeds the
// step is exposed; copying the master weights in and the gradients out counts as moves).
func PredictCPUStep(p *step.Program, r CPURates, mode string) (CPUStep, error) {
	if r.Compute <= 0 || r.Copy <= 0 || r.Update <= 0 || r.UpdateAll <= 0 || r.Cores < 1 {
		return CPUStep{}, fmt.Errorf("plan: CPU rates must be positive: %+v", r)
	}
	switch mode {
	case HostUpdateAfterBackward, HostUpdatePipelined, HostUpdateDelayed:
	default:
		return CPUStep{}, fmt.Errorf("plan: no CPU timing for the host update %q", mode)
	}
	var s CPUStep
	unitOf := map[int]int{} // host parameter buffer → its unit in fetch order
	var unitParams []int64  // parameters per unit
	var before []float64    // the rank's seconds before each unit's first fetch
	elapsed := 0.0
	for _, op := range p.Ops {
		if op.Kind == step.OpCacheFetch {
			first := -1
			for _, b := range op.In {
				if _, seen := unitOf[b]; !seen && p.Buffers[b].Kind == step.KindParam {
					if first < 0 {
						first = len(unitParams)
						unitParams = append(unitParams, 0)
						before = append(before, elapsed)
					}
					unitOf[b] = first
					unitParams[first] += p.Buffers[b].Elements()
				}
			}
		}
		if op.Phase == step.Update && op.Kind == step.OpAdamW {
			continue // the update is timed by its parameters
		}
		t := float64(op.FLOPs) / r.Compute
		if op.Kind.Moves() {
			t = float64(op.Bytes) / r.Copy
			s.Moves += t
		} else {
			s.Compute += t
		}
		elapsed += t
	}
	var total int64 // every parameter the rank holds (those no fetch reads land last)
	for _, b := range p.Buffers {
		if b.Kind == step.KindParam {
			total += b.Elements()
		}
	}
	s.Update = float64(total) / r.UpdateAll
	s.Units = len(unitParams)
	s.HostUpdate = HostUpdateAfterBackward
	s.UpdateExposed = s.Update
	switch {
	case len(unitParams) == 0:
	case mode == HostUpdateDelayed:
		s.HostUpdate = HostUpdateDelayed
		s.Update = float64(total) / r.Update
		s.Moves += 2 * 4 * float64(total) / r.Copy // the master weights in, the gradients out
		s.UpdateExposed = max(0, s.Update-(s.Compute+s.Moves))
		s.Contention = (s.Update - s.UpdateExposed) / float64(r.Cores)
	case mode == HostUpdatePipelined:
		s.HostUpdate = HostUpdatePipelined
		s.Update = float64(total) / r.Update
		s.UpdateExposed = 0
		done := 0.0
		for k, n := range unitParams {
			done += float64(n) / r.Update
			s.UpdateExposed = max(s.UpdateExposed, done-before[k])
		}
		// Parameters no fetch reads land after the last unit: the next step's update waits.
		s.UpdateExposed = max(s.UpdateExposed, s.Update-elapsed)
		s.Contention = (s.Update - s.UpdateExposed) / float64(r.Cores)
	}
	s.Step = s.Compute + s.Moves + s.UpdateExposed + s.Contention
	return s, nil
}
