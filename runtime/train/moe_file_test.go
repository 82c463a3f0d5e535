package train

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/moec-dev/moec/compiler/check"
	"github.com/moec-dev/moec/lang/diag"
)

// TestFromSource runs the curriculum of testdata/tiny.moe as `moec run` does: checked by
// compiler/check, each stage in the conventional directory, the second grown from the first.
func TestFromSource(t *testing.T) {
	prog, _, diags := check.Load("testdata/tiny.moe", os.ReadFile)
	if diags.HasErrors() {
		t.Fatalf("testdata/tiny.moe does not check:\n%v", diags.Err())
	}
	root := t.TempDir()
	base, _ := filepath.Abs("testdata")
	opt := Options{Program: prog, OutRoot: root, BaseDir: base}

	opt.StageName = "moe"
	if _, err := Run(context.Background(), opt); diag.CodeOf(err) != diag.CodeNoFromCheckpoint {
		t.Fatalf("moe before dense: %v", err)
	}
	opt.StageName = "dense"
	dense, err := Run(context.Background(), opt)
	if err != nil {
		t.Fatal(err)
	}
	opt.StageName = "moe"
	moe, err := Run(context.Background(), opt)
	if err != nil {
		t.Fatal(err)
	}
	if dense.Dir != StageDir(root, "tiny", "dense") || moe.Dir != StageDir(root, "tiny", "moe") {
		t.Errorf("run dirs %s, %s", dense.Dir, moe.Dir)
	}
	recs, err := ReadLog(moe.LogPath)
	if err != nil || len(recs) != 6 {
		t.Fatalf("moe log: %d records, %v", len(recs), err)
	}
	// share_weights = 0.5: some layers reuse the previous layer's attention weights.
	shared := 0
	for _, r := range recs {
		shared += r.SharedLayers
	}
	if shared == 0 {
		t.Error("no attention sharing logged with share_weights = 0.5")
	}
	// Resuming a finished run with the same source is accepted and changes nothing.
	again, err := Run(context.Background(), Options{Program: prog, Resume: moe.Dir})
	if err != nil {
		t.Fatal(err)
	}
	if again.Steps != 6 || again.ValPPL != moe.ValPPL {
		t.Errorf("resumed finished run: %+v", again)
	}
	ev, err := Eval(context.Background(), EvalOptions{Checkpoint: moe.Checkpoint, Program: prog, BaseDir: base})
	if err != nil || math.Abs(ev.PPL-moe.ValPPL) > 1e-9*moe.ValPPL {
		t.Errorf("Eval = %+v, %v; run said %v", ev, err, moe.ValPPL)
	}
}
