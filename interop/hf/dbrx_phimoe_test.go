package hf

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moec-dev/moec/runtime/nn"
)

// TestDbrxPhimoeComputeAsTransformers: tiny DBRX and Phi-3.5-MoE models' logits from
// moec's runtime equal those of an independent torch forward written from transformers'
// modeling_dbrx.py and modeling_phimoe.py (testdata/dbrx_phimoe_forward.py) on the same
// weights, exported as DbrxForCausalLM and PhimoeForCausalLM: the fused Wqkv clamped by
// clip_qkv, LayerNorms without biases, the stacked experts (w2 transposed), and
// sparsemixer's routing, biased LayerNorms, attention and head, and longrope within the
// pretrained context. Where transformers is installed, its own classes load the folders
// too.
func TestDbrxPhimoeComputeAsTransformers(t *testing.T) {
	py, withTransformers := torchTransformers(t)
	ids := []int32{5, 17, 250, 3, 99, 42, 7, 128, 11, 200, 1, 64}
	text := make([]string, len(ids))
	for i, id := range ids {
		text[i] = fmt.Sprint(id)
	}
	var checks logitChecks // every reference in one interpreter: one torch import
	folders := t.TempDir()
	for _, name := range []string{"tiny_dbrx", "tiny_phimoe"} {
		m := tinyModel(t, name)
		dir, _ := saveCheckpoint(t, m)
		out := filepath.Join(folders, name)
		if _, err := Export(dir, out); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		want, err := tinyNet(t, m).Logits(nn.Batch{B: 1, T: len(ids), Tokens: append(append([]int32(nil), ids...), 0)}, nn.StepOptions{})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		checks.add(name+"_forward", "dbrx_phimoe_forward.py", out, strings.Join(text, ","), want)
		if withTransformers {
			checks.add(name+"_transformers", "hf_transformers.py", out, strings.Join(text, ","), want)
		}
	}
	if !withTransformers {
		t.Log("transformers not installed: AutoModelForCausalLM checks skipped")
	}
	checks.run(t, py)
}

