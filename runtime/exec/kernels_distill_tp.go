package exec

// The vocabulary-parallel distillation loss: under tp each rank holds a slice of the
// student's and the teacher's logits, and distill_loss runs in four passes between the
// program's all-reduces over tp (compiler/step's distillHead): the rows' maxima, their
// sums of exponentials and target logits, the KL's cross terms, then the loss and the
// slice's gradient, the fused op's formulas from the reduced rows.

import (
	"math"

	"github.com/moec-dev/moec/compiler/step"
)

// DistillLossMax writes each row's largest student and teacher logit of the slice,
// mx[2i] and mx[2i+1] (pass 1; the program takes the maximum over tp).
func DistillLossMax(logits, teacher, mx []float32, Vl int) {
	n := len(logits) / Vl
	for i := 0; i < n; i++ {
		sm, tm := float32(math.Inf(-1)), float32(math.Inf(-1))
		for j := i * Vl; j < (i+1)*Vl; j++ {
			sm, tm = max(sm, logits[j]), max(tm, teacher[j])
		}
		mx[2*i], mx[2*i+1] = sm, tm
	}
}

// DistillLossSum writes, for each row of the slice (from first) with the reduced maxima
// mx, Σ e^(z−m), Σ e^((z−m)/T), Σ e^((t−m_t)/T) and the target's logit when the slice
// holds it (else 0) into st[4i:4i+4] (pass 2; the program sums them over tp).
func DistillLossSum(logits []float32, targets []int32, teacher, mx, st []float32, Vl, first int, d step.Distill) {
	n := len(logits) / Vl
	invT := 1 / d.Temperature
	parallel(n, func(r0, r1 int) {
		for i := r0; i < r1; i++ {
			row, trow := logits[i*Vl:(i+1)*Vl], teacher[i*Vl:(i+1)*Vl]
			sm, tm := float64(mx[2*i]), float64(mx[2*i+1])
			var ss, ts float64
			for j := range row {
				ss += math.Exp((float64(row[j]) - sm) * invT)
				ts += math.Exp((float64(trow[j]) - tm) * invT)
			}
			o := st[4*i : 4*i+4]
			o[0], o[1], o[2], o[3] = float32(expSum(row, sm, 1, nil)), float32(ss), float32(ts), 0
			if t := int(targets[i]) - first; t >= 0 && t < Vl {
				o[3] = row[t]
			}
		}
	})
}

// DistillLossCross writes each row's part, over the slice, of the KL's
// Σ p_t·(log p_t − log p_s) at temperature T, from the reduced maxima and sums (pass 3;
// the program sums it over tp).
func DistillLossCross(logits, teacher, mx, st, cross []float32, Vl int, d step.Distill) {
	n := len(logits) / Vl
	invT := 1 / d.Temperature
	parallel(n, func(r0, r1 int) {
		for i := r0; i < r1; i++ {
			row, trow := logits[i*Vl:(i+1)*Vl], teacher[i*Vl:(i+1)*Vl]
			sm, tm := float64(mx[2*i]), float64(mx[2*i+1])
			slse, tlse := math.Log(float64(st[4*i+1])), math.Log(float64(st[4*i+2]))
			var kl float64
			for j := range row {
				lt := (float64(trow[j])-tm)*invT - tlse
				ls := (float64(row[j])-sm)*invT - slse
				if pt := math.Exp(lt); pt > 0 {
					kl += pt * (lt - ls)
				}
			}
			cross[i] = float32(kl)
		}
	})
}

// DistillLossParallel is DistillLoss on a rank's slice of the vocabulary (Vl wide, from
// first) from the reduced maxima mx, sums st and cross terms (pass 4): it writes the
// micro-batch's mean loss and the slice's gradient (dl nil: the loss alone) and adds the
// cross-entropy and the soft loss to the step's terms, as DistillLoss does with the whole
// rows.
func (k *Kernels) DistillLossParallel(logits []float32, targets []int32, teacher, mx, st, cross, loss, dl []float32, Vl, first int, d step.Distill) {
	n := len(logits) / Vl
	scale := k.gradSeed() / float64(n)
	T, invT := d.Temperature, 1/d.Temperature
	terms := grow(&k.scratch.terms, 2*n) // each row's cross-entropy, then its T²·KL
	parallel(n, func(r0, r1 int) {
		for i := r0; i < r1; i++ {
			sm, tm := float64(mx[2*i]), float64(mx[2*i+1])
			lse := sm + math.Log(float64(st[4*i]))
			terms[i] = lse - float64(st[4*i+3])
			terms[n+i] = T * T * float64(cross[i])
			if dl == nil {
				continue
			}
			row, trow, drow := logits[i*Vl:(i+1)*Vl], teacher[i*Vl:(i+1)*Vl], dl[i*Vl:(i+1)*Vl]
			hard := scale * d.HardWeight
			expSum(row, lse, hard, drow)
			if t := int(targets[i]) - first; t >= 0 && t < Vl {
				drow[t] -= float32(hard)
			}
			if d.SoftWeight == 0 {
				continue
			}
			soft := scale * d.SoftWeight * T
			slse, tlse := math.Log(float64(st[4*i+1])), math.Log(float64(st[4*i+2]))
			for j := range drow {
				ps := math.Exp((float64(row[j])-sm)*invT - slse)
				pt := math.Exp((float64(trow[j])-tm)*invT - tlse)
				drow[j] += float32(soft * (ps - pt))
			}
		}
	})
	k.addDistillTerms(terms, n, loss, d)
}
