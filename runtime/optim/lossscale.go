package optim

// Megatron-Core's DynamicGradScaler defaults (apex's start at 2¹⁶ instead): the loss
// scale starts at 2³², doubles after 1000 steps in a row without an overflow, and halves
// on an overflow once two have been seen since the last growth (hysteresis), never below 1.
const (
	DefaultInitialLossScale = 1 << 32
	LossScaleGrowthInterval = 1000
	LossScaleHysteresis     = 2
	lossScaleGrowth         = 2.0
	lossScaleBackoff        = 0.5
	MinLossScale            = 1.0
)

// LossScale is fp16 training's dynamic loss scale between steps (Megatron-Core's
// DynamicGradScaler): each step seeds its loss gradient with Scale; a step whose
// gradients overflowed is skipped and, past the hysteresis, backs the scale off; every
// growth interval of clean steps grows it. `moec run` and the generated Go step program
// keep one each, and checkpoints hold it (runtime/checkpoint.LossScaleState).
type LossScale struct {
	Scale float64 `json:"scale"` // the next step's loss scale
	// CleanSteps counts the steps without an overflow since the last growth or overflow;
	// the scale grows when it reaches the growth interval.
	CleanSteps int64 `json:"clean_steps"`
	// Hysteresis is the overflows left before the next one backs the scale off.
	Hysteresis int   `json:"hysteresis"`
	Skipped    int64 `json:"skipped"` // steps skipped for an overflow since the stage began
}

// NewLossScale starts a loss scale at initial (0: DefaultInitialLossScale).
func NewLossScale(initial float64) LossScale {
	if initial <= 0 {
		initial = DefaultInitialLossScale
	}
	return LossScale{Scale: initial, Hysteresis: LossScaleHysteresis}
}

// Update records a step: overflowed (skipped) or clean.
func (s *LossScale) Update(overflowed bool) {
	if overflowed {
		s.Skipped++
		s.CleanSteps = 0
		s.Hysteresis--
		if s.Hysteresis <= 0 {
			s.Scale = max(s.Scale*lossScaleBackoff, MinLossScale)
		}
		return
	}
	s.CleanSteps++
	if s.CleanSteps == LossScaleGrowthInterval {
		s.CleanSteps = 0
		s.Hysteresis = LossScaleHysteresis
		s.Scale *= lossScaleGrowth
	}
}
