package cudastep

import (
	"strings"
	"testing"

	"github.com/moec-dev/moec/compiler/step"
)

// TestLowerMoEGroups: node-limited routing lowers to moe_route_topk with its groups and
// top groups (TestMoELaunchesMatchExec holds the choice to runtime/exec's); more groups
// than the kernel's mask holds are refused by name.
func TestLowerMoEGroups(t *testing.T) {
	for _, c := range []struct {
		experts, groups, top int
		refuse               bool
	}{{8, 2, 1, false}, {8, 4, 2, false}, {128, 128, 1, true}} {
		m := hunyuanTiny(t)
		m.MoE.Experts, m.MoE.Groups, m.MoE.TopKGroups = c.experts, c.groups, c.top
		progs, err := step.Lower(m, step.Batch{MicroBatch: 2, SeqLen: 16, Micro: 1}, step.Layout{DP: 1, EP: 1, TP: 1, PP: 1})
		if err != nil {
			t.Fatal(err)
		}
		p := progs[0]
		found := false
		for i, op := range p.Ops {
			if op.Kind != step.OpRouter {
				continue
			}
			found = true
			ls, err := lowerMoE(p, m, i)
			if c.refuse {
				if err == nil || !strings.Contains(err.Error(), "node-limited routing") {
					t.Errorf("%d groups: %v, want a refusal naming node-limited routing", c.groups, err)
				}
				break
			}
			if err != nil {
				t.Fatalf("%d groups of %d experts: %v", c.groups, c.experts, err)
			}
			a := ls[0].Args
			if ls[0].Kernel != "moe_route_topk" || a[11].Int != int64(c.groups) || a[12].Int != int64(c.top) {
				t.Errorf("%d groups, top %d: the first launch is %s with groups %d, top %d", c.groups, c.top, ls[0].Kernel, a[11].Int, a[12].Int)
			}
			break
		}
		if !found {
			t.Fatal("no route op")
		}
	}
}
