package cudastep

import (
	"reflect"
	"slices"
	"testing"

	"github.com/moec-dev/moec/compiler/params"
	"github.com/moec-dev/moec/compiler/step"
)

// TestMoETensorParallelLowering: hunyuan_tiny's four-expert stage (two layers, without
// talking heads) on tp 2 lowers on both ranks as compiler/step lays out expert tensor
// parallelism: the routing launches the same on both ranks (replicated), the grouped
// products at the rank's half of the expert width over the rank's shards, the experts'
// outputs cleared of padding and all-reduced (one ncclAllReduce of every slot on the tp
// communicator) between the down product and the combine, and the dispatched tokens'
// gradient all-reduced the same way between the first product's backward and permute's
// backward. runtime/gpu's TestEmulatedMoETensorParallelMatchesExecutor runs the steps
// against runtime/exec's ranks (MOEC_LONG_EMULATION=1).
func TestMoETensorParallelLowering(t *testing.T) {
	m := tinyStage(t, 2, 4)
	m.Attention.TalkingHeads = false // tensor parallelism splits the heads
	const tp = 2
	d, err := m.Dims()
	if err != nil {
		t.Fatal(err)
	}
	progs, err := step.Lower(m, step.Batch{MicroBatch: 1, SeqLen: 8, Micro: 1}, step.Layout{DP: 1, EP: 1, TP: tp, PP: 1})
	if err != nil {
		t.Fatal(err)
	}
	var routes [][]Launch
	for _, p := range progs {
		low, err := Lower(p, m)
		if err != nil {
			t.Fatalf("rank %d: %v", p.Rank, err)
		}
		tpComm := -1
		for i, c := range low.Comms {
			if slices.Contains(c.Axes, "tp") {
				tpComm = i
			}
		}
		if tpComm < 0 {
			t.Fatalf("rank %d: no tp communicator among %v", p.Rank, low.Comms)
		}
		writer := map[int]int{} // buffer → the last op writing it
		reduced := map[string]bool{}
		for i := range p.Ops {
			op := &p.Ops[i]
			ls := low.Ops[i].Launches
			switch op.Kind {
			case step.OpRouter:
				routes = append(routes, ls)
			case step.OpGroupedMM, step.OpGroupedMMDX:
				for _, w := range op.In[1:] {
					if s := p.Buffers[w].Shape; len(s) != 2 || (s[0] != d.EHidden/tp && s[1] != d.EHidden/tp) {
						t.Errorf("rank %d: op %d (%s) reads expert weight %s of shape %v, want the rank's %d of the %d hidden units", p.Rank, i, op.Kind, p.Buffers[w].Name, s, d.EHidden/tp, d.EHidden)
					}
					if id := p.Buffers[w].Param; id == nil || id.Shard.Count != tp || id.Shard.Index != p.Coord.TP {
						t.Errorf("rank %d: op %d (%s) reads expert weight %s (%v), want tp rank %d's shard of %d", p.Rank, i, op.Kind, p.Buffers[w].Name, id, p.Coord.TP, tp)
					}
				}
			case step.OpAllReduce:
				if op.Group != "tp" || len(op.In) != 1 {
					break
				}
				b := op.In[0]
				if s := p.Buffers[b].Shape; len(s) != 3 {
					break // a dense row-parallel product's sum
				}
				w := writer[b]
				prod := &p.Ops[w]
				var role params.Role
				if id := p.Buffers[prod.In[len(prod.In)-1]].Param; id != nil {
					role = id.Role
				}
				what := ""
				switch {
				case prod.Kind == step.OpGroupedMM && role == params.RoleExpertDown:
					what = "experts' outputs"
				case prod.Kind == step.OpGroupedMMDX && role == params.RoleExpertIn:
					what = "dispatch gradient"
				default:
					t.Errorf("rank %d: op %d all-reduces %s over tp, written by op %d (%s of %s)", p.Rank, i, p.Buffers[b].Name, w, prod.Kind, role)
					continue
				}
				reduced[what] = true
				c := low.Ops[i].Collective
				want := []NCCLCall{{Func: "ncclAllReduce", Comm: tpComm, Send: p.Buffers[b].Offset, Recv: p.Buffers[b].Offset, Count: p.Buffers[b].Elements(), Description: p.Buffers[b].Name}}
				if c == nil || !reflect.DeepEqual(c.Calls, want) {
					t.Errorf("rank %d: the %s' all-reduce (op %d) lowers to %+v, want %+v", p.Rank, what, i, c, want)
				}
				cleared := false
				for _, l := range low.Ops[w].Launches {
					cleared = cleared || (l.Kernel == "moe_clear_padding" && l.Args[0].Buf == b)
				}
				if !cleared {
					t.Errorf("rank %d: op %d (%s) leaves the padding of %s, which the all-reduce sums", p.Rank, w, prod.Kind, p.Buffers[b].Name)
				}
				// the reader after the sum: the combine forward, permute's backward
				readers := ""
				for j := i + 1; j < len(p.Ops); j++ {
					if slices.Contains(p.Ops[j].In, b) {
						readers = string(p.Ops[j].Kind)
						break
					}
				}
				if readers != string(step.OpCombine) && readers != string(step.OpPermuteBwd) && readers != string(step.OpCombineBwd) {
					t.Errorf("rank %d: the summed %s is next read by %q", p.Rank, what, readers)
				}
			}
			for _, o := range op.Out {
				writer[o] = i
			}
		}
		if !reduced["experts' outputs"] || !reduced["dispatch gradient"] {
			t.Errorf("rank %d: the tp all-reduces of the MoE layer: %v, want the experts' outputs and the dispatch gradient", p.Rank, reduced)
		}
	}
	if len(routes) != tp || !reflect.DeepEqual(routes[0], routes[1]) { // one MoE layer a rank
		t.Errorf("the two tp ranks route differently (%d routes): the routing is replicated", len(routes))
	}
}
