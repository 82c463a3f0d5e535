package hf

import (
	"encoding/json"
	"fmt"
)

// gptOss reads OpenAI's gpt-oss (model_type gpt_oss, transformers' GptOssForCausalLM):
// biased Q/K/V and output projections, a learned sink logit per head, layers alternating
// between a sliding window and full attention (layer_types, sliding first), MoE in every
// layer: a biased router whose top-k logits are softmaxed (the renormalised top-k softmax,
// the same function), biased experts computing the clamped SwiGLU (swiglu_limit, slope
// 1.702, (up + 1) · glu), no shared expert. The released checkpoints store the experts in
// MXFP4 (quantization_config quant_method mxfp4); they count, and import, as the float
// parameters they decode to.
func (s *spec) gptOss(r *reader) {
	s.ffnHidden = r.required("intermediate_size")
	s.sinks = true
	m := &moeSpec{
		experts: int(r.required("num_local_experts")), topK: int(r.integer("num_experts_per_tok", 4)),
		score: "softmax", normalize: true, routerBias: true, expertBias: true,
		balance:     r.float("router_aux_loss_coef", 0.9),
		swigluLimit: r.float("swiglu_limit", 7),
		swigluAlpha: r.float("swiglu_alpha", 1.702),
	}
	if m.swigluAlpha <= 0 {
		r.bad("swiglu_alpha", "want a positive number, have %v", m.swigluAlpha)
		m.swigluAlpha = 1.702
	}
	if k := r.integer("experts_per_token", int64(m.topK)); int(k) != m.topK {
		r.bad("experts_per_token", "%d differs from num_experts_per_tok %d", k, m.topK)
	}
	if m.swigluLimit <= 0 {
		r.bad("swiglu_limit", "want a positive number, have %v", m.swigluLimit)
		m.swigluLimit = 7
	}
	m.allLayers(s.layers, 0, 1)
	s.moe = m
	r.used["initial_context_length"] = true // the yarn scaling's original_max_position_embeddings
	if raw := r.take("quantization_config"); raw != nil {
		var q struct {
			Method string `json:"quant_method"`
		}
		if json.Unmarshal(raw, &q) != nil || q.Method != "mxfp4" {
			r.refuse("quantization_config", fmt.Sprintf("quantization %s", compact(raw)), "moec decodes gpt-oss's MXFP4 experts and imports float weights otherwise")
		} else {
			r.notes = append(r.notes, "quantization_config mxfp4: the experts are stored as MXFP4 blocks and scales; the model counts the float parameters they decode to")
		}
	}
	s.gptOssWindows(r)
}

// gptOssWindows reads sliding_window and layer_types: the window in the sliding_attention
// layers, full attention in the others, alternating as attention.full_every expresses.
func (s *spec) gptOssWindows(r *reader) {
	w := r.integer("sliding_window", 128)
	var types []string
	if raw := r.take("layer_types"); raw != nil {
		if err := json.Unmarshal(raw, &types); err != nil {
			r.bad("layer_types", "want a list of strings, have %s", compact(raw))
			return
		}
	} else {
		for i := 0; i < s.layers; i++ { // GptOssConfig's default: sliding first
			types = append(types, map[bool]string{true: "sliding_attention", false: "full_attention"}[i%2 == 0])
		}
	}
	if len(types) != s.layers {
		r.bad("layer_types", "%d entries for %d layers", len(types), s.layers)
		return
	}
	full := 0
	for _, t := range types {
		if t == "full_attention" {
			full++
		}
	}
	every := 0
	if full > 0 {
		// The period: the first full layer is the last of its group.
		for i, t := range types {
			if t == "full_attention" {
				every = i + 1
				break
			}
		}
	}
	for i, t := range types {
		want := "sliding_attention"
		if every > 0 && (i+1)%every == 0 {
			want = "full_attention"
		}
		if t != want {
			r.refuse("layer_types", fmt.Sprintf("layer %d is %s", i, t), "moec's windowed layers follow a period, the full layer last in each group (attention.full_every)")
			return
		}
	}
	if full == s.layers || w <= 0 || w >= s.seqLen {
		return // no layer windows
	}
	s.window = w
	if full > 0 {
		s.fullEvery = every
	}
}
