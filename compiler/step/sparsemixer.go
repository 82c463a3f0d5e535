package step

import "fmt"

// Phi-3.5-MoE's sparsemixer routing (moe.sparsemixer_eps) lowers onto the route op and its
// backward: the route kernel chooses the two experts and computes their gates from the
// router logits (runtime/exec/kernels_sparsemixer.go), and route_bwd adds the gates'
// gradient through those masked softmaxes to the logits'. The listing shows the
// threshold on the route op (sparsemixer_eps=…). The features table refuses it beside
// anything but two experts without renormalisation, routed_scale, groups or bias balancing.

// sparsemixerAttr is the route op's listing of sparsemixer_eps ("" without it).
func (lw *lowerer) sparsemixerAttr() string {
	if eps := lw.m.MoE.SparsemixerEps; eps > 0 {
		return fmt.Sprintf(" sparsemixer_eps=%g", eps)
	}
	return ""
}
