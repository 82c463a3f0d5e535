package step

import (
	"testing"

	"github.com/moec-dev/moec/compiler/program"
)

// TestZeRO3PrefetchOneLayerAhead: under ZeRO 3 the forward gathers layer l+1 before layer
// l's first compute op and the backward gathers layer l−1 before layer l's first backward
// op (recomputation included), in every micro-batch, and no more than two layers' gathered
// weights are ever live at once (some op holds two: the prefetch overlaps the current
// layer, as the planner's zero3_live_layers assumes).
func TestZeRO3PrefetchOneLayerAhead(t *testing.T) {
	b := Batch{MicroBatch: 2, SeqLen: 16, Micro: 2}
	for _, l := range []Layout{
		{DP: 2, EP: 1, TP: 1, PP: 1, ZeRO: 3},
		{DP: 2, EP: 2, TP: 1, PP: 2, ZeRO: 3},
		{DP: 2, EP: 1, TP: 1, PP: 1, ZeRO: 3, Recompute: program.RecomputeFull},
	} {
		t.Run(l.String(), func(t *testing.T) {
			m := hunyuanTiny(t, 4)
			moe := *m.MoE
			m.MoE = &moe
			if l.PP > 1 { // what the pipeline lowers (TestGradientBuckets' plain model)
				m.Attention.TalkingHeads = false
				m.Attention.ShareWeights = 1
				m.MoE.Router = program.RouteHidden
			}
			progs, err := Lower(m, b, l)
			if err != nil {
				t.Fatal(err)
			}
			if err := VerifyLayout(progs); err != nil {
				t.Fatal(err)
			}
			for _, p := range progs {
				type key struct {
					phase Phase
					micro int
					layer int
				}
				gather, compute := map[key]int{}, map[key]int{}
				for i, op := range p.Ops {
					if op.Layer < 0 || (op.Phase != Forward && op.Phase != Backward) {
						continue
					}
					k := key{op.Phase, op.Micro, op.Layer}
					var m map[key]int
					switch {
					case op.Kind == OpAllGather:
						m = gather
					case op.Kind.Collective() || op.Kind.PointToPoint():
						continue // communication, not the layer's compute
					default:
						m = compute
					}
					if _, ok := m[k]; !ok {
						m[k] = i
					}
				}
				gathers := 0
				for k, first := range compute {
					next := k
					if k.phase == Forward {
						next.layer++
					} else {
						next.layer--
					}
					if next.layer < p.FirstLayer || next.layer >= p.FirstLayer+p.LayerCount {
						continue
					}
					g, ok := gather[next]
					if !ok {
						t.Errorf("rank %d: no %s gather of layer %d in micro-batch %d", p.Rank, k.phase, next.layer, k.micro)
						continue
					}
					gathers++
					if g > first {
						t.Errorf("rank %d: %s micro-batch %d gathers layer %d at op %d, after layer %d's first op %d", p.Rank, k.phase, k.micro, next.layer, g, k.layer, first)
					}
				}
				if gathers == 0 {
					t.Fatalf("rank %d: no layer prefetched", p.Rank)
				}
				// The layers whose gathered weights are live at each op.
				lt := Lifetimes(p)
				live := make([]map[int]bool, len(p.Ops))
				for i, buf := range p.Buffers {
					if buf.Kind != KindGathered || buf.Param == nil || buf.Param.Layer < 0 || lt[i][0] < 0 {
						continue
					}
					for op := lt[i][0]; op <= lt[i][1]; op++ {
						if live[op] == nil {
							live[op] = map[int]bool{}
						}
						live[op][buf.Param.Layer] = true
					}
				}
				most := 0
				for op, ls := range live {
					if len(ls) > 2 {
						t.Errorf("rank %d: op %d (%s) has %d layers' gathered weights live: %v", p.Rank, op, p.Ops[op].Kind, len(ls), ls)
					}
					most = max(most, len(ls))
				}
				if p.LayerCount > 1 && most != 2 {
					t.Errorf("rank %d: at most %d layers' gathered weights live; want 2 (current + prefetch)", p.Rank, most)
				}
			}
		})
	}
}
