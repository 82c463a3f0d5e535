package cudastep

import (
	"fmt"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
)

// unhonoured says which feature of op (or of the model it belongs to) the step kernels do
// not compute, or "": an op whose kind the kernels know can still carry a variant they do
// not (a sliding window on a softmax, gpt-oss's clamp on an activation), and lowering it
// as the plain op would train another model silently. (Node-limited routing is refused
// where the route is lowered, lowerMoE.)
func unhonoured(m *program.Model, op *step.Op) string {
	switch op.Kind {
	case step.OpSoftmax, step.OpSoftmaxBwd:
		if !op.Mask.Causal() {
			return fmt.Sprintf("attention masked to %s (a sliding window or chunks)", op.Mask)
		}
		if m.Attention.Sinks {
			return "attention sinks (attention.sinks)"
		}
	case step.OpAct, step.OpActBwd:
		if op.SwigluLimit > 0 {
			return "gpt-oss's clamped SwiGLU (moe.swiglu_limit)"
		}
	case step.OpPermute, step.OpPermuteBwd, step.OpCombine, step.OpCombineBwd:
		if op.GateInput {
			return "gates on the experts' inputs (moe.gate_input)"
		}
	case step.OpRouter, step.OpRouterBwd:
		e := m.MoE
		// DeepSeek-V3's routing (sigmoid scores, groups, the selection bias, routed_scale)
		// is moe_route_topk's and moe_route_bwd's; sparsemixer's is not.
		switch {
		case e == nil:
		case e.SparsemixerEps > 0:
			return "sparsemixer routing (moe.sparsemixer_eps)"
		}
	}
	return ""
}
