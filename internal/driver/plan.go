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
	tn := req.Train
	if tn == "" {
		if len(prog.TrainOrder) != 1 {
			return nil, nil, fmt.Errorf("the file has %d train blocks (%v): say which with --train", len(prog.TrainOrder), prog.TrainOrder)
		}
		tn = prog.TrainOrder[0]
	}
	tr, ok := prog.Trains[tn]
	if !ok {
		return nil, nil, fmt.Errorf("no train block for model %q%s", tn, suggest(tn, prog.TrainOrder))
	}
	var names []string
	for _, s := range tr.Stages {
		names = append(names, s.Name)
		if s.Name == req.Stage || (req.Stage == "" && len(tr.Stages) == 1) {
			p, d := plan.ForStage(prog, tr, s, req.Options)
			return p, d, nil
		}
	}
	if req.Stage == "" {
		return nil, nil, fmt.Errorf("train %s has stages %v: say which with --stage", tn, names)
	}
	return nil, nil, fmt.Errorf("train %s has no stage %q (stages: %v)%s", tn, req.Stage, names, suggest(req.Stage, names))
}

func suggest(name string, candidates []string) string {
	if c, ok := diag.Closest(name, candidates); ok {
		return fmt.Sprintf("; did you mean %q?", c)
	}
	return ""
}
