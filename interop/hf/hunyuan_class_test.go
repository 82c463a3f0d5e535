package hf

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moec-dev/moec/runtime/checkpoint"
)

// a13bRemote are the edits that make the Hunyuan-A13B fixture the form Tencent's
// Hunyuan-A13B-Instruct repository ships: model_type hunyuan, the class in auto_map.
var a13bRemote = map[string]any{
	"model_type": "hunyuan",
	"auto_map": map[string]string{"AutoConfig": "configuration_hunyuan.HunYuanConfig", "AutoModel": "hunyuan.HunYuanModel",
		"AutoModelForCausalLM": "hunyuan.HunYuanMoEV1ForCausalLM"},
}

func withEdits(base map[string]any, more map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range base {
		out[k] = v
	}
	for k, v := range more {
		out[k] = v
	}
	return out
}

// TestHunyuanRemoteA13B: model_type hunyuan is Hunyuan-Large's class or Hunyuan-A13B's
// remote code, told apart by the class the config names (architectures, auto_map). The
// A13B form imports as Hunyuan-A13B, the same model as transformers' hunyuan_v1_moe
// config; Hunyuan-Large's stays Hunyuan-Large's; a config naming both classes, or
// another, and what the two families read differently left unsaid, are refused.
func TestHunyuanRemoteA13B(t *testing.T) {
	file := "hunyuan-a13b.json"
	opt := fixtureOptions(file)
	opt.Name = "a13b"
	v1, err := ImportConfig(readConfig(t, file), opt)
	if err != nil {
		t.Fatal(err)
	}
	remote, err := ImportConfig(editedConfig(t, file, a13bRemote), opt)
	if err != nil {
		t.Fatal(err)
	}
	if remote.Class != "HunYuanMoEV1ForCausalLM" || !strings.Contains(strings.Join(remote.Notes, "; "), "read as Hunyuan-A13B") {
		t.Errorf("the A13B remote form imports as %s (notes %v), want HunYuanMoEV1ForCausalLM", remote.Class, remote.Notes)
	}
	h1, _ := checkpoint.ConfigHash(v1.Model)
	if h2, _ := checkpoint.ConfigHash(remote.Model); h1 != h2 {
		t.Errorf("the A13B remote form is another model than hunyuan_v1_moe's")
	}
	large, err := ImportConfig(readConfig(t, "hunyuan-large.json"), Options{})
	if err != nil || large.Class != "HunYuanForCausalLM" || large.Model.MoE.Normalize {
		t.Fatalf("Hunyuan-Large: %v, class %v", err, large)
	}
	for _, tc := range []struct {
		name  string
		edits map[string]any
		want  string
	}{
		{"both classes", withEdits(a13bRemote, map[string]any{"architectures": []string{"HunYuanForCausalLM"}}),
			"names both HunYuanForCausalLM (architectures) and HunYuanMoEV1ForCausalLM (auto_map.AutoModelForCausalLM)"},
		{"another class", withEdits(a13bRemote, map[string]any{"architectures": []string{"HunYuanDenseV1ForCausalLM"}}),
			"HunYuanDenseV1ForCausalLM, which is not a model_type hunyuan class moec imports"},
		{"a top-1 router", withEdits(a13bRemote, map[string]any{"moe_topk": 1}), "moe_topk: a top-1 router"},
		{"no use_qk_norm", withEdits(a13bRemote, map[string]any{"use_qk_norm": nil}), "use_qk_norm: missing"},
	} {
		_, err := ImportConfig(editedConfig(t, file, tc.edits), fixtureOptions(file))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
	}
}

// TestHunyuanRemoteA13BCheckpoint: a Hunyuan-A13B folder in the remote form (the names are
// the same) imports its weights as the model transformers' form gives.
func TestHunyuanRemoteA13BCheckpoint(t *testing.T) {
	m := hunyuanModel(t, "tiny_hunyuan_a13b")
	dir, _ := saveCheckpoint(t, m)
	out := filepath.Join(t.TempDir(), "export")
	if _, err := Export(dir, out); err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	b, _ := os.ReadFile(filepath.Join(out, ConfigFile))
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	// Tencent's form writes the switches transformers' class has always.
	b, _ = json.Marshal(withEdits(withEdits(cfg, a13bRemote), map[string]any{"use_qk_norm": true, "use_mixed_mlp_moe": true}))
	if err := os.WriteFile(filepath.Join(out, ConfigFile), b, 0o644); err != nil {
		t.Fatal(err)
	}
	imp, err := ImportCheckpoint(out, filepath.Join(t.TempDir(), "imported"), Options{Name: m.Name})
	if err != nil {
		t.Fatal(err)
	}
	h1, _ := checkpoint.ConfigHash(m)
	if h2, _ := checkpoint.ConfigHash(imp.Model); h1 != h2 || imp.Class != "HunYuanMoEV1ForCausalLM" {
		t.Errorf("imported as %s, the same model: %v", imp.Class, h1 == h2)
	}
}
