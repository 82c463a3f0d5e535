package features

import "github.com/moec-dev/moec/compiler/program"

// deepseekMoEShaped reports whether m has the shape interop/hf exports as DeepSeek-MoE's
// DeepseekForCausalLM: ungated shared experts as wide as the routed ones beside standard
// attention without q/k norms (the export names whatever else the class lacks).
func deepseekMoEShaped(m *program.Model) bool {
	a, e := m.Attention, moeOf(m)
	return e != nil && e.SharedExperts > 0 && !e.SharedGate && (e.SharedHidden == 0 || e.SharedHidden == e.ExpertHidden) &&
		!a.LatentAttention() && !a.QKNorm && !e.ParallelAttention && !e.GateInput
}
