package hf

import (
	"encoding/json"
	"fmt"
	"math"
)

// hunyuanRope reads HunYuan's rotary settings. Its rope_scaling {"type": "dynamic",
// "alpha": A} (transformers 5 saves it as rope_parameters {"rope_type": "dynamic",
// "alpha": A, "factor": 1.0, "rope_theta": θ}) is resolved once, as transformers' HunYuan
// rotary embedding (its ntk_alpha type) and vLLM's DynamicNTKAlphaRotaryEmbedding do: the
// base becomes rope_theta · A^(d/(d−2)) for head dimension d, with no other change up to
// max_position_embeddings (moec's seq_len, which no moec position exceeds); the factor
// beside it is not read. Any other rope_scaling is read as for every architecture.
func (s *spec) hunyuanRope(r *reader) {
	field := "rope_scaling"
	if !r.present(field) {
		field = "rope_parameters"
	}
	raw := r.fields[field]
	var rs map[string]json.RawMessage
	if !r.present(field) || (r.present("rope_scaling") && r.present("rope_parameters")) ||
		json.Unmarshal(raw, &rs) != nil || rs["alpha"] == nil || string(rs["alpha"]) == "null" {
		s.ropeScaling(r)
		return
	}
	r.used[field] = true
	var kind string
	for _, k := range []string{"rope_type", "type"} {
		if v, ok := rs[k]; ok {
			_ = json.Unmarshal(v, &kind)
			break
		}
	}
	var alpha float64
	if json.Unmarshal(rs["alpha"], &alpha) != nil || alpha <= 0 || kind != "dynamic" {
		r.bad(field, "HunYuan's NTK alpha scaling wants type dynamic and a positive alpha, have %s", compact(raw))
		return
	}
	if v, ok := rs["rope_theta"]; ok {
		var theta float64
		if json.Unmarshal(v, &theta) != nil || theta <= 0 {
			r.bad(field, "rope_theta: want a positive number, have %s", compact(v))
			return
		}
		if r.present("rope_theta") && theta != s.ropeBase {
			r.bad(field, "rope_theta %v inside it differs from the config's rope_theta %v", theta, s.ropeBase)
			return
		}
		s.ropeBase = theta
	}
	d := s.headDim
	if d == 0 && s.heads > 0 {
		d = s.dModel / int64(s.heads)
	}
	if d <= 2 {
		r.bad(field, "NTK alpha scaling needs a head dimension above 2")
		return
	}
	theta := s.ropeBase
	s.ropeBase = theta * math.Pow(alpha, float64(d)/float64(d-2))
	r.notes = append(r.notes, fmt.Sprintf(
		"%s %s: HunYuan's NTK alpha, resolved as transformers does: rope_base = rope_theta · alpha^(head_dim/(head_dim−2)) = %v · %v^(%d/%d)",
		field, compactFull(raw), theta, alpha, d, d-2))
}

// perLayer reads a HunYuan key that is a number or a list of one number per layer, and
// refuses a list whose entries differ: moec's MoE layers are alike.
func (r *reader) perLayer(key string, def int64, layers int) int64 {
	raw := r.take(key)
	if raw == nil {
		return def
	}
	var one int64
	if json.Unmarshal(raw, &one) == nil {
		if one < 0 {
			r.bad(key, "want a non-negative integer, have %d", one)
			return def
		}
		return one
	}
	var list []int64
	if err := json.Unmarshal(raw, &list); err != nil || len(list) == 0 {
		r.bad(key, "want an integer or a list of integers, have %s", compact(raw))
		return def
	}
	if layers > 0 && len(list) != layers {
		r.bad(key, "a list of %d entries for %d layers", len(list), layers)
		return def
	}
	for _, v := range list[1:] {
		if v != list[0] {
			r.refuse(key, fmt.Sprintf("per-layer values %s", compact(raw)), "moec's MoE layers all have the same experts, top_k and widths")
			return def
		}
	}
	return list[0]
}

