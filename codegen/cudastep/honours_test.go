package cudastep

import (
	"strings"
	"testing"

	"github.com/moec-dev/moec/compiler/program/programtest"
	"github.com/moec-dev/moec/compiler/step"
)

// TestRefusesWhatTheKernelsDoNotCompute: a model whose ops carry a variant the step
// kernels do not compute (a window on the softmax, sinks, a clamp on the activation, gates
// on the experts' inputs) is refused by name, not lowered as the plain op (sparsemixer's
// routing too: compiler/features' TestCUDAStepColumnAgreesWithLower lowers its example).
func TestRefusesWhatTheKernelsDoNotCompute(t *testing.T) {
	for _, tc := range []struct {
		name, attention, moe, want string
	}{
		{"window", "window = 4", "", "sliding window"},
		{"sinks", "sinks = true", "", "attention sinks"},
		{"swiglu_limit", "", "swiglu_limit = 7", "clamped SwiGLU"},
		{"gate_input", "", "gate_input = true; score = sigmoid; normalize = false", "gates on the experts' inputs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			moe := "experts = 4; top_k = 1; capacity_factor = dropless"
			if tc.moe != "" {
				moe += "; " + tc.moe
			}
			m := programtest.Model(t, "m", `vocab = 64; d_model = 32; layers = 2; seq_len = 16
attention { heads = 2; `+tc.attention+` }
ffn { hidden = 64; activation = swiglu }
moe { `+moe+` }`)
			progs, err := step.Lower(m, step.Batch{MicroBatch: 2, SeqLen: 16, Micro: 1}, step.Layout{DP: 1, EP: 1, TP: 1, PP: 1})
			if err != nil {
				t.Fatal(err)
			}
			_, err = Lower(progs[0], m)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Lower: %v, want a refusal naming %q", err, tc.want)
			}
		})
	}
	// The plain model lowers, and DeepSeek-V3's routing (groups, the selection bias,
	// routed_scale), which the route kernels compute.
	for _, moe := range []string{"", "; score = sigmoid; normalize = true; groups = 2; topk_groups = 1; aux_free_bias = 0.001; routed_scale = 2.5"} {
		m := programtest.Model(t, "m", `vocab = 64; d_model = 32; layers = 2; seq_len = 16
attention { heads = 2 }
ffn { hidden = 64; activation = swiglu }
moe { experts = 4; top_k = 1; capacity_factor = dropless`+moe+` }`)
		progs, err := step.Lower(m, step.Batch{MicroBatch: 2, SeqLen: 16, Micro: 1}, step.Layout{DP: 1, EP: 1, TP: 1, PP: 1})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Lower(progs[0], m); err != nil {
			t.Errorf("the model with moe {…%s}: %v", moe, err)
		}
	}
}
