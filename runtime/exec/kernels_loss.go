package exec

// The loss: cross-entropy, vocabulary-parallel under tp, and the scale of the step's mean.

import (
	"math"
	"strings"

	"github.com/moec-dev/moec/compiler/step"
)

// lossScale is what the loss's gradient is multiplied by: 1 over the micro-batches and
// data-parallel replicas the step's mean spans (the cross-entropy's own mean over a
// micro-batch's tokens is in its gradient).
func (e *Executor) lossScale() float64 {
	return 1 / float64(e.p.Batch.Micro*e.p.Layout.DP)
}

// crossEntropy writes the mean loss over the micro-batch's tokens and the logits'
// gradient, (softmax − onehot) scaled by the step's mean. Under tp each rank holds a
// slice of the vocabulary and the op runs in three passes (pass=max, pass=sum, pass=loss)
// between the reductions of the row maxima and sums.
func (e *Executor) crossEntropy(op *step.Op) error {
	logits := e.f32[op.In[0]]
	Vl := e.p.Buffers[op.In[0]].Shape[1]
	n := len(logits) / Vl
	first := e.p.Coord.TP * Vl
	switch {
	case strings.HasPrefix(op.Attr, "pass=max"):
		mx := e.f32[op.Out[0]]
		for i := 0; i < n; i++ {
			m := float32(math.Inf(-1))
			for _, v := range logits[i*Vl : (i+1)*Vl] {
				m = max(m, v)
			}
			mx[i] = m
		}
		return nil
	case strings.HasPrefix(op.Attr, "pass=sum"):
		targets, mx, st := e.i32[op.In[1]], e.f32[op.In[2]], e.f32[op.Out[0]]
		for i := 0; i < n; i++ {
			st[2*i] = float32(expSum(logits[i*Vl:(i+1)*Vl], float64(mx[i]), 1, nil))
			st[2*i+1] = 0
			if t := int(targets[i]) - first; t >= 0 && t < Vl {
				st[2*i+1] = logits[i*Vl+t]
			}
		}
		return nil
	}
	targets := e.i32[op.In[1]]
	loss, dl := e.f32[op.Out[0]], e.f32[op.Out[1]]
	scale := e.lossScale() / float64(n)
	var ce float64
	for i := 0; i < n; i++ {
		row, drow := logits[i*Vl:(i+1)*Vl], dl[i*Vl:(i+1)*Vl]
		var lse, target float64
		if len(op.In) > 2 {
			mx, st := e.f32[op.In[2]], e.f32[op.In[3]]
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
		ce += lse - target
		expSum(row, lse, scale, drow)
		if t := int(targets[i]) - first; t >= 0 && t < Vl {
			drow[t] -= float32(scale)
		}
	}
	loss[0] = float32(ce / float64(n))
	e.stats.CE += ce / float64(n) * e.lossScale()
	e.stats.Loss = e.stats.CE
	if m := e.m.MoE; m != nil {
		e.stats.Loss += m.BalanceLoss*e.stats.Balance + m.ZLoss*e.stats.ZLoss
	}
	return nil
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
