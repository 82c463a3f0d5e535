package step

import "fmt"

// Distill is a distillation stage's loss (program.Distill): the step's loss op is
// distill_loss instead of cross_entropy, reading the teacher's logits of each micro-batch
// from an input buffer (teacher_logits@m, [tokens, vocabulary]) that the runner fills
// before the step by running the teacher's forward-only program (Evaluation of the
// teacher stage's model) on the same tokens. Under tp > 1 the buffer holds the rank's
// slice of the vocabulary, the columns its head's logits hold, and the loss is
// vocabulary-parallel (distillHead). The zero value is no distillation.
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

// distillHead emits the distillation loss of the current micro-batch in place of
// cross_entropy; it returns the loss buffer and the logits' gradient. Under tp > 1 the
// head is vocabulary-parallel: each rank holds its slice of the student's and of the
// teacher's logits, and the loss runs in passes between all-reduces over tp, as
// Megatron's vocabulary-parallel cross-entropy does:
//
//	pass=max    each row's largest student and teacher logit of the slice   → all-reduce max
//	pass=sum    the slice's Σ e^(z−m), Σ e^((z−m)/T), Σ e^((t−m_t)/T) and
//	            the target's logit (0 on the ranks that do not hold it)     → all-reduce sum
//	pass=cross  the slice's part of Σ p_t·(log p_t − log p_s) at T           → all-reduce sum
//	pass=loss   the loss from the reduced rows, the gradient of the slice
//
// so the loss and gradient are the ones the fused op defines at tp 1.
func (lw *lowerer) distillHead(logits, targets int) (int, int) {
	n := lw.b.Tokens()
	teacher := lw.buf(TeacherLogits(lw.micro), KindInput, n, lw.vLocal)
	loss := lw.act("loss", KindScalar, 1)
	dlogits := lw.act("dlogits", KindActGrad, n, lw.vLocal)
	d := lw.l.Distill
	attr := fmt.Sprintf("%s; mean over %d tokens × %d micro-batches × %d replicas; writes the logits' gradient", d, n, lw.b.Micro, lw.l.DP)
	in := []int{logits, targets, teacher}
	// Three softmaxes (the student's at 1 and at T, the teacher's at T) and their terms.
	flops := 12 * int64(n) * int64(lw.vLocal)
	if lw.l.TP > 1 {
		in = append(in, lw.distillReductions(logits, targets, teacher)...)
		attr = "pass=loss " + attr
		flops = 6 * int64(n) * int64(lw.vLocal) // the sums are the passes': the gradient's exponentials
	}
	lw.fwd(Op{Kind: OpDistillLoss, Layer: -1, In: in, Out: []int{loss, dlogits}, Attr: attr, Distill: d, FLOPs: flops})
	return loss, dlogits
}

// distillReductions emits a vocabulary-parallel distillation loss's first three passes
// and their all-reduces over tp; it returns the reduced maxima, sums and cross terms, the
// loss pass's further inputs.
func (lw *lowerer) distillReductions(logits, targets, teacher int) []int {
	n, d := lw.b.Tokens(), lw.l.Distill
	reduce := func(buf int, max bool) {
		attr := "sum"
		if max {
			attr = "max"
		}
		lw.emit(Op{Kind: OpAllReduce, Phase: Forward, Layer: -1, In: []int{buf}, Out: []int{buf}, Group: "tp", Attr: attr, ReduceMax: max,
			Bytes: lw.p.Buffers[buf].Bytes()})
	}
	mx := lw.act("distill_max", KindScalar, n, 2) // the student's and the teacher's row maxima
	lw.fwd(Op{Kind: OpDistillLoss, Layer: -1, In: []int{logits, teacher}, Out: []int{mx}, Attr: "pass=max", Pass: LossMax, Distill: d,
		FLOPs: 2 * int64(n) * int64(lw.vLocal)})
	reduce(mx, true)
	// Σ e^(z−m), Σ e^((z−m)/T), Σ e^((t−m_t)/T) and the target's logit.
	st := lw.act("distill_sum", KindScalar, n, 4)
	lw.fwd(Op{Kind: OpDistillLoss, Layer: -1, In: []int{logits, targets, teacher, mx}, Out: []int{st}, Attr: "pass=sum", Pass: LossSum, Distill: d,
		FLOPs: 6 * int64(n) * int64(lw.vLocal)})
	reduce(st, false)
	cross := lw.act("distill_cross", KindScalar, n) // Σ p_t·(log p_t − log p_s) at T
	lw.fwd(Op{Kind: OpDistillLoss, Layer: -1, In: []int{logits, teacher, mx, st}, Out: []int{cross}, Attr: "pass=cross", Pass: LossCross, Distill: d,
		FLOPs: 6 * int64(n) * int64(lw.vLocal)})
	reduce(cross, false)
	return []int{mx, st, cross}
}
