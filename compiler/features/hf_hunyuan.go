package features

import "github.com/moec-dev/moec/compiler/program"

// hunyuanShaped reports whether m has the shape interop/hf exports as a HunYuan class
// (HunYuanMoEV1ForCausalLM, HunYuanForCausalLM): per-head q/k norms after rotary
// positions, an MoE in every layer and one ungated shared MLP (the export names whatever
// else the classes lack).
func hunyuanShaped(m *program.Model) bool {
	a, e := m.Attention, moeOf(m)
	return a.QKNorm && a.QKNormAfterRope && !a.QKNormFull && e != nil && e.SharedExperts == 1 && !e.SharedGate &&
		e.Every <= 1 && len(e.Layers) == 0 && e.FirstDense == 0
}

// unlessHunyuan refuses with why, except in a model a HunYuan class holds.
func unlessHunyuan(why string) Cell {
	return when(func(m *program.Model, _ Layout) bool { return !hunyuanShaped(m) }, why)
}
