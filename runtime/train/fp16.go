package train

import (
	"fmt"
	"math"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/runtime/blas"
	"github.com/moec-dev/moec/runtime/checkpoint"
	"github.com/moec-dev/moec/runtime/optim"
)

// The dynamic loss scale's rule, runtime/optim's (Megatron-Core's DynamicGradScaler).
const (
	DefaultInitialLossScale = optim.DefaultInitialLossScale
	LossScaleGrowthInterval = optim.LossScaleGrowthInterval
	LossScaleHysteresis     = optim.LossScaleHysteresis
	minLossScale            = optim.MinLossScale
)

// fp16Products reports whether the run's train block asks for half weight products
// (a written precision = fp16: program.Train.CPUProducts).
func fp16Products(spec *Spec) bool {
	return spec.Train != nil && spec.Train.CPUProducts == program.FP16
}

// refuseFP16 is the diagnostic of an engine that cannot train a precision = fp16 block:
// half products and the dynamic loss scale run in step programs only.
func refuseFP16(spec *Spec, engine, suggestion string) error {
	e := diag.Runtimef(diag.CodeBadRunOption, "precision = fp16 in train %s: %s does not run half products with loss scaling (step programs do)", spec.Train.Name, engine)
	e.Suggestion = suggestion
	return e
}

// lossScaler is fp16 training's dynamic loss scaler (Megatron-Core's DynamicGradScaler):
// each step seeds its loss gradient with scale; a step whose gradients overflowed is
// skipped and, past the hysteresis, backs the scale off; every growth interval of clean
// steps grows it.
type lossScaler struct {
	checkpoint.LossScaleState
}

// newLossScaler starts a scaler at initial (0: DefaultInitialLossScale).
func newLossScaler(initial float64) *lossScaler {
	return &lossScaler{optim.NewLossScale(initial)}
}

// update records a step: overflowed (skipped) or clean.
func (s *lossScaler) update(overflowed bool) { s.Update(overflowed) }

// restore takes a checkpoint's state, refusing one a scaler cannot have written.
func (s *lossScaler) restore(st *checkpoint.LossScaleState) error {
	if st == nil {
		return fmt.Errorf("the checkpoint of an fp16 run holds no loss scale")
	}
	if !(st.Scale >= minLossScale) || st.CleanSteps < 0 || st.Skipped < 0 || st.Hysteresis > LossScaleHysteresis {
		return fmt.Errorf("the checkpoint's loss scale state %+v is not one a scaler writes", *st)
	}
	s.LossScaleState = *st
	return nil
}

// lossScaled is an engine that scales the loss (fp16): its scaler's state goes into
// checkpoints and the run's summary.
type lossScaled interface {
	scaler() *lossScaler // nil: the run does not scale
}

// FP16Note is the line `moec run` prints for a train block with precision = fp16 ("" for
// any other): how the products round on this CPU, and the loss scaling.
func FP16Note(t *program.Train) string {
	if t == nil || t.CPUProducts != program.FP16 {
		return ""
	}
	how := "in Go (this CPU has no F16C)"
	if blas.FP16Convert() {
		how = "through F16C"
	}
	return fmt.Sprintf("precision = fp16: the products round their operands to IEEE half %s and multiply in float32 with float32 sums over float32 master weights; dynamic loss scaling from 2^32 (Megatron-Core's: halved on overflow after 2, doubled every %d clean steps), overflowed steps skipped", how, LossScaleGrowthInterval)
}

// scaleStep records an fp16 step in the scaler and its log record: the scale it ran
// with, and whether its overflow skipped it (then it has no gradient norm to log). An
// overflow at the smallest scale is a diverged run, named by updates, the optimizer
// updates the engine (CPU or GPU) has run.
func (s *stepEngine) scaleStep(rec *StepRecord, info *optim.StepInfo, skipped bool, updates int64) error {
	rec.LossScale = s.loss.Scale
	if skipped {
		rec.Skipped = true
		info.GradNorm, info.Clipped = 0, false
		if s.loss.Scale <= minLossScale {
			return fmt.Errorf("the gradients overflow half at the smallest loss scale (%g): %w", minLossScale, &optim.NonFiniteError{Norm: math.Inf(1), Step: updates})
		}
	}
	s.loss.update(skipped)
	return nil
}

// formatLossScale writes a loss scale as the power of two it is ("2^22"), else as a number.
func formatLossScale(s float64) string {
	if frac, exp := math.Frexp(s); frac == 0.5 {
		return fmt.Sprintf("2^%d", exp-1)
	}
	return fmt.Sprintf("%g", s)
}
