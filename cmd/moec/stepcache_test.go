package main

import (
	"io"
	"path/filepath"
	"testing"

	"github.com/moec-dev/moec/cmd/moec/internal/driver"
)

// TestStepProgramCacheLayout: --cache-budget with --tp or --step-programs asks the step
// programs for the unified cache (it was refused before they ran it), keeping the ZeRO
// stage asked for; a budget that is not a size is still a usage error.
func TestStepProgramCacheLayout(t *testing.T) {
	loaded := driver.Load(filepath.Join("..", "..", "examples", "hunyuan_tiny.moe"))
	if loaded.Diags.HasErrors() {
		t.Fatal(loaded.Diags.Err())
	}
	for _, rf := range []rankFlags{{tp: 2, budget: "8MiB"}, {program: true, budget: "1MiB", zero: 1, zeroSet: true, ranks: 2}} {
		l, _, err := rf.layout(loaded.Program, "", "eight", 0, 0, io.Discard)
		if err != nil {
			t.Fatalf("%+v: %v", rf, err)
		}
		want, _ := driver.ParseBytes(rf.budget)
		if l == nil || !l.StepPrograms() || l.Cache == nil || l.Cache.Budget != want || l.Cache.Page <= 0 || l.ZeRO != rf.zero {
			t.Errorf("%+v: layout %+v", rf, l)
		}
	}
	if _, _, err := (rankFlags{tp: 2, budget: "lots"}).layout(loaded.Program, "", "eight", 0, 0, io.Discard); err == nil {
		t.Error("--cache-budget lots accepted")
	}
}
