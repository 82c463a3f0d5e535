package cudastep

import (
	"fmt"
	"math"
)

// fp16 training on the tensor cores (a train block's precision = fp16), as runtime/exec
// computes it on the CPU (SetFP16Products and Options.LossScale):
//
//   - Options.FP16 runs every weight product on kernels_mma.cu's f16 kernels (IEEE half
//     operands, fp32 sums), as Options.BF16 runs the bf16 ones;
//   - the loss gradients' seeds (the cross-entropy's and the routes' balance and z-loss
//     coefficients) are multiplied at run time by the step's dynamic loss scale S, which
//     the session passes in opt[hostLossScaleSlot] (LossScaledArg; 0 there: no scaling);
//   - the settle step (moec_settle) divides the gradients' sum of squares by S² and the
//     update's gradient multiplier by S, and, under a loss scale, a non-finite norm (the
//     scaled gradients overflowed half) skips the update: no AdamW launch runs, and the
//     step reports it (out[5]), so the caller's scaler backs off.
//
// S is a power of two, so the scaled seeds, the unscaled sum of squares and multiplier
// are exact: the update sees the executor's numbers.

// HostLossScale names the float argument kind LossScaledArg makes: a constant the host
// program multiplies by the step's loss scale when it launches.
const HostLossScale = "loss_scale"

// hostLossScaleSlot is the entry of moec_step_train's opt array that holds the loss
// scale (0: none), after the update's nine settings (moec_settle).
const hostLossScaleSlot = 9

// LossScaledArg is the float scalar v times the step's dynamic loss scale (v when the
// step has none): a loss gradient's seed. A harness that launches kernels without a step
// reads Float, v, which is the seed of an unscaled step.
func LossScaledArg(v float32) Arg { return Arg{Kind: F32, Buf: -1, Float: v, Host: HostLossScale} }

// lossScaledDecl declares launch argument j, a LossScaledArg, in moec_run_ops (whose opt
// holds the loss scale). The product of a float and a power of two is exact in double,
// and rounds to float as the executor's float64 seed does.
func lossScaledDecl(j int, a Arg) (string, error) {
	if math.IsNaN(float64(a.Float)) || math.IsInf(float64(a.Float), 0) {
		return "", fmt.Errorf("loss-scaled argument %d is %v", j, a.Float)
	}
	return fmt.Sprintf("float a%d = (float)(%s * (opt[%d] > 0 ? opt[%d] : 1.0)) /* × the loss scale */;", j, cFloat(a.Float),
		hostLossScaleSlot, hostLossScaleSlot), nil
}

// precision is the 16-bit format of the tensor-core products lw lowers to (BF16 unless
// Options.FP16).
func (lw *opLowerer) precision() Precision {
	if lw.fp16 {
		return FP16
	}
	return BF16
}

// check refuses choices that exclude each other.
func (o Options) check() error {
	if o.BF16 && o.FP16 {
		return fmt.Errorf("cudastep: the weight products run in bf16 or in fp16, not both")
	}
	return nil
}
