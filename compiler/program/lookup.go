package program

import (
	"fmt"
	"strings"

	"github.com/moec-dev/moec/lang/diag"
)

// LookupTrain finds the train block a command names, or the only one when name is empty.
// A name that is not there, or an empty name with several train blocks (or none), is a
// diagnostic naming what there is, with a did-you-mean for a likely typo.
func (p *Program) LookupTrain(name string) (*Train, error) {
	if name == "" {
		switch len(p.TrainOrder) {
		case 1:
			return p.Trains[p.TrainOrder[0]], nil
		case 0:
			return nil, diag.Runtimef(diag.CodeUnknownTrain, "the file has no train block; this needs one (a `train MODEL on CLUSTER { ... }` with its stages)")
		}
		return nil, diag.Runtimef(diag.CodeUnknownTrain, "the file has %d train blocks (%s); say which with --train", len(p.TrainOrder), strings.Join(p.TrainOrder, ", "))
	}
	if t, ok := p.Trains[name]; ok {
		return t, nil
	}
	known := "it has none"
	if len(p.TrainOrder) > 0 {
		known = "train blocks: " + strings.Join(p.TrainOrder, ", ")
	}
	e := diag.Runtimef(diag.CodeUnknownTrain, "no train block %q (%s)", name, known)
	if c, ok := diag.Closest(name, p.TrainOrder); ok {
		e.Suggestion = fmt.Sprintf("did you mean `%s`?", c)
	}
	return nil, e
}

// LookupStage finds the stage a command names, or the only one when name is empty, with
// a diagnostic like LookupTrain's otherwise.
func (t *Train) LookupStage(name string) (*Stage, error) {
	var names []string
	for _, s := range t.Stages {
		if s.Name == name {
			return s, nil
		}
		names = append(names, s.Name)
	}
	if name == "" {
		if len(t.Stages) == 1 {
			return t.Stages[0], nil
		}
		return nil, diag.Runtimef(diag.CodeUnknownStage, "train %s has %d stages (%s); say which with --stage", t.Name, len(names), strings.Join(names, ", "))
	}
	e := diag.Runtimef(diag.CodeUnknownStage, "train %s has no stage %q (stages: %s)", t.Name, name, strings.Join(names, ", "))
	if c, ok := diag.Closest(name, names); ok {
		e.Suggestion = fmt.Sprintf("did you mean `%s`?", c)
	}
	return nil, e
}
