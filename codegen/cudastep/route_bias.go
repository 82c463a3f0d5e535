package cudastep

// Auxiliary-loss-free balancing (moe.aux_free_bias; compiler/step's routing_bias.go) on
// the CUDA path: the route reads the layer's selection bias (moe_route_topk's bias), and
// the step's three ops of its own lower here: expert_load (the kept assignments per
// expert, summed over the micro-batches), router_bias_bwd (the bias's gradient: zeros) and
// router_bias_update (the bias's move after the optimizer). Semantics are runtime/exec's
// kernels_route_bias.go.

import (
	"fmt"

	"github.com/moec-dev/moec/compiler/step"
)

// isRouteBiasOp reports whether op is one of aux-free balancing's own ops.
func isRouteBiasOp(op *step.Op) bool {
	switch op.Kind {
	case step.OpExpertLoad, step.OpRouterBiasBwd, step.OpRouterBiasUpdate:
		return true
	}
	return false
}

// routeBiasOp lowers an op isRouteBiasOp names.
func (lw *opLowerer) routeBiasOp(op *step.Op) ([]Launch, error) {
	E := lw.d.E
	elems := func(n int) [3]int { return grid(ceilDiv(n, moeElemThreads), 1, 1) }
	switch op.Kind {
	case step.OpExpertLoad:
		if len(op.In) != 1 || len(op.Out) != 1 || lw.n(op.In[0]) != int64(E) || lw.n(op.Out[0]) != int64(E) {
			return nil, fmt.Errorf("expert_load wants the %d experts' kept counts and loads", E)
		}
		return []Launch{{Kernel: "moe_expert_load", Grid: elems(E), Block: [3]int{moeElemThreads, 1, 1},
			Args: []Arg{i32(op.In[0]), f32(op.Out[0]), ival(E), moeFlag(op.Accumulates(0))}}}, nil
	case step.OpRouterBiasBwd:
		if len(op.Out) != 1 {
			return nil, fmt.Errorf("router_bias_bwd with %d outputs, want 1", len(op.Out))
		}
		if op.Accumulates(0) {
			return nil, nil // adding zeros
		}
		return []Launch{lw.zero(op.Out[0])}, nil
	default: // router_bias_update
		if len(op.In) != 2 || len(op.Out) != 1 || lw.n(op.In[0]) != int64(E) {
			return nil, fmt.Errorf("router_bias_update wants the %d experts' loads and the bias's buffer", E)
		}
		target := op.Out[0]
		return []Launch{{Kernel: "moe_router_bias_update", Grid: elems(E), Block: [3]int{moeElemThreads, 1, 1},
			Args: []Arg{f32(op.In[0]), f32(target), ival(E), IntArg(I64, op.BiasAt), IntArg(I64, lw.n(target)), FloatArg(float32(op.BiasRate))}}}, nil
	}
}
