package features_test

import (
	"testing"

	"github.com/moec-dev/moec/codegen/cudastep"
	"github.com/moec-dev/moec/compiler/features"
	"github.com/moec-dev/moec/compiler/step"
)

// TestCUDAStepColumnAgreesWithDecoding: the CUDA step column holds for `moec generate` and
// `moec serve --device cuda` too, less the refusals it marks as training's alone
// (features.CUDAStepInferenceRefusals). Where the step program lowers a feature's prefill
// and decoding step, codegen/cudastep lowers the pair (cudastep.LowerDecoding) iff the
// column honours the feature's inference; and the feeding program serve runs
// (step.LowerFeed, lowered by cudastep.LowerServing) lowers wherever it does. (The
// feeding program's attention is the decoding kernel's, which also takes sinks, windows
// and chunks: it lowers some features the column refuses for training.) A cell marked
// training-only must refuse training (TestCUDAStepColumnAgreesWithLower holds that).
func TestCUDAStepColumnAgreesWithDecoding(t *testing.T) {
	for _, f := range features.Table() {
		m, all := example(t, f.Key, features.CUDAStep, features.Layout{})
		gaps := features.CUDAStepInferenceRefusals(m, features.Layout{})
		if len(gaps) < len(all) {
			t.Logf("%s: inference lowers, training is refused: %v", f.Key, all)
		}
		prefill, err := step.LowerPrefill(m, 2, 4, 8)
		if err != nil {
			continue // the step program's inference refuses it: E0510 before CUDA
		}
		decode, err := step.LowerDecode(m, 2, 8)
		if err != nil {
			t.Errorf("%s: the prefill lowers, the decoding step does not: %v", f.Key, err)
			continue
		}
		_, err = cudastep.LowerDecoding(prefill, decode, m, cudastep.Options{})
		if (err != nil) != (len(gaps) > 0) {
			t.Errorf("%s: cudastep.LowerDecoding: %v; the table's refusals: %v", f.Key, err, gaps)
		}
		if len(gaps) > 0 {
			continue
		}
		feed, err := step.LowerFeed(m, 2, 5, 8)
		if err != nil {
			t.Errorf("%s: step.LowerFeed: %v", f.Key, err)
			continue
		}
		if _, err := cudastep.LowerServing([]*step.Program{feed}, m, cudastep.Options{}); err != nil {
			t.Errorf("%s: cudastep.LowerServing: %v; the table honours it", f.Key, err)
		}
	}
}
