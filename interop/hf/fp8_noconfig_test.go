package hf

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moec-dev/moec/lang/diag"
)

// TestImportFP8WithoutQuantizationConfig: an FP8 folder whose config.json lost its
// quantization_config is refused saying what the weights are and what the config lacks,
// not with the float reader's "unsupported dtype".
func TestImportFP8WithoutQuantizationConfig(t *testing.T) {
	q, _, _ := deepseekFP8(t, 8, 6)
	delete(q.config, "quantization_config")
	_, err := ImportCheckpoint(q.write(t), filepath.Join(t.TempDir(), "imported"), Options{Name: "tiny_deepseek_v3"})
	var d *diag.Diagnostic
	if !errors.As(err, &d) || d.Code != diag.CodeWeightsMismatch {
		t.Fatalf("err = %v, want an %s diagnostic", err, diag.CodeWeightsMismatch)
	}
	for _, want := range []string{"F8_E4M3 weights", "block scales", "config.json declares no quantization_config"} {
		if !strings.Contains(d.Summary, want) {
			t.Errorf("summary %q lacks %q", d.Summary, want)
		}
	}
	if !strings.Contains(d.Suggestion, `"quant_method": "fp8"`) {
		t.Errorf("suggestion %q does not say what to restore", d.Suggestion)
	}
}
