package cudastep

import (
	"strings"
	"testing"

	"github.com/moec-dev/moec/compiler/step"
)

// TestLowerMoERefusesGroups: node-limited routing, which the step program lowers and the
// route kernel does not compute, is refused by name rather than routed over all experts.
func TestLowerMoERefusesGroups(t *testing.T) {
	m := hunyuanTiny(t)
	m.MoE.Groups, m.MoE.TopKGroups = 2, 1
	progs, err := step.Lower(m, step.Batch{MicroBatch: 2, SeqLen: 16, Micro: 1}, step.Layout{DP: 1, EP: 1, TP: 1, PP: 1})
	if err != nil {
		t.Fatal(err)
	}
	p := progs[0]
	for i, op := range p.Ops {
		if op.Kind != step.OpRouter {
			continue
		}
		_, err := lowerMoE(p, m, i)
		if err == nil || !strings.Contains(err.Error(), "moe.groups") {
			t.Errorf("route with groups: %v, want a refusal naming moe.groups", err)
		}
		return
	}
	t.Fatal("no route op")
}
