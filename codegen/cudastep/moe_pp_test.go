package cudastep

import (
	"fmt"
	"strings"
	"testing"

	"github.com/moec-dev/moec/compiler/params"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
)

// pipelineMoEModel is hunyuanTiny (eight experts, d_model 48) with four layers, so that
// each of two pipeline stages holds an MoE layer (layers 1 and 3), its attention weights
// not shared (compiler/step refuses attention-weight sharing under pipeline parallelism)
// and its router reading the hidden state (TestPipelineTokenRoutingLowering holds the
// token-embedding router table).
func pipelineMoEModel(t *testing.T) *program.Model {
	m := hunyuanTiny(t)
	m.Layers = 4
	m.Attention.ShareWeights = 1
	m.MoE.Router = program.RouteHidden
	return m
}

// TestPipelineMoELowering: an MoE stage under pipeline parallelism (pp 2, and dp 2 × ep 2
// × pp 2) lowers on every rank: each stage's routes, dispatches, grouped products and
// combines become kernels_moe.cu's launches, and the stages' sends and receives stay
// Megatron's 1F1B meetings (every rank's NCCL groups run to the end under blocking
// semantics, the members of each communicator meet group for group, the steady state's
// crossing send and receive grouped, nothing else), with the MoE layer's launches of a
// micro-batch between the message before it and the message that carries its result on.
func TestPipelineMoELowering(t *testing.T) {
	m := pipelineMoEModel(t)
	for _, c := range []struct {
		layout step.Layout
		micro  int
	}{
		{step.Layout{DP: 1, EP: 1, TP: 1, PP: 2}, 1},
		{step.Layout{DP: 1, EP: 1, TP: 1, PP: 2}, 2},
		{step.Layout{DP: 1, EP: 1, TP: 1, PP: 2}, 4},
		{step.Layout{DP: 2, EP: 2, TP: 1, PP: 2}, 2},
	} {
		l := c.layout
		lows := lowerAll(t, m, step.Batch{MicroBatch: 1, SeqLen: 16, Micro: c.micro}, l)
		groups := ncclGroups(t, lows)
		if err := rendezvous(groups); err != nil {
			t.Errorf("%s, %d micro-batches: %v", l, c.micro, err)
		}
		checkMeetings(t, groups)
		grouped := 0 // a send with a receive in its group (the ep all-to-alls are groups too)
		for _, low := range lows {
			for i, ol := range low.Ops {
				if c := ol.Collective; low.Program.Ops[i].Kind == step.OpSend && c != nil && len(c.Calls) > 1 {
					grouped++
				}
			}
		}
		if want := 2 * max(0, c.micro-1) * l.DP; grouped != want {
			t.Errorf("%s, %d micro-batches: %d groups of a send and a receive, want %d", l, c.micro, grouped, want)
		}
		for _, low := range lows {
			checkStageMoE(t, low, c.micro)
		}
	}
}

// checkStageMoE holds one stage's lowering: its MoE layer's ops are kernels_moe.cu's
// launches, every micro-batch routes once forward and once backward, and each send of a
// micro-batch's activations (gradients) follows that micro-batch's route (route_bwd)
// after the stage's previous message.
func checkStageMoE(t *testing.T, low *Lowered, micro int) {
	t.Helper()
	p := low.Program
	name := func() string { return fmt.Sprintf("%s rank %d", p.Layout, p.Rank) }
	routes := map[step.Phase]map[int]int{step.Forward: {}, step.Backward: {}}
	lastMessage := -1
	for i := range p.Ops {
		op := &p.Ops[i]
		switch {
		case op.Kind == step.OpRouter || op.Kind == step.OpRouterBwd:
			ls := low.Ops[i].Launches
			if len(ls) == 0 || !strings.HasPrefix(ls[0].Kernel, "moe_route") {
				t.Errorf("%s: op %d (%s %s, micro-batch %d) lowered to %v, want kernels_moe.cu's routing", name(), i, op.Phase, op.Kind, op.Micro, ls)
			}
			if !op.Recomputed {
				routes[op.Phase][op.Micro]++
			}
		case moeKind(op.Kind):
			ls := low.Ops[i].Launches
			if len(ls) == 0 || !strings.HasPrefix(ls[len(ls)-1].Kernel, "moe_") {
				t.Errorf("%s: op %d (%s %s) lowered to %v, want a kernels_moe.cu launch", name(), i, op.Phase, op.Kind, ls)
			}
		case op.Kind == step.OpSend:
			found := false
			for j := lastMessage + 1; j < i; j++ {
				o := &p.Ops[j]
				if o.Micro == op.Micro && (op.Phase == step.Forward && o.Kind == step.OpRouter || op.Phase == step.Backward && o.Kind == step.OpRouterBwd) {
					found = true
				}
			}
			if !found {
				t.Errorf("%s: op %d (%s send of micro-batch %d): no %s route of that micro-batch since the previous message (op %d)", name(), i, op.Phase, op.Micro, op.Phase, lastMessage)
			}
		}
		if op.Kind.PointToPoint() {
			lastMessage = i
		}
	}
	for _, ph := range []step.Phase{step.Forward, step.Backward} {
		for mb := 0; mb < micro; mb++ {
			if routes[ph][mb] != 1 {
				t.Errorf("%s: micro-batch %d routes %d times %s, want once (one MoE layer a stage)", name(), mb, routes[ph][mb], ph)
			}
		}
	}
}

