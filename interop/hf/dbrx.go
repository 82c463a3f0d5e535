package hf

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
)

// nested is a reader over one object-valued field of a config (DBRX's attn_config and
// ffn_config): its keys are read as the field's, and a key left over is refused by name.
type nested struct {
	r      *reader
	field  string
	fields map[string]json.RawMessage
	used   map[string]bool
}

func (r *reader) nested(field string) *nested {
	n := &nested{r: r, field: field, fields: map[string]json.RawMessage{}, used: map[string]bool{}}
	raw := r.take(field)
	if raw == nil {
		return n
	}
	if err := json.Unmarshal(raw, &n.fields); err != nil || n.fields == nil {
		r.bad(field, "want an object, have %s", compact(raw))
		n.fields = map[string]json.RawMessage{}
	}
	return n
}

// number returns key's value, def when absent or null.
func (n *nested) number(key string, def float64) float64 {
	n.used[key] = true
	raw, ok := n.fields[key]
	if !ok || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return def
	}
	var f float64
	if err := json.Unmarshal(raw, &f); err != nil {
		n.r.bad(n.field, "%s: want a number, have %s", key, compact(raw))
		return def
	}
	return f
}

// subConfigBookkeeping are the keys transformers 5 writes into every saved sub-config
// (PreTrainedConfig's own fields) with the values that change nothing.
// transformers 4 wrote PretrainedConfig's generation defaults into every saved
// sub-config too (temperature, top_k, ...): sampling settings, which no forward pass
// reads, whatever their values; its structural switches only with their defaults.
var subConfigBookkeeping = map[string]string{
	"id2label": "", "label2id": "", "problem_type": "", // classification heads only
	"chunk_size_feed_forward": "0", "is_encoder_decoder": "false",
	// transformers 4's generation defaults
	"max_length": "", "min_length": "", "do_sample": "", "early_stopping": "", "num_beams": "",
	"num_beam_groups": "", "diversity_penalty": "", "temperature": "", "top_k": "", "top_p": "",
	"typical_p": "", "repetition_penalty": "", "length_penalty": "", "no_repeat_ngram_size": "",
	"encoder_no_repeat_ngram_size": "", "bad_words_ids": "", "num_return_sequences": "",
	"output_scores": "", "return_dict_in_generate": "", "forced_bos_token_id": "",
	"forced_eos_token_id": "", "remove_invalid_values": "", "exponential_decay_length_penalty": "",
	"suppress_tokens": "", "begin_suppress_tokens": "", "finetuning_task": "", "prefix": "",
	"sep_token_id": "", "decoder_start_token_id": "", "task_specific_params": "",
	"tf_legacy_loss": "", "torchscript": "", "use_bfloat16": "",
	// and its structural switches, with the values that change nothing
	"is_decoder": "false", "add_cross_attention": "false", "tie_encoder_decoder": "false",
	"cross_attention_hidden_size": "null", "pruned_heads": "{}", "tie_word_embeddings": "true",
}

// leftovers refuses every key of the object nobody read (model_type, always "", and the
// metadata and bookkeeping transformers 5 writes into a saved sub-config are not read).
func (n *nested) leftovers() {
	var keys []string
	for k, v := range n.fields {
		want, bookkeeping := subConfigBookkeeping[k]
		if bookkeeping && (want == "" || string(bytes.TrimSpace(v)) == want) || metadataKeys[k] {
			continue
		}
		if !n.used[k] && k != "model_type" && !bytes.Equal(bytes.TrimSpace(v), []byte("null")) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		n.r.refuse(n.field+"."+k, fmt.Sprintf("unknown field (value %s)", compact(n.fields[k])), "moec does not know what it changes")
	}
}

