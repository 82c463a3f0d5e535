package step

import (
	"strings"
	"testing"

	"github.com/moec-dev/moec/compiler/features/featuretest"
	"github.com/moec-dev/moec/compiler/params"
	"github.com/moec-dev/moec/compiler/program"
)

// TestTiedEmbeddingGroup: with tie_embeddings under pp, only the first and the last stage
// hold the shared table, each all-reduces its gradient over the embedding group (those two
// stages) once before the update, the middle stages take no part, and the layout's
// collectives match (VerifyLayout); the last stage's copy is the one the global norm skips.
func TestTiedEmbeddingGroup(t *testing.T) {
	m := featuretest.Base()
	m.TieEmbeddings, m.Layers = true, 3 // a middle stage too
	d, err := m.Dims()
	if err != nil {
		t.Fatal(err)
	}
	l := Layout{DP: 2, EP: 1, TP: 1, PP: d.L}
	progs, err := Lower(m, Batch{MicroBatch: 1, SeqLen: 8, Micro: d.L}, l)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyLayout(progs); err != nil {
		t.Fatal(err)
	}
	embed := params.ID{Role: params.RoleEmbed, Layer: -1, Expert: -1}
	for _, p := range progs {
		ends := p.Coord.PP == 0 || p.Coord.PP == l.PP-1
		reduces := 0
		for _, op := range p.Ops {
			if op.Group == "embed" {
				reduces++
				if op.Kind != OpAllReduce || op.Phase != Reduce || !strings.Contains(p.Buffers[op.In[0]].Name, "embed") {
					t.Errorf("rank %d: %s %s over the embedding group", p.Rank, op.Phase, op.Kind)
				}
			}
		}
		if want := map[bool]int{true: 1, false: 0}[ends]; reduces != want {
			t.Errorf("rank %d (stage %d): %d all-reduces over the embedding group, want %d", p.Rank, p.Coord.PP, reduces, want)
		}
		if got, want := p.MirrorsEmbedding(embed), p.Coord.PP == l.PP-1; got != want {
			t.Errorf("rank %d (stage %d): MirrorsEmbedding %v", p.Rank, p.Coord.PP, got)
		}
		for _, c := range embeddingGroup(l, p.Coord) {
			if c.DP != p.Coord.DP || c.TP != p.Coord.TP {
				t.Errorf("rank %d: embedding group member %+v at other coordinates", p.Rank, c)
			}
		}
	}
}

// TestWholeProjectionNormUnderTP: qk_norm = full under tp splits the scales with the heads
// and all-reduces each norm's statistics over tp in the forward (sums of squares) and the
// backward (Σ g ⊙ x̂); the scales' gradients are the rank's own (no reduction).
func TestWholeProjectionNormUnderTP(t *testing.T) {
	m := featuretest.Base()
	m.Attention.QKNorm, m.Attention.QKNormFull = true, true
	d, err := m.Dims()
	if err != nil {
		t.Fatal(err)
	}
	progs, err := Lower(m, Batch{MicroBatch: 1, SeqLen: 8, Micro: 1}, Layout{DP: 1, EP: 1, TP: 2, PP: 1, Recompute: program.RecomputeFull})
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyLayout(progs); err != nil {
		t.Fatal(err)
	}
	p := progs[0]
	norms := 2 * d.L
	count := map[OpKind]int{}
	for i, op := range p.Ops {
		count[op.Kind]++
		switch {
		case op.Kind == OpQKNormSumSq:
			if n := p.Ops[i+1]; n.Kind != OpAllReduce || n.Group != "tp" || n.In[0] != op.Out[0] {
				t.Errorf("op %d: qk_norm_sumsq not followed by its all-reduce over tp", i)
			}
		case op.Kind == OpQKNormBwdDot:
			if n := p.Ops[i+1]; n.Kind != OpAllReduce || n.Group != "tp" || n.In[0] != op.Out[0] {
				t.Errorf("op %d: qk_norm_bwd_dot not followed by its all-reduce over tp", i)
			}
		case op.Kind == OpQKNorm && len(op.In) != 3, op.Kind == OpQKNormBwd && len(op.In) != 5:
			t.Errorf("op %d: %s without the all-reduced statistics", i, op.Kind)
		case op.Kind == OpAllReduce && op.Phase == Reduce && strings.Contains(op.Attr, "q/k norms"):
			t.Errorf("op %d: the split scales' gradients are all-reduced", i)
		}
	}
	// recompute = full runs each layer's forward twice: its sums of squares too.
	if count[OpQKNormSumSq] != 2*norms || count[OpQKNormBwdDot] != norms {
		t.Errorf("%d qk_norm_sumsq and %d qk_norm_bwd_dot, want %d and %d", count[OpQKNormSumSq], count[OpQKNormBwdDot], 2*norms, norms)
	}
	for _, b := range p.Buffers {
		if b.Kind == KindParam && b.Param != nil && (b.Param.Role == params.RoleQNorm || b.Param.Role == params.RoleKNorm) && b.Param.Shard.Count != 2 {
			t.Errorf("%s is not split over tp (%+v)", b.Name, b.Param.Shard)
		}
	}
}

