package hf

import "fmt"

// phimoe reads Phi-3.5-MoE (transformers' PhimoeForCausalLM): LayerNorms with biases (eps
// rms_norm_eps), biased attention projections, a biased output head (lm_head_bias), MoE
// in every layer, routed by sparsemixer, whose threshold is router_jitter_noise (used at
// inference too, so it is part of the function), and longrope rotary scaling.
func (s *spec) phimoe(r *reader) {
	s.ffnHidden = r.required("intermediate_size")
	s.layerNorm = true
	s.headBias = r.boolean("lm_head_bias", false)
	m := &moeSpec{
		experts: int(r.required("num_local_experts")), topK: int(r.integer("num_experts_per_tok", 2)),
		score: "softmax", normalize: false, balance: r.float("router_aux_loss_coef", 0.001),
	}
	eps := r.float("router_jitter_noise", 0.01)
	switch {
	case m.topK != 2:
		r.refuse("num_experts_per_tok", fmt.Sprintf("sparsemixer with top_k %d", m.topK), "Phi-3.5-MoE's sparsemixer chooses exactly two experts")
	case eps <= 0:
		r.refuse("router_jitter_noise", fmt.Sprintf("sparsemixer threshold %v", eps), "sparsemixer needs a positive threshold")
	default:
		m.sparsemixer = eps
	}
	// input_jitter_noise multiplies the hidden states by noise in training only.
	r.zero("input_jitter_noise", "input jitter noise")
	m.allLayers(s.layers, 0, 1)
	s.moe = m
}
