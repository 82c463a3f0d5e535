package main

import (
	"io"
	"path/filepath"
	"testing"

	"github.com/moec-dev/moec/internal/driver"
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
