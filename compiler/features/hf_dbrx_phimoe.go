package features

import "github.com/moec-dev/moec/compiler/program"

// dbrxShaped reports whether m has the shape interop/hf exports as DbrxForCausalLM:
// LayerNorms without biases in an MoE model (the export names whatever else that class
// lacks).
func dbrxShaped(m *program.Model) bool {
	return m.Norm == program.LayerNorm && m.NormNoBias && moeOf(m) != nil
}

// phimoeShaped reports whether m has the shape interop/hf exports as PhimoeForCausalLM:
// sparsemixer routing under LayerNorms with biases.
func phimoeShaped(m *program.Model) bool {
	e := moeOf(m)
	return e != nil && e.SparsemixerEps > 0 && m.Norm == program.LayerNorm && !m.NormNoBias
}

// unlessDbrx refuses with why, except in a model DbrxForCausalLM holds.
func unlessDbrx(why string) Cell {
	return when(func(m *program.Model, _ Layout) bool { return !dbrxShaped(m) }, why)
}

// unlessPhimoe refuses with why, except in a model PhimoeForCausalLM holds.
func unlessPhimoe(why string) Cell {
	return when(func(m *program.Model, _ Layout) bool { return !phimoeShaped(m) }, why)
}
