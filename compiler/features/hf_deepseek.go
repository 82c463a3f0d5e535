package features

import "github.com/moec-dev/moec/compiler/program"

// deepseekShaped reports whether m has the shape interop/hf exports as
// DeepseekV3ForCausalLM: latent attention beside routed experts with sigmoid scores and the
// auxiliary-loss-free selection bias (the export names whatever else that class lacks).
func deepseekShaped(m *program.Model) bool {
	e := moeOf(m)
	return m.Attention.LatentAttention() && e != nil && e.Score == program.Sigmoid && e.AuxFreeBias > 0
}

// unlessDeepSeek refuses with why, except in a model DeepseekV3ForCausalLM holds.
func unlessDeepSeek(why string) Cell {
	return when(func(m *program.Model, _ Layout) bool { return !deepseekShaped(m) }, why)
}
