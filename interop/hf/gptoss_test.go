package hf

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moec-dev/moec/runtime/nn"
)

// TestImportGptOss: gpt-oss arrives with its sinks, biases, alternating windows and
// clamped SwiGLU; its MXFP4 quantization_config is accepted (the experts count as the
// floats they decode to) and any other refused; irregular layer_types are refused by
// name.
func TestImportGptOss(t *testing.T) {
	res, err := ImportConfig(readConfig(t, "gpt-oss-20b.json"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	a, e := res.Model.Attention, res.Model.MoE
	if !a.Sinks || !a.BiasQKV || !a.BiasOut || a.Window != 128 || a.FullEvery != 2 || a.WindowAt(0) != 128 || a.WindowAt(1) != 0 {
		t.Errorf("attention %+v", a)
	}
	if !e.RouterBias || !e.ExpertBias || e.SwigluLimit != 7 || e.SwigluAlpha != 1.702 || !e.Normalize || e.Score != "softmax" || e.TopK != 4 {
		t.Errorf("moe %+v", e)
	}
	if len(res.Notes) != 1 || !strings.Contains(res.Notes[0], "MXFP4") {
		t.Errorf("notes %q, want the MXFP4 decoding named", res.Notes)
	}

	types := make([]string, 24)
	for i := range types {
		types[i] = "sliding_attention"
	}
	types[5] = "full_attention"
	for _, tc := range []struct {
		name  string
		edits map[string]any
		want  string
	}{
		{"irregular layer_types", map[string]any{"layer_types": types}, "layer 11 is sliding_attention"},
		{"another quantization", map[string]any{"quantization_config": map[string]any{"quant_method": "fp8"}}, "quantization_config"},
		{"experts_per_token disagrees", map[string]any{"experts_per_token": 2}, "experts_per_token"},
		{"a negative swiglu_alpha", map[string]any{"swiglu_alpha": -1}, "swiglu_alpha"},
	} {
		if _, err := ImportConfig(editedConfig(t, "gpt-oss-20b.json", tc.edits), Options{}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want it to name %q", tc.name, err, tc.want)
		}
	}
	// Without layer_types GptOssConfig alternates, sliding first: the same model.
	res2, err := ImportConfig(editedConfig(t, "gpt-oss-20b.json", map[string]any{"layer_types": nil}), Options{})
	if err != nil || res2.Model.Attention.FullEvery != 2 {
		t.Errorf("default layer_types: %v", err)
	}
	// transformers 5's GptOssConfig writes swiglu_alpha; another slope is another model.
	res3, err := ImportConfig(editedConfig(t, "gpt-oss-20b.json", map[string]any{"swiglu_alpha": 1.5}), Options{})
	if err != nil || res3.Model.MoE.SwigluAlpha != 1.5 || !strings.Contains(string(res3.Source), "swiglu_alpha") {
		t.Errorf("swiglu_alpha 1.5: %v", err)
	}
}

// TestGptOssComputesAsTransformers: a tiny gpt-oss model's logits from moec's runtime
// equal those of an independent torch forward written from transformers'
// modeling_gpt_oss.py (testdata/gpt_oss_forward.py) on the same weights, exported in
// GptOssForCausalLM's layout: the fused, interleaved experts, the sinks, the alternating window, the biased router softmaxed over its
// top k and the clamped SwiGLU (a limit of 0.5 clamps some 2% of the tiny model's gate
// and up values) mean to moec what they mean to transformers.
func TestGptOssComputesAsTransformers(t *testing.T) {
	py := torchPython(t)
	m := tinyModel(t, "tiny_gpt_oss")
	dir, _ := saveCheckpoint(t, m)
	out := filepath.Join(t.TempDir(), "export")
	man, err := Export(dir, out)
	if err != nil {
		t.Fatal(err)
	}
	if man.Layout != LayoutGptOss || len(man.Unsupported) != 0 {
		t.Fatalf("layout %s (unsupported %v), want gpt-oss's", man.Layout, man.Unsupported)
	}
	ids := []int32{5, 17, 250, 3, 99, 42, 7, 128, 11, 64}
	text := make([]string, len(ids))
	for i, id := range ids {
		text[i] = fmt.Sprint(id)
	}
	want, err := tinyNet(t, m).Logits(nn.Batch{B: 1, T: len(ids), Tokens: append(append([]int32(nil), ids...), 0)}, nn.StepOptions{})
	if err != nil {
		t.Fatal(err)
	}
	compareLogits(t, py, "gpt_oss_forward.py", out, strings.Join(text, ","), want)
}

// TestImportRefusesMixedLayerTypes: a config whose layer_types puts full_attention layers
// beside a sliding window (outside gpt-oss, whose alternation full_every expresses) is
// refused by name, not imported with the window in every layer.
func TestImportRefusesMixedLayerTypes(t *testing.T) {
	var cfg map[string]any
	if err := json.Unmarshal(readConfig(t, "mixtral-8x7b.json"), &cfg); err != nil {
		t.Fatal(err)
	}
	types := make([]string, 32)
	for i := range types {
		types[i] = "sliding_attention"
		if i%2 == 1 {
			types[i] = "full_attention"
		}
	}
	cfg["sliding_window"], cfg["layer_types"] = 4096, types
	b, _ := json.Marshal(cfg)
	if _, err := ImportConfig(b, Options{}); err == nil || !strings.Contains(err.Error(), "layer_types") {
		t.Errorf("err = %v, want layer_types refused", err)
	}
}
