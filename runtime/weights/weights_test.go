package weights_test

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/moec-dev/moec/compiler/check"
	"github.com/moec-dev/moec/compiler/params"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/runtime/checkpoint"
	"github.com/moec-dev/moec/runtime/weights"
)

// stages are examples/hunyuan_tiny.moe's dense and four-expert stage models.
func stages(t *testing.T) (dense, four *program.Model, grow program.Grow) {
	t.Helper()
	prog, _, diags := check.Load("../../examples/hunyuan_tiny.moe", os.ReadFile)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	tr := prog.Trains[prog.TrainOrder[0]]
	base := prog.Models[tr.Model]
	for _, s := range tr.Stages {
		switch s.Name {
		case "dense":
			dense = program.StageModel(base, s)
		case "four":
			four, grow = program.StageModel(base, s), s.Grow
		}
	}
	return dense, four, grow
}

// saveRun writes ts as the final (or not) checkpoint of a run folder and returns the folder.
func saveRun(t *testing.T, m *program.Model, ts []weights.Tensor, final bool) string {
	t.Helper()
	run := t.TempDir()
	c := &checkpoint.Checkpoint{Manifest: checkpoint.Manifest{Train: "hunyuan_tiny", Stage: "dense", Step: 1, TotalSteps: 1, Final: final, Model: m},
		Model: weights.Safetensors(ts)}
	if _, err := (checkpoint.Writer{}).Save(filepath.Join(run, weights.CheckpointsDir), c); err != nil {
		t.Fatal(err)
	}
	return run
}

// TestGrownFromRunFolder grows the four-expert stage from a dense run folder's final
// checkpoint: the attention is copied, and without noise every expert starts as the dense
// FFN (its down projection scaled by 1/(k·gate) = 4 for a uniform softmax gate over 4).
func TestGrownFromRunFolder(t *testing.T) {
	dense, four, _ := stages(t)
	old, err := weights.Initial(dense, 5)
	if err != nil {
		t.Fatal(err)
	}
	got, err := weights.Grown(saveRun(t, dense, old, true), four, program.Grow{Kind: "copy"}, 9)
	if err != nil {
		t.Fatal(err)
	}
	byID := func(ts []weights.Tensor, id params.ID) []float32 {
		for _, t := range ts {
			if t.ID == id {
				return t.W
			}
		}
		return nil
	}
	q := params.ID{Role: params.RoleQ, Layer: 1, Expert: -1}
	if w := byID(got, q); w == nil || !slices.Equal(w, byID(old, q)) {
		t.Errorf("L1.q is not copied from the dense stage")
	}
	in := byID(old, params.ID{Role: params.RoleFFNIn, Layer: 1, Expert: -1})
	down := byID(old, params.ID{Role: params.RoleFFNDown, Layer: 1, Expert: -1})
	for e := 0; e < 4; e++ {
		if w := byID(got, params.ID{Role: params.RoleExpertIn, Layer: 1, Expert: e}); !slices.Equal(w, in) {
			t.Errorf("expert %d's w1 is not the dense FFN's gate_proj", e)
		}
		w2 := byID(got, params.ID{Role: params.RoleExpertDown, Layer: 1, Expert: e})
		for i := range down {
			if math.Abs(float64(w2[i])-4*float64(down[i])) > 1e-7 {
				t.Fatalf("expert %d's w2[%d] = %v, want 4 × %v", e, i, w2[i], down[i])
			}
		}
	}
}

// TestGrownRefuses: a checkpoint that is not its stage's final one, and one holding a
// non-finite weight (E0607), are not grown from.
func TestGrownRefuses(t *testing.T) {
	dense, four, grow := stages(t)
	old, err := weights.Initial(dense, 5)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := weights.Grown(saveRun(t, dense, old, false), four, grow, 9); err == nil {
		t.Error("grown from a checkpoint that is not final")
	}
	old[3].W[0] = float32(math.NaN())
	_, err = weights.Grown(saveRun(t, dense, old, true), four, grow, 9)
	var re *diag.Diagnostic
	if !errors.As(err, &re) || re.Code != diag.CodeCorruptCheckpoint {
		t.Errorf("grown from a NaN weight: %v, want %s", err, diag.CodeCorruptCheckpoint)
	}
}
