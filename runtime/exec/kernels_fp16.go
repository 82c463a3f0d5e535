package exec

import (
	"errors"

	"github.com/moec-dev/moec/runtime/optim"
)

// SetFP16Products makes the rank's weight products (matmul and its two gradients, the
// grouped expert products and theirs) multiply in IEEE binary16 with float32 sums
// (blas.GemmFP16): the float32 weights and activations — and, in the backward, the
// loss-scaled gradients — are rounded to half where the product reads them, and every
// output stays float32 (a train block's precision = fp16). A half's range ends at 65504,
// so fp16 training scales the loss (Options.LossScale) and skips the steps whose scaled
// gradients overflowed. Off (the default), the products are blas.Gemm's, bit for bit.
// It turns bfloat16 products off, and SetBF16Products turns it off.
func (k *Kernels) SetFP16Products(on bool) {
	k.fp16 = on
	if on {
		k.bf16 = false
	}
}

// FP16Products reports whether SetFP16Products turned half products on.
func (k *Kernels) FP16Products() bool { return k.fp16 }

// SetFP16Products sets every rank's weight products in half or float32
// (Kernels.SetFP16Products).
func (l *Local) SetFP16Products(on bool) {
	for _, r := range l.Ranks {
		r.SetFP16Products(on)
	}
}

// gradSeed is what the loss gradients are multiplied by: the step's mean over
// micro-batches and replicas (lossScale), times the dynamic loss scale when there is one.
func (k *Kernels) gradSeed() float64 {
	if k.lossScaling > 0 {
		return k.lossScale() * k.lossScaling
	}
	return k.lossScale()
}

// unscale turns the reduced sum of squares of the loss-scaled gradients into the
// optimizer's arguments: the multiplier that unscales each gradient (1/S) and the sum of
// squares of the unscaled gradients (÷S²). S is a power of two, so both are exact and the
// update sees the gradients an unscaled step would have, but for the roundings the scale
// kept out of half's subnormals.
func (k *Kernels) unscale(sumSquares float64) (gradScale, unscaled float64) {
	s := k.lossScaling
	if s <= 0 {
		return 1, sumSquares
	}
	return 1 / s, sumSquares / (s * s)
}

// skipOverflow is the update's error under a loss scale: a non-finite gradient norm
// there is an overflow of the scaled gradients, not a diverged run, so the step is
// skipped (weights and moments untouched, Stats.Skipped set) and nil returned; every
// other error, and any without a loss scale, is returned as it is.
func (k *Kernels) skipOverflow(err error) error {
	if err == nil || k.lossScaling <= 0 {
		return err
	}
	if _, overflow := errors.AsType[*optim.NonFiniteError](err); overflow {
		k.stats.Skipped = true
		return nil
	}
	return err
}

// SetLossScale sets the dynamic loss scale of the steps that follow (0: none), as
// Options.LossScale does for each Executor.Run: the generated Go step program calls it
// before each step with its scaler's scale.
func (k *Kernels) SetLossScale(s float64) { k.lossScaling = s }
