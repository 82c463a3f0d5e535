package cudastep

import (
	"fmt"

	"github.com/moec-dev/moec/compiler/step"
)

// A distillation stage's loss (compiler/step's distill.go): distill_loss in its fused form
// at tp 1, as runtime/exec's DistillLoss computes it. The teacher's logits of each
// micro-batch are an input buffer (teacher_logits@m) the runner fills before the step;
// under tp > 1 the loss runs in passes between all-reduces, which are not lowered yet
// (supported refuses the layout).

// distill lowers a fused distill_loss (in: the student's logits, the targets, the
// teacher's logits; out: the loss and, in a training program, the logits' gradient):
// dense_distill writes each row's cross-entropy and soft loss and the gradient, and
// dense_distill_mean the micro-batch's means into a LossWork slot (the cross-entropy) and
// a SoftWork slot (T²·KL), which the host adds into the step's loss terms.
func (lw *opLowerer) distill(op *step.Op, add func(...Launch)) error {
	in, out := op.In, op.Out
	if op.Pass != step.LossWhole || len(in) != 3 {
		return fmt.Errorf("distillation under tensor parallelism (pass %d with %d inputs) is not lowered to CUDA yet; train this stage on the CPU (without --device)", op.Pass, len(in))
	}
	if len(lw.shape(in[0])) != 2 {
		return fmt.Errorf("distill_loss over logits %v", lw.shape(in[0]))
	}
	d := op.Distill
	if !d.On() {
		return fmt.Errorf("distill_loss without a temperature (%s)", d)
	}
	V := lw.shape(in[0])[1]
	rows := int(lw.n(in[0])) / V
	if lw.n(in[2]) != lw.n(in[0]) {
		return fmt.Errorf("distill_loss: the teacher's logits hold %d values, the student's %d", lw.n(in[2]), lw.n(in[0]))
	}
	dl := NullArg(PtrF32) // an evaluation program's loss has no gradient to write
	if len(out) > 1 {
		dl = lw.buf(out[1])
	}
	scale := lw.out.LossScale / float64(rows)
	terms := WorkArg(PtrF32, termsWork, int64(2*rows)*4) // the rows' cross-entropies, then their soft losses
	ce := WorkArg(PtrF32, LossWork, 0)
	ce.Offset = int64(2 * lw.out.LossSlots)
	lw.out.LossSlots++
	kl := WorkArg(PtrF32, SoftWork, 0)
	kl.Offset = int64(2 * lw.out.SoftSlots)
	lw.out.SoftSlots++
	add(densePerRow("dense_distill", rows, lw.buf(in[0]), lw.ints(in[1]), lw.buf(in[2]), dl, terms,
		int32Arg(rows), int32Arg(V), FloatArg(float32(1/d.Temperature)), FloatArg(float32(d.Temperature*d.Temperature)),
		LossScaledArg(float32(scale*d.HardWeight)), LossScaledArg(float32(scale*d.SoftWeight*d.Temperature))))
	add(Launch{Kernel: "dense_distill_mean", Grid: [3]int{1, 1, 1}, Block: [3]int{32, 1, 1},
		Args: []Arg{terms, lw.buf(out[0]), ce, kl, int32Arg(rows), FloatArg(float32(d.HardWeight)), FloatArg(float32(d.SoftWeight))}})
	return nil
}
