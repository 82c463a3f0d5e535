package hf

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moec-dev/moec/runtime/nn"
)

// TestImportLlama4: Scout's and Maverick's language models arrive with their attention
// (every fourth layer without rotary positions, chunks of 8192 in the others, unscaled q/k
// norms where the config has use_qk_norm, the query temperature) and their routing (a
// sigmoid top-1 gate on the expert's input, one shared expert).
func TestImportLlama4(t *testing.T) {
	for _, tc := range []struct {
		file  string
		every int
		qkL2  bool
	}{
		{"llama-4-scout-17b-16e.json", 1, true},
		{"llama-4-maverick-17b-128e.json", 2, false},
	} {
		res, err := ImportConfig(readConfig(t, tc.file), Options{})
		if err != nil {
			t.Fatalf("%s: %v", tc.file, err)
		}
		a, e := res.Model.Attention, res.Model.MoE
		if a.NopeEvery != 4 || a.ChunkSize != 8192 || a.QKL2Norm != tc.qkL2 || a.NopeTemperature != 0.1 || a.NopeTemperatureFloor != 8192 {
			t.Errorf("%s: attention %+v", tc.file, a)
		}
		if e.Score != "sigmoid" || e.TopK != 1 || e.Normalize || !e.GateInput || e.SharedExperts != 1 || max(e.Every, 1) != tc.every {
			t.Errorf("%s: moe %+v", tc.file, e)
		}
	}

	// An explicit no_rope_layers list with the default period is the same model; another
	// pattern, and layer_types that disagree with it, are refused by name.
	flags := make([]int, 48)
	for i := range flags {
		if (i+1)%4 != 0 {
			flags[i] = 1
		}
	}
	if res, err := ImportConfig(editedConfig(t, "llama-4-scout-17b-16e.json", map[string]any{"no_rope_layers": flags}), Options{}); err != nil || res.Model.Attention.NopeEvery != 4 {
		t.Errorf("explicit no_rope_layers: %v", err)
	}
	odd := append([]int(nil), flags...)
	odd[0] = 0
	if _, err := ImportConfig(editedConfig(t, "llama-4-scout-17b-16e.json", map[string]any{"no_rope_layers": odd}), Options{}); err == nil || !strings.Contains(err.Error(), "no_rope_layers") {
		t.Errorf("irregular no_rope_layers: err = %v", err)
	}
	types := make([]string, 48)
	for i := range types {
		types[i] = "chunked_attention"
	}
	if _, err := ImportConfig(editedConfig(t, "llama-4-scout-17b-16e.json", map[string]any{"layer_types": types}), Options{}); err == nil || !strings.Contains(err.Error(), "layer 3 is chunked_attention") {
		t.Errorf("layer_types chunking a layer without rotary positions: err = %v", err)
	}
	for i := range types {
		if (i+1)%4 == 0 {
			types[i] = "full_attention"
		}
	}
	if _, err := ImportConfig(editedConfig(t, "llama-4-scout-17b-16e.json", map[string]any{"layer_types": types}), Options{}); err != nil {
		t.Errorf("layer_types as the rule gives them: %v", err)
	}
	// Temperature tuning off, and chunks as long as the context, leave the keys out.
	res, err := ImportConfig(editedConfig(t, "llama-4-scout-17b-16e.json", map[string]any{"attn_temperature_tuning": false, "attention_chunk_size": 10485760}), Options{})
	if err != nil || res.Model.Attention.NopeTemperature != 0 || res.Model.Attention.ChunkSize != 0 {
		t.Errorf("tuning off, one chunk: %v %+v", err, res)
	}

	// The multimodal wrapper is refused with the way out.
	wrapper := []byte(`{"model_type": "llama4", "text_config": {}, "vision_config": {}}`)
	if _, err := ImportConfig(wrapper, Options{}); err == nil || !strings.Contains(err.Error(), "text_config") {
		t.Errorf("llama4 wrapper: err = %v", err)
	}
}

// TestLlama4ComputesAsTransformers: a tiny Llama 4 model's logits from moec's runtime
// equal those of an independent torch forward written from transformers'
// modeling_llama4.py (testdata/llama4_forward.py) on the same weights, exported in moec's
// layout: position-free layers with the query temperature, chunked attention, unscaled
// q/k norms, the sigmoid gate on the expert's input beside the shared expert, and dense
// layers between.
func TestLlama4ComputesAsTransformers(t *testing.T) {
	py := torchPython(t)
	m := tinyModel(t, "tiny_llama4")
	dir, _ := saveCheckpoint(t, m)
	out := filepath.Join(t.TempDir(), "export")
	if _, err := Export(dir, out); err != nil {
		t.Fatal(err)
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
	compareLogits(t, py, "llama4_forward.py", out, strings.Join(text, ","), want)
}