// TestDbrxConfigOfTransformers5 imports a DBRX config as transformers 5 saves it: the
// sub-configs carry PreTrainedConfig's bookkeeping, the base sits in rope_parameters
// beside attn_config's; a null moe_normalize_expert_weights keeps the top-k weights as
// they are, and a rope_parameters base that differs from attn_config's is refused.
func TestDbrxConfigOfTransformers5(t *testing.T) {
	bookkeeping := map[string]any{"_name_or_path": "", "architectures": nil, "chunk_size_feed_forward": 0, "dtype": nil,
		"id2label": map[string]string{"0": "LABEL_0"}, "label2id": map[string]int{"LABEL_0": 0}, "is_encoder_decoder": false,
		"model_type": "", "output_attentions": false, "output_hidden_states": false, "problem_type": nil, "return_dict": true}
	config := func(normalize any, ropeTheta float64) []byte {
		attn := map[string]any{"attn_pdrop": 0.0, "clip_qkv": 8.0, "kv_n_heads": 2, "rope_theta": 500000.0}
		ffn := map[string]any{"ffn_act_fn": map[string]string{"name": "silu"}, "ffn_hidden_size": 24, "hidden_size": 32,
			"moe_jitter_eps": nil, "moe_loss_weight": 0.05, "moe_normalize_expert_weights": normalize, "moe_num_experts": 4, "moe_top_k": 2}
		for k, v := range bookkeeping {
			attn[k], ffn[k] = v, v
		}
		b, err := json.Marshal(map[string]any{"architectures": []string{"DbrxForCausalLM"}, "model_type": "dbrx",
			"d_model": 32, "n_heads": 4, "n_layers": 2, "max_seq_len": 16, "vocab_size": 300, "num_key_value_heads": 2,
			"emb_pdrop": 0.0, "resid_pdrop": 0.0, "attn_config": attn, "ffn_config": ffn, "initializer_range": 0.02,
			"rope_parameters": map[string]any{"rope_type": "default", "rope_theta": ropeTheta}, "tie_word_embeddings": false,
			"output_router_logits": false, "transformers_version": "5.25.0", "dtype": "float32", "use_cache": true})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	res, err := ImportConfig(config(1.0, 500000), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Model.MoE.Normalize || res.Model.RopeBase != 500000 || res.Model.Attention.ClipQKV != 8 {
		t.Errorf("normalize %v, rope_base %v, clip_qkv %v; want true, 500000, 8", res.Model.MoE.Normalize, res.Model.RopeBase, res.Model.Attention.ClipQKV)
	}
	if res, err := ImportConfig(config(nil, 500000), Options{}); err != nil || res.Model.MoE.Normalize {
		t.Errorf("moe_normalize_expert_weights null: err %v, normalize %v; want the top-k weights as they are", err, res != nil && res.Model.MoE.Normalize)
	}
	if _, err := ImportConfig(config(2.0, 500000), Options{}); err == nil || !strings.Contains(err.Error(), "moe_normalize_expert_weights = 2") {
		t.Errorf("moe_normalize_expert_weights 2: err %v, want a refusal", err)
	}
	if _, err := ImportConfig(config(1.0, 10000), Options{}); err == nil || !strings.Contains(err.Error(), "attn_config.rope_theta") {
		t.Errorf("rope_parameters' base 10000 beside attn_config's 500000: err %v, want a refusal", err)
	}
}

// TestDbrxConfigOfTransformers4 imports DBRX's sub-configs as transformers 4 (4.39 and
// after) saved them, with PretrainedConfig's generation defaults in each (temperature,
// top_k, ...), which no forward pass reads; a structural switch set away from its default
// (is_decoder) is still refused.
func TestDbrxConfigOfTransformers4(t *testing.T) {
	generation := map[string]any{"temperature": 1.0, "top_k": 50, "top_p": 1.0, "max_length": 20, "min_length": 0,
		"do_sample": false, "num_beams": 1, "repetition_penalty": 1.0, "length_penalty": 1.0, "bad_words_ids": nil,
		"forced_eos_token_id": nil, "torchscript": false, "use_bfloat16": false, "tie_word_embeddings": true,
		"is_decoder": false, "add_cross_attention": false, "pruned_heads": map[string]any{}}
	config := func(isDecoder bool) []byte {
		attn := map[string]any{"attn_pdrop": 0.0, "clip_qkv": 8.0, "kv_n_heads": 2, "rope_theta": 500000.0}
		ffn := map[string]any{"ffn_act_fn": map[string]string{"name": "silu"}, "ffn_hidden_size": 24,
			"moe_jitter_eps": nil, "moe_loss_weight": 0.05, "moe_normalize_expert_weights": 1.0, "moe_num_experts": 4, "moe_top_k": 2}
		for k, v := range generation {
			attn[k], ffn[k] = v, v
		}
		ffn["is_decoder"] = isDecoder
		b, err := json.Marshal(map[string]any{"architectures": []string{"DbrxForCausalLM"}, "model_type": "dbrx",
			"d_model": 32, "n_heads": 4, "n_layers": 2, "max_seq_len": 16, "vocab_size": 300,
			"emb_pdrop": 0.0, "resid_pdrop": 0.0, "attn_config": attn, "ffn_config": ffn, "tie_word_embeddings": false,
			"transformers_version": "4.39.0", "torch_dtype": "bfloat16", "use_cache": true})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if _, err := ImportConfig(config(false), Options{}); err != nil {
		t.Errorf("transformers 4's sub-configs: %v", err)
	}
	if _, err := ImportConfig(config(true), Options{}); err == nil || !strings.Contains(err.Error(), "ffn_config.is_decoder") {
		t.Errorf("ffn_config.is_decoder true: err %v, want a refusal", err)
	}
}
