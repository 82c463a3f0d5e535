package plan

import (
	"strings"
	"testing"
)

// TestCompare: two strategies of the trillion stage side by side, each column its own plan.
func TestCompare(t *testing.T) {
	uc := trillionPlan(t, Options{Nodes: 40}, nil)
	zi := trillionPlan(t, Options{Nodes: 40, Memory: "zero3-offload"}, nil)
	md := Compare(uc, zi)
	for _, want := range []string{
		"| | unified_cache | zero3-offload | zero3-offload / unified_cache |",
		"| host update | pipelined | after_backward |  |",
		"| exposed optimizer step (s) |", "| MFU (%) |", "| GPU-hours for the stage |", "| gpu memory per device |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("comparison lacks %q:\n%s", want, md)
		}
	}
	if StrategyName(uc.Layout) != "unified_cache" || StrategyName(zi.Layout) != "zero3-offload" {
		t.Errorf("strategy names %q, %q", StrategyName(uc.Layout), StrategyName(zi.Layout))
	}
}
