package driver

import (
	"fmt"

	"github.com/moec-dev/moec/compiler/plan"
	"github.com/moec-dev/moec/lang/diag"
)

// PlanRequest says what `moec plan` plans.
type PlanRequest struct {
	Train, Stage, Serve string
	Options             plan.Options
}

// Plan plans one stage or serve block of a checked program.
func Plan(l *Loaded, req PlanRequest) (*plan.Plan, diag.List, error) {
	prog := l.Program
	if req.Serve != "" {
		sv, ok := prog.Serves[req.Serve]
		if !ok {
			return nil, nil, fmt.Errorf("no serve block for model %q%s", req.Serve, suggest(req.Serve, prog.ServeOrder))
		}
		p, d := plan.ForServe(prog, sv, req.Options)
		return p, d, nil
	}
	tr, err := prog.LookupTrain(req.Train)
	if err != nil {
		return nil, nil, err
	}
	st, err := tr.LookupStage(req.Stage)
	if err != nil {
		return nil, nil, err
	}
	p, d := plan.ForStage(prog, tr, st, req.Options)
	return p, d, nil
}

func suggest(name string, candidates []string) string {
	if c, ok := diag.Closest(name, candidates); ok {
		return fmt.Sprintf("; did you mean %q?", c)
	}
	return ""
}
