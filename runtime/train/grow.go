package train

import (
	mparams "github.com/moec-dev/moec/compiler/params"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/runtime/nn"
	"github.com/moec-dev/moec/runtime/safetensors"
	"github.com/moec-dev/moec/runtime/weights"
)

// GrowReport says what Grow did.
type GrowReport = weights.GrowReport

// Grow initialises params, the new stage's model (already freshly initialised), from the
// tensors of the previous stage's final checkpoint: runtime/weights' Grow on the model's
// tensors (see there for what it copies, scales and when the grown model computes the
// same function).
func Grow(from []safetensors.Tensor, fromCfg, toCfg *program.Model, params []*nn.Param, g program.Grow, seed int64) (GrowReport, error) {
	to := make([]weights.Tensor, len(params))
	for i, p := range params {
		to[i] = weights.Tensor{Param: mparams.Param{ID: p.ID, Name: p.Name, Shape: p.Shape}, W: p.W}
	}
	return weights.Grow(from, fromCfg, toCfg, to, g, seed)
}