// dbrx reads DBRX (transformers' DbrxForCausalLM): d_model, n_heads, n_layers,
// max_seq_len; attn_config (kv_n_heads, rope_theta, clip_qkv) and ffn_config (experts,
// top-k, expert width, the p-norm its top-k weights are divided by). LayerNorms without
// biases (eps 1e-5), a fused Wqkv without bias, GLU experts (SiLU), MoE in every layer.
func (s *spec) dbrx(r *reader) {
	s.vocab = r.required("vocab_size")
	s.dModel = r.required("d_model")
	s.layers = int(r.required("n_layers"))
	if s.layers > maxLayers {
		r.bad("n_layers", "%d layers is more than moec imports (%d)", s.layers, maxLayers)
		s.layers = 0
	}
	s.heads = int(r.required("n_heads"))
	s.seqLen = r.required("max_seq_len")
	s.tie = r.boolean("tie_word_embeddings", false)
	s.layerNorm, s.normNoBias, s.normEps = true, true, 1e-5
	s.activation = "swiglu"
	r.zero("emb_pdrop", "embedding dropout")
	r.zero("resid_pdrop", "residual dropout")

	a := r.nested("attn_config")
	s.kvHeads = int(a.number("kv_n_heads", 1))
	s.ropeBase = a.number("rope_theta", 10000)
	if c := a.number("clip_qkv", 0); c > 0 {
		s.clipQKV = c
	}
	if p := a.number("attn_pdrop", 0); p != 0 {
		r.inexpressible("attn_config", fmt.Sprintf("attention dropout %v", p), "moec trains without it; the forward pass at inference is the same", 0)
	}
	a.leftovers()
	// transformers 5 rotates by rope_parameters (its default base 10000 when absent) and
	// leaves attn_config.rope_theta unread; transformers 4 read attn_config's. A folder
	// with both must agree, so that every release computes the same model.
	_, attnTheta := a.fields["rope_theta"]
	if raw := r.take("rope_parameters"); raw != nil && !bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		fromAttn := s.ropeBase
		s.readRope(r, "rope_parameters", raw)
		if attnTheta && s.ropeBase != fromAttn {
			r.bad("rope_parameters", "rope_theta %v differs from attn_config.rope_theta %v: transformers 5 rotates by the first, transformers 4 by the second; make them agree", s.ropeBase, fromAttn)
		}
	}

	f := r.nested("ffn_config")
	s.ffnHidden = int64(f.number("ffn_hidden_size", 3584))
	m := &moeSpec{
		experts: int(f.number("moe_num_experts", 4)), topK: int(f.number("moe_top_k", 1)),
		score: "softmax", balance: f.number("moe_loss_weight", 0.01),
	}
	// DbrxFFN divides the top-k weights by their p-norm unless the field is null (absent:
	// DbrxFFNConfig's 1.0).
	if raw, ok := f.fields["moe_normalize_expert_weights"]; ok && bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		f.used["moe_normalize_expert_weights"] = true
	} else if p := f.number("moe_normalize_expert_weights", 1); p == 1 {
		m.normalize = true // top_weights / ‖top_weights‖₁: renormalised
	} else {
		r.refuse("ffn_config", fmt.Sprintf("moe_normalize_expert_weights = %v", p), "moec renormalises the top-k gates by their sum (p = 1) or not at all (null)")
	}
	if act := f.fields["ffn_act_fn"]; act != nil {
		f.used["ffn_act_fn"] = true
		var fn struct {
			Name string `json:"name"`
		}
		if json.Unmarshal(act, &fn) != nil || (fn.Name != "silu" && fn.Name != "") {
			r.refuse("ffn_config", fmt.Sprintf("ffn_act_fn %s", compact(act)), "moec's DBRX experts are SiLU GLUs")
		}
	}
	if e := f.number("moe_jitter_eps", 0); e != 0 {
		r.inexpressible("ffn_config", fmt.Sprintf("router jitter %v", e), "moec trains without it; the forward pass at inference is the same", 0)
	}
	if f.number("moe_num_experts", 4) < 1 || f.number("moe_top_k", 1) < 1 {
		r.bad("ffn_config", "moe_num_experts and moe_top_k must be positive")
	}
	if h := f.number("hidden_size", float64(s.dModel)); int64(h) != s.dModel {
		r.bad("ffn_config", "hidden_size %v differs from d_model %d (DbrxConfig copies d_model into it)", h, s.dModel)
	}
	r.used["router_aux_loss_coef"] = true // DbrxConfig copies moe_loss_weight into it
	r.used["num_key_value_heads"] = true  // DbrxConfig copies attn_config.kv_n_heads into it
	f.leftovers()
	m.allLayers(s.layers, 0, 1)
	s.moe = m
}