// TestRouterTableGroup: with router = token_embedding under pp, every stage with an MoE
// layer holds a copy of the router table, reads the micro-batch's token ids and looks up
// its own rows; each all-reduces its copy's gradient once over the router group (the
// routing stages at its other coordinates) before the update; stages without an MoE layer
// hold nothing; only the first routing stage's copy counts toward the global norm.
func TestRouterTableGroup(t *testing.T) {
	cases := []struct {
		name       string
		firstDense int
		pp         int
		routing    []int // the stages that hold the table
	}{
		{"pp2 every layer", 0, 2, []int{0, 1}},
		{"pp4 first two dense", 2, 4, []int{2, 3}},
		{"pp2 one routing stage", 2, 2, []int{1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := featuretest.Base()
			m.Layers = 4
			m.MoE.Router, m.MoE.RouterDim, m.MoE.FirstDense = program.RouteTokenEmbedding, 8, c.firstDense
			l := Layout{DP: 2, EP: 1, TP: 1, PP: c.pp}
			progs, err := Lower(m, Batch{MicroBatch: 1, SeqLen: 8, Micro: c.pp}, l)
			if err != nil {
				t.Fatal(err)
			}
			if err := VerifyLayout(progs); err != nil {
				t.Fatal(err)
			}
			table := params.ID{Role: params.RoleRouterEmbed, Layer: -1, Expert: -1}
			for _, p := range progs {
				routes := false
				for _, s := range c.routing {
					routes = routes || s == p.Coord.PP
				}
				held, lookups, inputs, reduces := false, 0, 0, 0
				for _, b := range p.Buffers {
					if b.Kind == KindParam && b.Param != nil && *b.Param == table {
						held = true
					}
					if b.Kind == KindInput && strings.HasPrefix(b.Name, "tokens@") {
						inputs++
					}
				}
				for _, op := range p.Ops {
					if op.Kind == OpEmbed && op.Attr == "router table" {
						lookups++
					}
					if op.Group == "route" {
						reduces++
						if op.Kind != OpAllReduce || op.Phase != Reduce || !strings.Contains(p.Buffers[op.In[0]].Name, "router_embed") {
							t.Errorf("rank %d: %s %s over the router group", p.Rank, op.Phase, op.Kind)
						}
					}
				}
				wantLookups, wantInputs, wantReduces := 0, 0, 0
				if routes {
					wantLookups, wantInputs = c.pp, c.pp
					if len(c.routing) > 1 {
						wantReduces = 1
					}
				}
				if p.Coord.PP == 0 {
					wantInputs = c.pp // the embedding reads them
				}
				if held != routes || lookups != wantLookups || inputs != wantInputs || reduces != wantReduces {
					t.Errorf("rank %d (stage %d): holds the table %v, %d lookups, %d token inputs, %d all-reduces over the router group; want %v, %d, %d, %d",
						p.Rank, p.Coord.PP, held, lookups, inputs, reduces, routes, wantLookups, wantInputs, wantReduces)
				}
				if got, want := p.MirrorsRouterTable(table), routes && p.Coord.PP != c.routing[0]; got != want {
					t.Errorf("rank %d (stage %d): MirrorsRouterTable %v", p.Rank, p.Coord.PP, got)
				}
				group := routerGroup(p.Layout, p.Coord)
				if routes && len(group) != len(c.routing) || !routes && len(group) != 1 {
					t.Errorf("rank %d (stage %d): router group of %d", p.Rank, p.Coord.PP, len(group))
				}
				for _, g := range group {
					if g.DP != p.Coord.DP || g.TP != p.Coord.TP {
						t.Errorf("rank %d: router group member %+v at other coordinates", p.Rank, g)
					}
				}
			}
		})
	}
}
