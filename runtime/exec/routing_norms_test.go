package exec

import (
	"testing"

	"github.com/moec-dev/moec/compiler/program"
)

// restVariants are node-limited routing (moe.groups) and the norm placements, alone and
// as DeepSeek-V2's MoE side and Gemma 2's sandwich norms use them, on featuretest's Base.
func restVariants() []moeVariant {
	groups := func(m *program.Model) { // eight experts in four groups, a token uses two
		e := m.MoE
		e.Experts, e.TopK, e.Groups, e.TopKGroups = 8, 3, 4, 2
	}
	return []moeVariant{
		// Top 2 of one group here: Base with eight experts and top 3 under the unified
		// cache at ZeRO 3 is refused at the budget its own refusal names (the arena's
		// fragmentation), with or without groups; the variants below take top 3 of two.
		{"groups", func(m *program.Model) { groups(m); m.MoE.TopK, m.MoE.TopKGroups = 2, 1 }},
		{"groups 2, topk_groups 1", func(m *program.Model) { m.MoE.Groups, m.MoE.TopKGroups = 2, 1 }},
		{"groups with a capacity factor", func(m *program.Model) { groups(m); m.MoE.CapacityFactor = 1 }},
		{"deepseek-v2 MoE", func(m *program.Model) { // DeepSeek-V2's routing: greedy in groups, unnormalised, scaled
			groups(m)
			e := m.MoE
			e.Normalize, e.RoutedScale, e.SharedExperts, e.SharedHidden, e.FirstDense = false, 2.5, 2, 8, 1
		}},
		{"post_norm", func(m *program.Model) { m.NormPlacement = program.PostNorm }},
		{"post_norm, layernorm, dense layers", func(m *program.Model) {
			m.NormPlacement, m.Norm, m.MoE.Every = program.PostNorm, program.LayerNorm, 2
		}},
		{"post_norm, shared experts, dense beside", func(m *program.Model) {
			m.NormPlacement, m.MoE.SharedExperts, m.MoE.SharedHidden, m.MoE.ParallelDense = program.PostNorm, 1, 8, true
		}},
		{"post_norm, shared experts", func(m *program.Model) {
			m.NormPlacement, m.MoE.SharedExperts, m.MoE.SharedHidden = program.PostNorm, 1, 8
		}},
		{"post_norm, dense beside", func(m *program.Model) {
			m.NormPlacement, m.MoE.ParallelDense = program.PostNorm, true
		}},
		{"sandwich_norm, dense beside", func(m *program.Model) {
			m.NormPlacement, m.MoE.ParallelDense = program.SandwichNorm, true
		}},
		{"sandwich_norm", func(m *program.Model) { m.NormPlacement = program.SandwichNorm }},
		{"sandwich_norm, dense layers, no final norm", func(m *program.Model) {
			m.NormPlacement, m.MoE.Every, m.FinalNorm = program.SandwichNorm, 2, false
		}},
	}
}

// TestRoutingAndNormsMatchHandWrittenModel: node-limited routing and post and sandwich
// norms, one rank's step program against runtime/nn: loss terms and every gradient.
func TestRoutingAndNormsMatchHandWrittenModel(t *testing.T) {
	variantsMatchHandWrittenModel(t, restVariants())
}

// TestRoutingAndNormsUnderLayouts: the same under expert, tensor (with and without
// sequence parallelism), pipeline parallelism, ZeRO, recomputation and the unified cache,
// against one rank.
func TestRoutingAndNormsUnderLayouts(t *testing.T) {
	variantsUnderLayouts(t, restVariants())
}

// TestRoutingAndNormsInfer: prefill and decoding against runtime/nn's Decoder.
func TestRoutingAndNormsInfer(t *testing.T) {
	variantsInfer(t, restVariants())
}
