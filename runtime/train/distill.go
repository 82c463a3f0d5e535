package train

import (
	"fmt"
	"path/filepath"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/runtime/checkpoint"
)

// stepDistill is a stage's distillation loss as its step program lowers it (the zero value
// for a stage that does not distill).
func stepDistill(spec *Spec) step.Distill {
	if spec.Train == nil {
		return step.Distill{}
	}
	st, err := spec.Train.LookupStage(spec.Stage)
	if err != nil || st.Distill == nil {
		return step.Distill{}
	}
	d := st.Distill
	return step.Distill{Temperature: d.Temperature, SoftWeight: d.SoftWeight, HardWeight: d.HardWeight}
}

// loadTeacher gives a distillation stage's engine its teacher: the final checkpoint of
// the stage it distills from (--from's checkpoint when given), or on resume the one the
// run started with (run.json's teacher). The student keeps its own initialisation (a new
// run) or its checkpoint (a resumed one). It returns the teacher's checkpoint.
func loadTeacher(spec *Spec, stage *program.Stage, eng engine) (string, error) {
	se, ok := eng.(*stepEngine)
	if !ok {
		e := diag.Runtimef(diag.ErrUnsupportedFeature, "stage %s distills from stage %s, and distillation runs through step programs: the hand-written engine has no teacher", stage.Name, stage.From)
		e.Suggestion = "drop --engine handwritten (and --llvm)"
		return "", e
	}
	latest := spec.Teacher
	fromDir := filepath.Dir(latest)
	var err error
	if latest == "" {
		fromDir = filepath.Join(StageDir(spec.OutRoot, spec.Train.Name, stage.From), CheckpointsDir)
		if spec.From != "" {
			fromDir = spec.From
			latest, err = ResolveCheckpoint(spec.From)
		} else {
			latest, err = checkpoint.Latest(fromDir)
		}
		if err != nil {
			return "", err
		}
	}
	noFinal := &diag.RuntimeError{Code: diag.ErrNoFromCheckpoint,
		Message:    fmt.Sprintf("stage %s distills from stage %s, which has no final checkpoint in %s yet", stage.Name, stage.From, fromDir),
		Suggestion: finishHint(spec, stage, fromDir)}
	if latest == "" {
		return "", noFinal
	}
	c, err := checkpoint.Load(latest, false)
	if err != nil {
		return "", err
	}
	if !c.Manifest.Final {
		return "", noFinal
	}
	if err := CheckWeights(latest, c.Manifest.Model, c.Model); err != nil {
		return "", err
	}
	if c.Manifest.Train != spec.Train.Name || c.Manifest.Stage != stage.From {
		return "", diag.Runtimef(diag.ErrBadGrowth, "stage %s distills from stage %s, but checkpoint %s is of train %s stage %s", stage.Name, stage.From, latest, c.Manifest.Train, c.Manifest.Stage)
	}
	if tv, sv := c.Manifest.Model.Vocab, spec.Model.Vocab; tv != sv {
		return "", diag.Runtimef(diag.ErrCheckpointMismatch, "stage %s's student predicts %d tokens, but its teacher's checkpoint %s predicts %d", stage.Name, sv, latest, tv)
	}
	if err := se.lc.SetTeacher(c.Manifest.Model, c.Model); err != nil {
		return "", diag.RuntimeWrap(diag.ErrCheckpointMismatch, err, "the teacher %s", latest)
	}
	return latest, nil
}
