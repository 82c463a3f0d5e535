package main

import (
	"io"
	"path/filepath"
	"testing"

	"github.com/moec-dev/moec/cmd/moec/internal/driver"
)

// TestLayoutPlanFollowsMicroBatch: the plan the measured memory is held against runs the
// run's micro-batch, so halving --micro-batch halves the predicted activations.
func TestLayoutPlanFollowsMicroBatch(t *testing.T) {
	loaded := driver.Load(filepath.Join("..", "..", "examples", "hunyuan_tiny.moe"))
	if loaded.Diags.HasErrors() {
		t.Fatal(loaded.Diags.Err())
	}
	rf := rankFlags{ranks: 2, ep: 2}
	activations := func(micro int) int64 {
		_, p, err := rf.layout(loaded.Program, "", "eight", micro, 0, io.Discard)
		if err != nil || p == nil || p.Placement == nil {
			t.Fatalf("micro-batch %d: plan %v, %v", micro, p, err)
		}
		for _, b := range p.Placement.Ranks[0].Bytes {
			if b.Name == "activations" {
				return b.Bytes
			}
		}
		t.Fatalf("micro-batch %d: the plan has no activations", micro)
		return 0
	}
	def, four, two := activations(0), activations(4), activations(2)
	if def <= four || four <= two {
		t.Errorf("predicted activations: default %d, --micro-batch 4 %d, 2 %d; want them to fall with the micro-batch", def, four, two)
	}
}

// TestParseCacheBudgetZero: a zero device budget is refused, not taken as "no budget".
func TestParseCacheBudgetZero(t *testing.T) {
	loaded := driver.Load(filepath.Join("..", "..", "examples", "hunyuan_tiny.moe"))
	if loaded.Diags.HasErrors() {
		t.Fatal(loaded.Diags.Err())
	}
	rf := rankFlags{budget: "0"}
	if _, _, err := rf.layout(loaded.Program, "", "eight", 0, 0, io.Discard); err == nil {
		t.Error("--cache-budget 0 accepted")
	}
}

// TestSequenceParallelNeedsTP: --sp splits what the tensor-parallel ranks replicate, so
// without --tp > 1 it is a usage error; with --tp 2 it reaches the run's layout.
func TestSequenceParallelNeedsTP(t *testing.T) {
	loaded := driver.Load(filepath.Join("..", "..", "examples", "hunyuan_tiny.moe"))
	if loaded.Diags.HasErrors() {
		t.Fatal(loaded.Diags.Err())
	}
	for _, rf := range []rankFlags{{sp: true}, {sp: true, tp: 1, ranks: 2}, {sp: true, pp: 2}} {
		_, _, err := rf.layout(loaded.Program, "", "eight", 0, 0, io.Discard)
		if err == nil || !driver.IsUsage(err) {
			t.Errorf("%+v: %v, want a usage error", rf, err)
		}
	}
	l, _, err := rankFlags{sp: true, tp: 2}.layout(loaded.Program, "", "eight", 0, 0, io.Discard)
	if err != nil || l == nil || !l.SP || l.TP != 2 {
		t.Errorf("--tp 2 --sp: layout %+v, %v", l, err)
	}
}
