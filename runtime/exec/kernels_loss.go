package exec

// The loss: cross-entropy, vocabulary-parallel under tp, and the scale of the step's mean.

import (
	"math"

	"github.com/moec-dev/moec/compiler/step"
)

// lossScale is what the loss's gradient is multiplied by: 1 over the micro-batches and
// data-parallel replicas the step's mean spans (the cross-entropy's own mean over a
// micro-batch's tokens is in its gradient).
func (k *Kernels) lossScale() float64 {
	return 1 / float64(k.batch.Micro*k.replicas)
}

// crossEntropy runs a cross_entropy op. Under tp each rank holds a slice of the
// vocabulary and the op runs in three passes (pass=max, pass=sum, pass=loss) between the
// reductions of the row maxima and sums.
func (e *Executor) crossEntropy(op *step.Op) error {
	f, in, out := e.f32, op.In, op.Out
	Vl := e.p.Buffers[in[0]].Shape[1]
	first := e.p.Coord.TP * Vl
	var dl []float32 // an evaluation program's loss has no gradient to write
	if len(out) > 1 {
		dl = f[out[1]]
	}
	switch {
	case op.Pass == step.LossMax:
		CrossEntropyMax(f[in[0]], f[out[0]], Vl)
	case op.Pass == step.LossSum:
		CrossEntropySum(f[in[0]], e.i32[in[1]], f[in[2]], f[out[0]], Vl, first)
	case len(in) > 2:
		e.CrossEntropy(f[in[0]], e.i32[in[1]], f[in[2]], f[in[3]], f[out[0]], dl, Vl, first)
	default:
		e.CrossEntropy(f[in[0]], e.i32[in[1]], nil, nil, f[out[0]], dl, Vl, first)
	}
	return nil
}

// CrossEntropyMax writes each row's largest logit (vocabulary-parallel pass 1).
func CrossEntropyMax(logits, mx []float32, Vl int) {
	n := len(logits) / Vl
	for i := 0; i < n; i++ {
		m := float32(math.Inf(-1))
		for _, v := range logits[i*Vl : (i+1)*Vl] {
			m = max(m, v)
		}
		mx[i] = m
	}
}

// CrossEntropySum writes each row's Σ exp(logit − max) and its target's logit when this
// rank's slice of the vocabulary (from first) holds it (vocabulary-parallel pass 2).
func CrossEntropySum(logits []float32, targets []int32, mx, st []float32, Vl, first int) {
	n := len(logits) / Vl
	for i := 0; i < n; i++ {
		st[2*i] = float32(expSum(logits[i*Vl:(i+1)*Vl], float64(mx[i]), 1, nil))
		st[2*i+1] = 0
		if t := int(targets[i]) - first; t >= 0 && t < Vl {
			st[2*i+1] = logits[i*Vl+t]
		}
	}
}

// CrossEntropy writes the mean loss over the micro-batch's tokens and the logits'
// gradient (dl nil: the loss alone), (softmax − onehot) scaled by the step's mean, and
// adds the loss to the step's terms. mx and st are the reduced maxima and sums of a vocabulary-parallel loss (nil: the
// rank holds the whole vocabulary, Vl wide, from first).
func (k *Kernels) CrossEntropy(logits []float32, targets []int32, mx, st, loss, dl []float32, Vl, first int) {
	n := len(logits) / Vl
	scale := k.gradSeed() / float64(n)
	// The rows on the cores, each row's term kept and the terms added in row order: the
	// loss does not depend on the split.
	terms := grow(&k.scratch.terms, n)
	parallel(n, func(r0, r1 int) {
		for i := r0; i < r1; i++ {
			row := logits[i*Vl : (i+1)*Vl]
			var lse, target float64
			if mx != nil {
				lse = float64(mx[i]) + math.Log(float64(st[2*i]))
				target = float64(st[2*i+1])
			} else {
				mx := row[0]
				for _, v := range row {
					mx = max(mx, v)
				}
				lse = float64(mx) + math.Log(expSum(row, float64(mx), 1, nil))
				target = float64(row[targets[i]])
			}
			terms[i] = lse - target
			if dl == nil { // the loss alone
				continue
			}
			drow := dl[i*Vl : (i+1)*Vl]
			expSum(row, lse, scale, drow)
			if t := int(targets[i]) - first; t >= 0 && t < Vl {
				drow[t] -= float32(scale)
			}
		}
	})
	var ce float64
	for _, v := range terms {
		ce += v
	}
	loss[0] = float32(ce / float64(n))
	k.stats.CE += ce / float64(n) * k.lossScale()
	k.stats.Loss = k.stats.CE
	if m := k.m.MoE; m != nil {
		k.stats.Loss += m.BalanceLoss*k.stats.Balance + m.ZLoss*k.stats.ZLoss
	}
}

// expSum writes out[j] = e^(x[j]−shift)·scale (out nil: nothing) and returns
// Σ e^(x[j]−shift): on vector lanes in float32 where it can, else in float64.
func expSum(x []float32, shift, scale float64, out []float32) float64 {
	if s, ok := expSumVec(x, float32(shift), float32(scale), out); ok {
		return s
	}
	var s float64
	for j, v := range x {
		ex := math.Exp(float64(v) - shift)
		s += ex
		if out != nil {
			out[j] = float32(ex * scale)
		}
	}
	return s
}
