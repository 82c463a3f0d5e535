package hf

import (
	"strings"
	"testing"
)

// TestHunyuanVariantFields: the Hunyuan-A13B config Tencent publishes carries the fields of
// its multimodal and embedding variants, all off; it imports with them, and a config that
// turns one on is refused naming it.
func TestHunyuanVariantFields(t *testing.T) {
	if _, err := ImportConfig(readConfig(t, "hunyuan-a13b.json"), fixtureOptions("hunyuan-a13b.json")); err != nil {
		t.Fatalf("the published Hunyuan-A13B config: %v", err)
	}
	for _, tc := range []struct {
		edits map[string]any
		field string
	}{
		{map[string]any{"vit_type": "siglip"}, "vit_type"},
		{map[string]any{"vit_path": "vit.pt"}, "vit_type"},
		{map[string]any{"add_classification_head": true}, "add_classification_head"},
		{map[string]any{"norm_type": "layer"}, "norm_type"},
		{map[string]any{"position_embedding_xdrope": true}, "position_embedding_xdrope"},
		{map[string]any{"xdrope_section": []int{16, 16, 16, 16}}, "position_embedding_xdrope"},
	} {
		_, err := ImportConfig(editedConfig(t, "hunyuan-a13b.json", tc.edits), fixtureOptions("hunyuan-a13b.json"))
		if err == nil || !strings.Contains(err.Error(), tc.field+":") || !strings.Contains(err.Error(), "cannot be dropped") {
			t.Errorf("%v: err = %v, want %s refused", tc.edits, err, tc.field)
		}
	}
}
