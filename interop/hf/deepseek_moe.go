package hf

import (
	"fmt"

	"github.com/moec-dev/moec/compiler/program"
)

// DeepSeek-MoE 16B (model_type deepseek, DeepseekForCausalLM in deepseek-ai's remote
// modeling_deepseek.py) is Llama with DeepSeek-V2's MoE names:
//   - attention: LlamaAttention's q_proj/k_proj/v_proj/o_proj (attention_bias on all four),
//     head_dim = hidden_size / num_attention_heads, transformers' rotate_half rope — the
//     rope rows are moec's order already, so unlike DeepSeek-V2/V3's checkpoints nothing is
//     permuted on import or export;
//   - layer i is DeepseekMoE when i ≥ first_k_dense_replace and i % moe_layer_freq = 0, a
//     DeepseekMLP of intermediate_size (mlp.gate_proj/up_proj/down_proj) otherwise;
//   - MoEGate (mlp.gate.weight): softmax over the routed experts, greedy top-k, the top-k
//     weights divided by their sum only when top_k > 1 and norm_topk_prob;
//   - mlp.experts.N.{gate,up,down}_proj of moe_intermediate_size, and
//     mlp.shared_experts.{gate,up,down}_proj: ONE MLP of n_shared_experts ·
//     moe_intermediate_size, split into moec's shared experts as for DeepSeek-V2/V3
//     (deepseekToMoec, deepseekFromMoec).

// LayoutDeepSeekMoE is DeepseekForCausalLM's checkpoint (deepseek-ai's remote code).
const LayoutDeepSeekMoE Layout = "deepseek"

// deepseekMoEAutoMap points transformers at the remote code a DeepSeek-MoE folder carries.
func deepseekMoEAutoMap() map[string]string {
	return map[string]string{
		"AutoConfig":           "configuration_deepseek.DeepseekConfig",
		"AutoModel":            "modeling_deepseek.DeepseekModel",
		"AutoModelForCausalLM": "modeling_deepseek.DeepseekForCausalLM",
	}
}

// deepseekMoELayers returns first_k_dense_replace and moe_layer_freq that make exactly m's
// MoE layers MoE under DeepSeek's rule (i ≥ first and i % freq = 0), and whether any do.
func deepseekMoELayers(m *program.Model) (first, freq int, ok bool) {
	if m.MoE != nil && m.MoE.FirstDense >= 0 {
		// The usual case first: the rule m itself was written with.
		if f, q := m.MoE.FirstDense, max(m.MoE.Every, 1); deepseekRuleIs(m, f, q) {
			return f, q, true
		}
	}
	for q := 1; q <= max(m.Layers, 1); q++ {
		for f := 0; f <= m.Layers; f++ {
			if deepseekRuleIs(m, f, q) {
				return f, q, true
			}
		}
	}
	return 0, 0, false
}

// deepseekRuleIs reports whether DeepSeek's rule with first and freq makes m's MoE layers
// and no others MoE.
func deepseekRuleIs(m *program.Model, first, freq int) bool {
	for i := 0; i < m.Layers; i++ {
		if m.IsMoELayer(i) != (i >= first && i%freq == 0) {
			return false
		}
	}
	return true
}

// deepseekMoELayoutFor reports whether m is shaped as DeepSeek-MoE (standard attention
// without q/k norms beside ungated shared experts: no class moec writes but
// DeepseekForCausalLM has those) and, when it is, what DeepseekForCausalLM lacks for it. A
// model without shared experts (n_shared_experts: null) is DeepseekForCausalLM's too, but
// other classes may hold it: moeLayoutFor asks deepseekMoENeeds after them.
func deepseekMoELayoutFor(m *program.Model) (candidate bool, unmet []string) {
	a, e := m.Attention, m.MoE
	if e == nil || e.Experts == 0 || e.SharedExperts == 0 || e.SharedGate || a.LatentAttention() || a.QKNorm || e.ParallelAttention || e.GateInput {
		return false, nil
	}
	return true, deepseekMoENeeds(m)
}

// deepseekMoENeeds lists what DeepseekForCausalLM lacks for the MoE model m.
func deepseekMoENeeds(m *program.Model) (unmet []string) {
	a, e := m.Attention, m.MoE
	need := func(ok bool, what string) {
		if !ok {
			unmet = append(unmet, what)
		}
	}
	d, _ := m.Dims() // the checker has accepted m; only the widths are read
	need(!a.LatentAttention() && !a.QKNorm, "standard attention without q/k norms")
	need(!e.SharedGate && !e.ParallelAttention && !e.GateInput, "ungated shared experts, if any, and experts after attention on their own inputs")
	need(e.Score == program.Softmax && e.AuxFreeBias == 0, "softmax scores without a selection bias (MoEGate's scoring_func softmax)")
	need(!e.Normalize || e.TopK > 1, "a top-1 expert weighed by its probability (normalize = false: MoEGate renormalises a top-k of two or more only)")
	need(e.SharedExperts == 0 || d.SHidden == d.EHidden, "shared experts as wide as the routed ones (shared_experts is one MLP of n_shared_experts · moe_intermediate_size)")
	need(e.Router != program.RouteTokenEmbedding && !e.RouterBias && !e.ExpertBias && !m.FFN.Bias, "a plain router and no FFN biases")
	need(e.RoutedScaleOrOne() == 1 && e.SparsemixerEps == 0 && e.Groups == 0 && e.SwigluLimit == 0,
		"plain greedy top-k routing (no routed_scale, sparsemixer, groups or clamped SwiGLU)")
	_, _, rule := deepseekMoELayers(m)
	need(rule && !e.ParallelDense, "MoE layers DeepSeek's rule names (layer i ≥ first_k_dense_replace with i % moe_layer_freq = 0), no parallel dense FFN")
	swigluDecoderNeeds(m, need)
	need(m.RopeScaling == nil || m.RopeScaling.Type == program.RopeLinear || m.RopeScaling.Type == program.RopeDynamic,
		"plain, linear or dynamic rotary scaling (the rope_scaling types modeling_deepseek.py computes)")
	need(d.Dh*d.H == d.D, "head_dim = d_model / heads")
	need(a.BiasQKV == a.BiasOut && a.ClipQKV == 0, "attention biases on Q, K, V and the output or on none (attention_bias), no clipping")
	need(!a.TalkingHeads && !a.SharesWeights() && a.ShareKV <= 1 && !a.Sinks && a.Window == 0 && a.FullEvery == 0 && a.NopeEvery == 0 && a.ChunkSize == 0 && !a.QKL2Norm && a.NopeTemperature == 0,
		"plain multi-head attention (no talking heads, sharing, sinks, windows or chunks)")
	return unmet
}