// TestPipelineTokenRoutingLowering: with the token-embedding router under pipeline
// parallelism (pp 2, and dp 2 × ep 2 × pp 2) both stages hold a copy of the router table
// and look up its rows from the micro-batch's token ids; each rank lowers its all-reduce
// of the table's gradient over the router group to one ncclAllReduce of the table on the
// stages' communicator, the ranks' NCCL groups still meet, and only the first stage's copy
// is summed into the global norm (the executor's rule: step.Program.Mirrors).
func TestPipelineTokenRoutingLowering(t *testing.T) {
	m := pipelineMoEModel(t)
	m.MoE.Router = program.RouteTokenEmbedding
	for _, l := range []step.Layout{{DP: 1, EP: 1, TP: 1, PP: 2}, {DP: 2, EP: 2, TP: 1, PP: 2}} {
		lows := lowerAll(t, m, step.Batch{MicroBatch: 1, SeqLen: 16, Micro: 2}, l)
		groups := ncclGroups(t, lows)
		if err := rendezvous(groups); err != nil {
			t.Errorf("%s: %v", l, err)
		}
		checkMeetings(t, groups)
		for _, low := range lows {
			p := low.Program
			checkStageMoE(t, low, 2)
			lookups, reduces := 0, 0
			for i, op := range p.Ops {
				switch {
				case op.Kind == step.OpEmbed && op.Attr == "router table":
					lookups++
				case op.Group == "route":
					reduces++
					c := low.Ops[i].Collective
					if c == nil || len(c.Calls) != 1 || c.Calls[0].Func != "ncclAllReduce" || c.Calls[0].Count != p.Buffers[op.In[0]].Elements() {
						t.Errorf("%s rank %d: the router table's all-reduce lowered to %+v", l, p.Rank, c)
					}
				}
			}
			if lookups != 2 || reduces != 1 {
				t.Errorf("%s rank %d: %d router-table lookups and %d all-reduces over the router group, want 2 and 1", l, p.Rank, lookups, reduces)
			}
			pieces, err := (&opLowerer{p: p}).pieces()
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, pc := range pieces {
				id := p.Buffers[pc.grad].Param
				if id == nil || id.Role != params.RoleRouterEmbed {
					continue
				}
				found = true
				lw := &opLowerer{p: p}
				if got, want := lw.mirroredElsewhere(pc), p.Coord.PP == 1; got != want {
					t.Errorf("%s rank %d: the router table left out of the norm: %v, want %v", l, p.Rank, got, want)
				}
			}
			if !found {
				t.Errorf("%s rank %d: no optimizer piece of the router table", l, p.Rank)
			}
		}
	}
}

// TestPipelineSharedWeightsLowering: attention-weight sharing under pipeline parallelism
// sends each stage's last attention weights right after its activations (their gradient
// right after the activations' gradient); where a stage's sends cross the receives after
// them, the whole run of sends and the run of receives are one NCCL group on both
// stages, so the ranks' groups still meet under blocking semantics (pp 2 with one to four
// micro-batches, pp 4, and the token-embedding router beside it).
func TestPipelineSharedWeightsLowering(t *testing.T) {
	for _, c := range []struct {
		layers, pp, micro int
		tokenRouting      bool
	}{{4, 2, 1, false}, {4, 2, 2, false}, {4, 2, 4, true}, {4, 4, 3, false}, {4, 4, 6, true}} {
		m := pipelineMoEModel(t)
		m.Layers = c.layers
		m.Attention.ShareWeights = 0.5
		if c.tokenRouting {
			m.MoE.Router = program.RouteTokenEmbedding
		}
		l := step.Layout{DP: 1, EP: 1, TP: 1, PP: c.pp}
		lows := lowerAll(t, m, step.Batch{MicroBatch: 1, SeqLen: 16, Micro: c.micro}, l)
		groups := ncclGroups(t, lows)
		if err := rendezvous(groups); err != nil {
			t.Errorf("%s, %d micro-batches: %v", l, c.micro, err)
		}
		checkMeetings(t, groups)
		weights, grouped := 0, 0
		for _, low := range lows {
			for i, op := range low.Program.Ops {
				if op.Kind.PointToPoint() && strings.HasPrefix(op.Attr, "attention weights") {
					weights++
					if cc := low.Ops[i].Collective; cc != nil && (cc.Joined || len(cc.Calls) > 1) {
						grouped++
					}
				}
			}
		}
		if want := 4 * (c.pp - 1) * c.micro; weights != want {
			t.Errorf("%s, %d micro-batches: %d sends and receives of attention weights, want %d", l, c.micro, weights, want)
		}
		if c.micro > 1 && grouped == 0 {
			t.Errorf("%s, %d micro-batches: no message of attention weights in a group: the case does not reach the pairing", l, c.micro)
		}
	}
}
