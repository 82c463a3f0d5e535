package step

import (
	"fmt"
	"strings"
	"testing"
)

// TestDroplessDispatchIsPacked: a dropless MoE layer without expert parallelism holds
// tokens × top_k rows in each expert buffer (the dispatch, the grouped products, the
// activation, the experts' output and their gradients), not experts × tokens × top_k;
// with a capacity factor, or under expert parallelism, the buffers stay [experts,
// slots, width]. The dropless program's arena is smaller than it would be blocked.
func TestDroplessDispatchIsPacked(t *testing.T) {
	const B, T = 2, 16
	for _, c := range []struct {
		capacityFactor float64
		layout         Layout
		packed         bool
	}{
		{0, Layout{DP: 1, EP: 1, TP: 1, PP: 1}, true},
		{0, Layout{DP: 1, EP: 1, TP: 2, PP: 1}, true},
		{0, Layout{DP: 2, EP: 2, TP: 1, PP: 1}, false},
		{1.25, Layout{DP: 1, EP: 1, TP: 1, PP: 1}, false},
	} {
		t.Run(fmt.Sprintf("cf=%g/%s", c.capacityFactor, c.layout), func(t *testing.T) {
			m := hunyuanTiny(t, 8)
			moe := *m.MoE
			m.MoE = &moe
			m.MoE.CapacityFactor = c.capacityFactor
			m.Attention.TalkingHeads = false // not lowered under tp
			progs, err := Lower(m, Batch{MicroBatch: B, SeqLen: T, Micro: 1}, c.layout)
			if err != nil {
				t.Fatal(err)
			}
			p := progs[0]
			rows := B * T * m.MoE.TopK
			routes, experts := 0, 0
			for _, op := range p.Ops {
				if op.Kind == OpRouter {
					routes++
					if op.Packed != c.packed || (c.packed && op.Slots != rows) {
						t.Errorf("route: packed %v with %d slots, want packed %v", op.Packed, op.Slots, c.packed)
					}
				}
			}
			for _, b := range p.Buffers {
				name := strings.TrimPrefix(b.Name, "d")
				if !strings.Contains(name, ".dispatch@") && !strings.Contains(name, ".experts.") {
					continue
				}
				experts++
				switch {
				case c.packed && (len(b.Shape) != 2 || b.Shape[0] != rows):
					t.Errorf("%s %v: want %d rows (tokens × top_k)", b.Name, b.Shape, rows)
				case !c.packed && len(b.Shape) != 3:
					t.Errorf("%s %v: want [experts, slots, width]", b.Name, b.Shape)
				}
			}
			if routes == 0 || experts == 0 {
				t.Fatalf("%d route ops and %d expert buffers: no MoE layer lowered", routes, experts)
			}
		})
	}
}
