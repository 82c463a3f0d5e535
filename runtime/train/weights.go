package train

import (
	"errors"
	"math"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/runtime/nn"
	"github.com/moec-dev/moec/runtime/safetensors"
)

// CheckWeights is the check every reader of a checkpoint's weights makes before using them
// (resume, growing a stage, eval, generate, serve, export hf): every value finite (E0607: a
// run refuses a non-finite loss, so it never saves such weights), then exactly the tensors
// of model m with their shapes (E0608: a renamed, missing, extra or reshaped tensor). A
// model the CPU runtime cannot lay out is E0603 after the finiteness check has passed.
func CheckWeights(dir string, m *program.Model, ts []safetensors.Tensor) error {
	for _, t := range ts {
		for i, v := range t.Data {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return diag.Runtimef(diag.CodeCorruptCheckpoint, "checkpoint %s: tensor %s holds %v at index %d; training never saves non-finite weights", dir, t.Name, v, i)
			}
		}
	}
	if err := checkManifest(m, ts); err != nil {
		var ue *nn.UnsupportedError
		if errors.As(err, &ue) {
			return diag.RuntimeWrap(diag.CodeUnsupportedFeature, err, "cannot check the tensors of checkpoint %s", dir)
		}
		return diag.RuntimeWrap(diag.CodeCheckpointMismatch, err, "checkpoint %s does not hold the tensors of its model", dir)
	}
	return nil
}
