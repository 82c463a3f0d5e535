package features

import "github.com/moec-dev/moec/compiler/program"

// phiRouting reports whether m's sparsemixer routing is Phi-3.5-MoE's, the one runtime/nn
// and the step program compute: two experts of at least two, gates not renormalised, no
// routed_scale, groups or bias balancing.
func phiRouting(m *program.Model) bool {
	e := moeOf(m)
	return e != nil && e.TopK == 2 && e.Experts >= 2 && !e.Normalize && e.RoutedScaleOrOne() == 1 && e.Groups == 0 && e.AuxFreeBias == 0
}

// unlessPhiRouting refuses sparsemixer routing other than Phi-3.5-MoE's.
func unlessPhiRouting() Cell {
	return when(func(m *program.Model, _ Layout) bool { return !phiRouting(m) },
		"sparsemixer routing is computed for two experts without renormalisation, routed_scale, groups or bias balancing (Phi-3.5-MoE's)")
}
