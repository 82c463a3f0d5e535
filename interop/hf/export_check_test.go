package hf

import (
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/runtime/checkpoint"
	"github.com/moec-dev/moec/runtime/safetensors"
	"github.com/moec-dev/moec/runtime/train"
)

// TestExportRefusesWhatLoadingRefuses writes checkpoints whose files verify (their SHA-256
// is that of the tampered tensors) but whose weights are wrong: export hf must refuse each
// as loading it for eval or generate does, with the same code and message, in the
// transformers layout and in moec's.
func TestExportRefusesWhatLoadingRefuses(t *testing.T) {
	for _, model := range []string{"tiny_mixtral", "tiny_hunyuan"} {
		for _, tc := range []struct {
			name string
			edit func(ts []safetensors.Tensor)
			code diag.Code
			want string
		}{
			{"renamed tensor", func(ts []safetensors.Tensor) { ts[1].Name = "model.renamed.weight" }, diag.CodeCheckpointMismatch, "tensor model.renamed.weight is not part of the model"},
			{"NaN weight", func(ts []safetensors.Tensor) { ts[2].Data[5] = float32(math.NaN()) }, diag.CodeCorruptCheckpoint, "holds NaN at index 5"},
			{"infinite weight", func(ts []safetensors.Tensor) { ts[0].Data[0] = float32(math.Inf(-1)) }, diag.CodeCorruptCheckpoint, "holds -Inf at index 0"},
		} {
			t.Run(model+"/"+tc.name, func(t *testing.T) {
				dir, _ := saveCheckpoint(t, tinyModel(t, model))
				c, err := checkpoint.Load(dir, false)
				if err != nil {
					t.Fatal(err)
				}
				tc.edit(c.Model)
				bad, err := checkpoint.Writer{}.Save(filepath.Join(t.TempDir(), "bad", train.CheckpointsDir), c)
				if err != nil {
					t.Fatal(err)
				}
				_, exportErr := Export(bad, filepath.Join(t.TempDir(), "out"))
				_, _, loadErr := train.LoadNet(bad, nil)
				for what, err := range map[string]error{"export hf": exportErr, "loading for eval/generate": loadErr} {
					if diag.CodeOf(err) != tc.code || !strings.Contains(err.Error(), tc.want) {
						t.Errorf("%s: %v, want %s with %q", what, err, tc.code, tc.want)
					}
				}
				if exportErr != nil && loadErr != nil && exportErr.Error() != loadErr.Error() {
					t.Errorf("export hf and loading refuse differently:\n%v\n%v", exportErr, loadErr)
				}
			})
		}
	}
}
