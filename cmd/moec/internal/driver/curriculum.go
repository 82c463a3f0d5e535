package driver

import (
	"fmt"

	"github.com/moec-dev/moec/compiler/program"
)

// StageRef names one stage of one train block.
type StageRef struct{ Train, Stage string }

// CurriculumOrder lists a train block's stages so that every stage comes after the stage
// it grows from (the checker has already refused cycles).
func CurriculumOrder(prog *program.Program, trainName string) ([]StageRef, error) {
	tr, err := prog.LookupTrain(trainName)
	if err != nil {
		return nil, err
	}
	done := map[string]bool{}
	var out []StageRef
	for len(out) < len(tr.Stages) {
		progressed := false
		for _, s := range tr.Stages {
			if done[s.Name] || (s.From != "" && !done[s.From]) {
				continue
			}
			done[s.Name] = true
			out = append(out, StageRef{Train: tr.Name, Stage: s.Name})
			progressed = true
		}
		if !progressed {
			return nil, fmt.Errorf("train %s: the stages' `from` links do not form a curriculum", tr.Name)
		}
	}
	return out, nil
}