// hunyuan reads Hunyuan-A13B (hunyuan_v1_moe, transformers' HunYuanMoEV1) and
// Hunyuan-Large (hunyuan, Tencent's modeling_hunyuan.py). Both: every layer MoE, a softmax
// router renormalising its top-k (Hunyuan-Large's top-1 keeps its probability), one ungated shared MLP of intermediate_size beside the
// experts (use_mixed_mlp_moe), experts of intermediate_size, per-head q/k RMSNorms applied
// after rotary positions. Hunyuan-Large adds cross-layer attention (use_cla: a layer
// whose index is not a multiple of cla_share_factor reuses the layer before's rotated
// keys and values and norms them with its own key norm).
func (s *spec) hunyuan(r *reader) {
	s.ffnHidden = r.required("intermediate_size")
	if hd := r.integer("attention_head_dim", 0); hd != 0 && s.headDim != 0 && hd != s.headDim {
		r.bad("attention_head_dim", "%d differs from head_dim %d", hd, s.headDim)
	} else if hd != 0 && s.headDim == 0 {
		s.headDim = hd
	}
	v1 := s.arch == HunyuanMoE
	if r.boolean("mlp_bias", false) {
		r.refuse("mlp_bias", "biases in the MLPs", "the HunYuan MLPs are built without biases")
	}
	experts := int(r.perLayer("num_experts", 0, s.layers))
	if experts == 0 {
		r.bad("num_experts", "missing: a HunYuan MoE model without experts")
		return
	}
	m := &moeSpec{experts: experts, topK: int(r.perLayer("moe_topk", 1, s.layers)), score: "softmax", normalize: true, balance: 0.001}
	// topkgating divides the top-k softmax probabilities by their sum: always renormalised,
	// except in Tencent's modeling_hunyuan.py, whose top1gating (moe_topk = 1, as
	// Hunyuan-Large) weighs the one expert by its softmax probability.
	if !v1 && m.topK == 1 {
		m.normalize = false
	}
	s.hunyuanRemoteTop1(r, m.topK)
	if !r.boolean("norm_topk_prob", true) {
		r.refuse("norm_topk_prob", "norm_topk_prob = false", "HunYuan's topkgating always renormalises the top-k gates")
	}
	if eh := r.perLayer("moe_intermediate_size", s.ffnHidden, s.layers); eh != s.ffnHidden {
		// transformers' HunYuanMoEV1MLP builds every expert and the shared MLP at
		// intermediate_size; a config that says otherwise describes another network.
		r.refuse("moe_intermediate_size", fmt.Sprintf("experts of width %d", eh), fmt.Sprintf("the HunYuan classes build experts of intermediate_size (%d)", s.ffnHidden))
	}
	shared := r.perLayer("num_shared_expert", 1, s.layers)
	// Tencent's HunYuanConfig defaults use_mixed_mlp_moe and use_qk_norm to false;
	// transformers' HunYuanMoEV1 has both always.
	if r.boolean("use_mixed_mlp_moe", v1) && shared > 0 {
		// One shared MLP of intermediate_size·num_shared_expert.
		m.shared, m.sharedHidden = 1, s.ffnHidden*shared
	} else if v1 {
		r.refuse("use_mixed_mlp_moe", "a HunYuanMoEV1 model without its shared MLP", "transformers' HunYuanMoE always adds the shared MLP")
	}
	if skipped := r.integer("moe_layer_num_skipped", 0); skipped > 0 {
		r.refuse("moe_layer_num_skipped", fmt.Sprintf("%d leading dense layers", skipped), "the HunYuan classes make every layer MoE")
	}
	m.allLayers(s.layers, 0, 1)
	if r.boolean("group_limited_greedy", false) {
		r.refuse("group_limited_greedy", "group-limited routing", "HunYuan's topkgating routes over all experts")
	}
	if f := r.float("routed_scaling_factor", 1); f != 1 {
		r.refuse("routed_scaling_factor", fmt.Sprintf("routed_scaling_factor %v", f), "the HunYuan classes do not read it, so what it means for this checkpoint is unknown")
	}
	if r.boolean("moe_drop_tokens", false) || r.boolean("moe_random_routing_dropped_token", false) {
		r.refuse("moe_drop_tokens", "token dropping", "moec imports HunYuan MoE layers dropless, as Tencent's code runs them")
	}
	if r.boolean("use_mla", false) {
		r.refuse("use_mla", "latent attention in a HunYuan config", "the HunYuan classes moec imports use standard attention")
	}
	if !r.boolean("use_rotary_pos_emb", true) {
		r.refuse("use_rotary_pos_emb", "no rotary positions", "the HunYuan classes rotate queries and keys")
	}
	if r.boolean("use_qk_norm", v1) {
		s.qkNorm, s.qkNormAfterRope = true, true
	} else if v1 {
		r.refuse("use_qk_norm", "no q/k norms", "transformers' HunYuanMoEV1Attention always norms queries and keys")
	}
	cla := r.boolean("use_cla", false)
	factor := int(r.integer("cla_share_factor", 1))
	switch {
	case cla && v1:
		r.refuse("use_cla", "cross-layer attention", "transformers' HunYuanMoEV1 has none")
	case cla && factor > 1:
		s.shareKV = factor
	}
	// Precision switches: they change rounding, not the function.
	r.used["enable_attention_fp32_softmax"], r.used["enable_lm_head_fp32"] = true, true
	for _, k := range []string{"eod_token_id", "sep_token_id", "mask_init_id", "org_vocab_size"} {
		r.used[k] = true
	}
	hunyuanVariantFields(r)
	s.moe = m
}
