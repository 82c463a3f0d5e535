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

// teacherModel is a distillation stage's teacher (the stage it distills from, grown from
// the train's model), or nil.
func teacherModel(train *program.Train, stage *program.Stage, base *program.Model) *program.Model {
	if stage == nil || stage.Distill == nil || base == nil {
		return nil
	}
	from, err := train.LookupStage(stage.From)
	if err != nil {
		return nil
	}
	return program.StageModel(base, from)
}

// distillNote says what a distillation stage's teacher costs beside the student: its
// forward FLOPs per step (no backward) and its weights. A GPU plan includes both (the
// teacher's forward in the compute time, its weights in each device's memory, sliced by
// tensor, expert and pipeline parallelism as an inference engine holds them, replicated
// over the data-parallel ranks); a local plan's memory is the student's step program's,
// which holds the teacher's logits but not its weights, and the note says so.
func distillNote(prog *program.Program, train *program.Train, stage *program.Stage, batchTokens int64, prec program.Precision, included bool) string {
	tm := teacherModel(train, stage, prog.Models[train.Model])
	if tm == nil {
		return ""
	}
	seqLen := train.SeqLen
	if seqLen <= 0 {
		seqLen = tm.SeqLen
	}
	counts := analysis.Count(tm)
	flops := analysis.CountFLOPs(tm, seqLen).ForwardPerToken * float64(batchTokens)
	bytes := int64(float64(counts.TotalAll) * prec.Bytes())
	head := fmt.Sprintf("stage %s distills from stage %s: its teacher (%s parameters, %s at %s) runs forward beside the student, %s FLOPs per step",
		stage.Name, stage.From, human.Count(float64(counts.TotalAll)), human.Bytes(bytes), prec, human.SI(flops, ""))
	if included {
		return head + "; the step time includes its forward (teacher_seconds) and each device's memory its weights (teacher weights: the model-parallel share, replicated over data parallelism)"
	}
	return head + "; each rank that computes the loss holds its weights, which the memory above (the student's step program) does not include"
}
