package optim

import (
	"errors"
	"fmt"

	"github.com/moec-dev/moec/runtime/optim/internal/fused"
)

// Deferred is one AdamW update whose step-wide rules are settled (the global gradient
// norm, the clipping, the learning rate and the update count: StepDeferred) and whose
// tensors are updated later, a few at a time, by Apply: the unified cache's asynchronous
// host update, which updates one unit of a model while the next computes. Every tensor
// gets exactly the arithmetic Step would give it, so applying every tensor once is Step.
type Deferred struct {
	o         *AdamW
	lr, scale float64
	step      int64
}

// StepDeferred is StepReduced without the update: it measures the norm (an error leaves
// weights and state untouched, as StepReduced's does), counts the update and returns it
// to be applied. The gradients, weights and moments of a tensor must not change between
// StepDeferred and its Apply, and the next step must not start before every tensor is
// applied.
func (o *AdamW) StepDeferred(gradScale float64, reduce func(localSumSquares float64) (float64, error)) (StepInfo, *Deferred, error) {
	return o.deferred(o.measure(gradScale, reduce))
}

// StepDeferredGlobal is StepDeferred with the global sum of squares of the scaled
// gradients already known (see StepGlobal).
func (o *AdamW) StepDeferredGlobal(gradScale, sumSquares float64) (StepInfo, *Deferred, error) {
	return o.deferred(o.settle(gradScale, sumSquares))
}

func (o *AdamW) deferred(info StepInfo, scale float64, err error) (StepInfo, *Deferred, error) {
	if err != nil {
		return info, nil, err
	}
	o.step++
	return info, &Deferred{o: o, lr: info.LR, scale: scale, step: o.step}, nil
}

// Apply updates the tensors params (indices into the optimizer's parameters) on the
// calling goroutine, one after another: it uses no worker of its own, so that it can run
// beside the computation it overlaps.
func (d *Deferred) Apply(params []int) error {
	o := d.o
	u := Update{Scale: d.scale, LR: d.lr, Beta1: o.cfg.Beta1, Beta2: o.cfg.Beta2, Eps: o.cfg.Eps, Step: d.step}
	noDecay := fused.NewCoeffs(u.Scale, u.LR, u.Beta1, u.Beta2, u.Eps, 0, u.Step)
	decay := fused.NewCoeffs(u.Scale, u.LR, u.Beta1, u.Beta2, u.Eps, o.cfg.WeightDecay, u.Step)
	var errs []error
	for _, i := range params {
		if i < 0 || i >= len(o.params) {
			return fmt.Errorf("optim: no parameter %d of %d to update", i, len(o.params))
		}
		p := o.params[i]
		if len(p.W) == 0 {
			continue
		}
		if o.tensor != nil {
			ut := u
			if o.decay[i] {
				ut.WeightDecay = o.cfg.WeightDecay
			}
			if err := o.tensor(p, o.m[i], o.v[i], ut); err != nil {
				errs = append(errs, fmt.Errorf("optim: updating %s: %w", p.Name, err))
			}
			continue
		}
		c := noDecay
		if o.decay[i] {
			c = decay
		}
		for lo := 0; lo < len(p.W); lo += updateChunk {
			hi := min(lo+updateChunk, len(p.W))
			fused.Update(p.W[lo:hi], p.G[lo:hi], o.m[i][lo:hi], o.v[i][lo:hi], c)
		}
	}
	return errors.Join(errs...)
}

// Params is the number of tensors the optimizer updates (the indices Apply takes).
func (o *AdamW) Params() int { return len(o.params) }
