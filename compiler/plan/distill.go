package plan

import (
	"fmt"

	"github.com/moec-dev/moec/compiler/analysis"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/internal/human"
)

// stepDistill is a distillation stage's loss as its step program lowers it (zero: none).
func stepDistill(stage *program.Stage) step.Distill {
	if stage == nil || stage.Distill == nil {
		return step.Distill{}
	}
	d := stage.Distill
	return step.Distill{Temperature: d.Temperature, SoftWeight: d.SoftWeight, HardWeight: d.HardWeight}
}

// distillNote says what a distillation stage's teacher costs beside the student the plan
// is made for: its forward FLOPs per step (no backward) and its weights (each rank that
// computes the loss holds a whole copy, at the step's precision). The plan's step time and
// memory are the student's step program's: they include the teacher's logits, an input of
// the student's loss, but not the teacher's forward or weights, which the note gives.
func distillNote(prog *program.Program, train *program.Train, stage *program.Stage, batchTokens int64, prec program.Precision) string {
	if stage == nil || stage.Distill == nil {
		return ""
	}
	base := prog.Models[train.Model]
	from, err := train.LookupStage(stage.From)
	if base == nil || err != nil {
		return ""
	}
	tm := program.StageModel(base, from)
	seqLen := train.SeqLen
	if seqLen <= 0 {
		seqLen = tm.SeqLen
	}
	counts := analysis.Count(tm)
	flops := analysis.CountFLOPs(tm, seqLen).ForwardPerToken * float64(batchTokens)
	bytes := int64(float64(counts.TotalAll) * prec.Bytes())
	return fmt.Sprintf("stage %s distills from stage %s: its teacher (%s parameters) runs forward beside the student, %s FLOPs per step, and each rank that computes the loss holds its weights, %s; the step time and memory above are the student's and do not include them",
		stage.Name, from.Name, human.Count(float64(counts.TotalAll)), human.SI(flops, ""), human.Bytes(bytes))
}
