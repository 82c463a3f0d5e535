package hf

import (
	"strings"
	"testing"
)

// TestUnknownFieldSuggestion: the closest match an unknown field's error offers is a field
// moec reads, not another unknown field of the same config.
func TestUnknownFieldSuggestion(t *testing.T) {
	_, err := ImportConfig(editedConfig(t, "mixtral-8x7b.json", map[string]any{"im_end_id": 6, "video_end_id": 11}), Options{})
	if err == nil {
		t.Fatal("unknown fields imported")
	}
	for _, line := range strings.Split(err.Error(), "\n") {
		if strings.Contains(line, "video_end_id:") && strings.Contains(line, "im_end_id") {
			t.Errorf("suggests another unknown field: %s", line)
		}
	}
	if !strings.Contains(err.Error(), "video_end_id:") || !strings.Contains(err.Error(), "im_end_id:") {
		t.Errorf("err = %v, want both fields refused", err)
	}
}
