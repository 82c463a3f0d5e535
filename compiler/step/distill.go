package step

import "fmt"

// Distill is a distillation stage's loss (program.Distill): the step's loss op is
// distill_loss instead of cross_entropy, reading the teacher's logits of each micro-batch
// from an input buffer (teacher_logits@m, [tokens, vocabulary]) that the runner fills
// before the step by running the teacher's forward-only program (Evaluation of the
// teacher stage's model) on the same tokens. The zero value is no distillation.
//
// The op writes the mean over the micro-batch's tokens of
//
//	hard·CE(student, labels) + soft·T²·KL(softmax(teacher/T) ‖ softmax(student/T))
//
// and, fused as cross_entropy's is, the logits' gradient
//
//	hard·(softmax(student) − onehot) + soft·T·(softmax(student/T) − softmax(teacher/T)),
//
// both scaled by the step's mean. The teacher holds no gradient: its logits are an input.
type Distill struct {
	Temperature, SoftWeight, HardWeight float64
}

// On reports whether the stage distills.
func (d Distill) On() bool { return d.Temperature > 0 }

func (d Distill) String() string {
	return fmt.Sprintf("distill T=%g soft=%g hard=%g", d.Temperature, d.SoftWeight, d.HardWeight)
}

// OpDistillLoss is the distillation loss: inputs the student's logits, the targets and
// the teacher's logits; outputs the loss and the logits' gradient.
const OpDistillLoss OpKind = "distill_loss"

// TeacherLogits is the name of micro-batch micro's teacher-logits input.
func TeacherLogits(micro int) string { return fmt.Sprintf("teacher_logits@%d", micro) }

// distillUnsupported says why l cannot lower a distillation loss: the teacher's logits are
// whole rows of the vocabulary, which a vocabulary-parallel head (tp > 1) splits.
func distillUnsupported(l Layout) []Unsupported {
	if !l.Distill.On() || l.TP <= 1 {
		return nil
	}
	return []Unsupported{{Feature: "distillation", Why: "the teacher's logits are whole rows of the vocabulary, which a vocabulary-parallel head splits over tp; run the distill stage with tp 1"}}
}

// distillHead emits the distillation loss of the current micro-batch in place of
// cross_entropy; it returns the loss buffer and the logits' gradient.
func (lw *lowerer) distillHead(logits, targets int) (int, int) {
	n := lw.b.Tokens()
	teacher := lw.buf(TeacherLogits(lw.micro), KindInput, n, lw.vLocal)
	loss := lw.act("loss", KindScalar, 1)
	dlogits := lw.act("dlogits", KindActGrad, n, lw.vLocal)
	d := lw.l.Distill
	attr := fmt.Sprintf("%s; mean over %d tokens × %d micro-batches × %d replicas; writes the logits' gradient", d, n, lw.b.Micro, lw.l.DP)
	// Three softmaxes (the student's at 1 and at T, the teacher's at T) and their terms.
	lw.fwd(Op{Kind: OpDistillLoss, Layer: -1, In: []int{logits, targets, teacher}, Out: []int{loss, dlogits}, Attr: attr, Distill: d,
		FLOPs: 12 * int64(n) * int64(lw.vLocal)})
	return loss, dlogits
}
