package train

import (
	"fmt"
	"path/filepath"
	"slices"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/runtime/checkpoint"
	"github.com/moec-dev/moec/runtime/nn"
	"github.com/moec-dev/moec/runtime/safetensors"
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
// run, or the teacher's tensors of the same names and shapes under init = teacher) or its
// checkpoint (a resumed one). It returns the teacher's checkpoint and tensors.
func loadTeacher(spec *Spec, stage *program.Stage, eng engine) (string, []safetensors.Tensor, error) {
	se, ok := eng.(*stepEngine)
	if ge, onGPU := eng.(*gpuEngine); onGPU {
		// The generated CUDA step reads the teacher's logits its executors compute on the
		// CPU (gpuEngine.fillTeacherLogits).
		se, ok = ge.stepEngine, true
	}
	if !ok {
		e := diag.Runtimef(diag.CodeUnsupportedFeature, "stage %s distills from stage %s, and distillation runs through step programs: the hand-written engine has no teacher", stage.Name, stage.From)
		e.Suggestion = "drop --engine handwritten (and --llvm)"
		return "", nil, e
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
			return "", nil, err
		}
	}
	noFinal := &diag.Diagnostic{Severity: diag.Error, Code: diag.CodeNoFromCheckpoint,
		Summary:    fmt.Sprintf("stage %s distills from stage %s, which has no final checkpoint in %s yet", stage.Name, stage.From, fromDir),
		Suggestion: finishHint(spec, stage, fromDir)}
	if latest == "" {
		return "", nil, noFinal
	}
	c, err := checkpoint.Load(latest, false)
	if err != nil {
		return "", nil, err
	}
	if !c.Manifest.Final {
		return "", nil, noFinal
	}
	if err := CheckWeights(latest, c.Manifest.Model, c.Model); err != nil {
		return "", nil, err
	}
	if c.Manifest.Train != spec.Train.Name || c.Manifest.Stage != stage.From {
		return "", nil, diag.Runtimef(diag.CodeBadGrowth, "stage %s distills from stage %s, but checkpoint %s is of train %s stage %s", stage.Name, stage.From, latest, c.Manifest.Train, c.Manifest.Stage)
	}
	if tv, sv := c.Manifest.Model.Vocab, spec.Model.Vocab; tv != sv {
		return "", nil, diag.Runtimef(diag.CodeCheckpointMismatch, "stage %s's student predicts %d tokens, but its teacher's checkpoint %s predicts %d", stage.Name, sv, latest, tv)
	}
	if err := se.lc.SetTeacher(c.Manifest.Model, c.Model); err != nil {
		return "", nil, diag.RuntimeWrap(diag.CodeCheckpointMismatch, err, "the teacher %s", latest)
	}
	return latest, c.Model, nil
}

// initFromTeacher starts a student from its teacher where their tensors agree (init =
// teacher): each parameter whose name and shape a teacher tensor has takes its values (the
// embeddings, attention, norms and head of a student of the teacher's width; a shallower
// student's layers from the teacher's first ones); the others keep their initialisation.
// It returns how many parameters were copied.
func initFromTeacher(teacher []safetensors.Tensor, eng engine, newNet NewNetFunc, spec *Spec) (int, error) {
	byName := make(map[string]safetensors.Tensor, len(teacher))
	for _, t := range teacher {
		byName[t.Name] = t
	}
	copied := 0
	err := eng.initialise(newNet, spec, func(params []*nn.Param) error {
		for _, p := range params {
			if t, ok := byName[p.Name]; ok && slices.Equal(t.Shape, p.Shape) && len(t.Data) == len(p.W) {
				copy(p.W, t.Data)
				copied++
			}
		}
		return nil
	})
	return copied, err
}