// deepseekMoEConfig sets DeepseekConfig's fields (configuration_deepseek.py) for m.
func deepseekMoEConfig(cfg map[string]any, m *program.Model) {
	a, e := m.Attention, m.MoE
	d, _ := m.Dims()
	first, freq, _ := deepseekMoELayers(m) // layoutFor has checked that a rule exists
	delete(cfg, "head_dim")                // DeepseekAttention takes hidden_size / num_attention_heads
	cfg["attention_bias"] = a.BiasQKV
	cfg["moe_intermediate_size"] = d.EHidden
	cfg["n_routed_experts"] = e.Experts
	cfg["n_shared_experts"] = e.SharedExperts
	if e.SharedExperts == 0 {
		cfg["n_shared_experts"] = nil // DeepseekMoE builds shared_experts unless it is None
	}
	cfg["num_experts_per_tok"] = e.TopK
	cfg["first_k_dense_replace"] = first
	cfg["moe_layer_freq"] = freq
	cfg["norm_topk_prob"] = e.Normalize
	cfg["scoring_func"] = "softmax"
	cfg["aux_loss_alpha"] = floatField(e.BalanceLoss)
	cfg["seq_aux"] = false // moec's balance loss is per batch
	cfg["pretraining_tp"] = 1
	cfg["rope_scaling"] = nil
	if rs := m.RopeScaling; rs != nil {
		// DeepseekAttention._init_rope reads "type" and "factor", not rope_type.
		cfg["rope_scaling"] = map[string]any{"type": string(rs.Type), "factor": floatField(rs.Factor)}
	}
	cfg["auto_map"] = deepseekMoEAutoMap()
}

// deepseekMoENotes says how DeepseekForCausalLM's remote code is found, and what of m its
// config cannot hold.
func deepseekMoENotes(m *program.Model) []string {
	notes := []string{"DeepseekForCausalLM is deepseek-ai's remote code: put modeling_deepseek.py and configuration_deepseek.py of deepseek-ai/deepseek-moe-16b-base beside config.json (its auto_map names them) and load with trust_remote_code=True"}
	if e := m.MoE; e.ZLoss > 0 {
		notes = append(notes, fmt.Sprintf("z_loss = %v has no DeepseekConfig field; an import trains without it", e.ZLoss))
	}
	return notes
}

// deepseekMoEChecks refuses what a deepseek config may say that deepseek-ai's
// modeling_deepseek.py does not compute, and reads MoEGate's top-1 rule: a single expert
// keeps its softmax probability whatever norm_topk_prob says.
func (s *spec) deepseekMoEChecks(r *reader, m *moeSpec) {
	if m.topK <= 1 {
		m.normalize = false
	}
	if m.score != "softmax" {
		r.refuse("scoring_func", fmt.Sprintf("router score %q", m.score), "DeepSeek-MoE's MoEGate computes softmax scores only")
	}
	if m.groups > 0 || m.auxFree > 0 {
		r.refuse("topk_method", "group-limited or bias-corrected expert choice", "DeepSeek-MoE's MoEGate chooses its top-k greedily over all experts")
		m.groups, m.topkG, m.auxFree = 0, 0, 0
	}
	if m.routedScale != 0 && m.routedScale != 1 {
		r.refuse("routed_scaling_factor", fmt.Sprintf("routed_scaling_factor %v", m.routedScale), "modeling_deepseek.py does not read it, so what it means for this checkpoint is unknown")
	}
	if s.headDim != 0 && s.heads > 0 && s.headDim*int64(s.heads) != s.dModel {
		r.refuse("head_dim", fmt.Sprintf("head_dim %d", s.headDim), fmt.Sprintf("DeepseekAttention's heads are hidden_size / num_attention_heads = %d wide", s.dModel/int64(s.heads)))
	}
	if rs := s.ropeScale; rs != nil && rs.kind != program.RopeLinear && rs.kind != program.RopeDynamic {
		r.refuse("rope_scaling", fmt.Sprintf("%s rotary scaling", rs.kind), "modeling_deepseek.py computes linear and dynamic scaling only")
	}
}
