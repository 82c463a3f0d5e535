package driver

import (
	"testing"

	"github.com/moec-dev/moec/compiler/plan"
	"github.com/moec-dev/moec/compiler/program"
)

// TestPlanStepLayout: the step program moec build lists runs the plan's recompute mode,
// and sequence parallelism exactly where the plan assumed it.
func TestPlanStepLayout(t *testing.T) {
	p := &plan.Plan{Layout: plan.ParallelLayout{DP: 2, EP: 1, TP: 4, PP: 2, Recompute: program.RecomputeSelective},
		Assumptions: []plan.Assumption{{Name: "sequence_parallel", Value: "true"}}}
	l := planStepLayout(p)
	if !l.SP() || !l.RecomputeSelective() || l.TP != 4 || l.PP != 2 || l.DP != 2 {
		t.Errorf("plan tp 4 with sequence_parallel and recompute selective: step layout %s", l)
	}
	p.Assumptions[0].Value = "false"
	p.Layout.Recompute = program.RecomputeFull
	if l := planStepLayout(p); l.SP() || !l.RecomputeFull() {
		t.Errorf("plan without sequence_parallel, recompute full: step layout %s", l)
	}
}
