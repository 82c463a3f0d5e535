package step

import (
	"math/bits"

	"github.com/moec-dev/moec/compiler/params"
	"github.com/moec-dev/moec/compiler/program"
)

// Token-embedding routing (router = token_embedding, HunYuan) under pipeline parallelism,
// lowered as tied embeddings are (tied.go): the model has one router table [vocab,
// router_dim] that every MoE layer's router reads by token id, and each pipeline stage
// with an MoE layer holds a copy of it (Layout.RouterStages). Every copy starts equal
// (every rank loads the same tensor); each routing stage reads its micro-batches' token
// ids (an input, as the first stage's), looks up the rows itself and its backward writes
// its own copy's gradient; before the update the copies' gradients are summed over the
// router group (the axis "route": the routing stages at the same data- and
// tensor-parallel coordinates), so every copy takes the same update and stays equal. The
// global gradient norm counts the table once, on the first routing stage
// (MirrorsRouterTable); the assembled checkpoint holds it once (one tensor per
// parameter). With one stage nothing changes: the first stage holds the table.

// MaxRouterStages is the most pipeline stages the router group can name (one bit of
// Layout.RouterStages each); the features table refuses token routing beyond it.
const MaxRouterStages = 64

// routerTable is the token-embedding router table's identity.
func routerTable() params.ID {
	return params.ID{Role: params.RoleRouterEmbed, Layer: -1, Expert: -1}
}

// routerStages is the Layout.RouterStages of m split into pp stages of the d.L layers:
// the stages holding an MoE layer, when m routes on the token-embedding table and pp > 1.
func routerStages(m *program.Model, d program.Dims, pp int) uint64 {
	if pp < 2 || pp > MaxRouterStages || m.MoE == nil || m.MoE.Router != program.RouteTokenEmbedding || d.L%pp != 0 {
		return 0
	}
	var mask uint64
	per := d.L / pp
	for i := range d.L {
		if m.IsMoELayer(i) {
			mask |= 1 << uint(i/per)
		}
	}
	return mask
}

// routesOn reports whether pipeline stage s holds a copy of the router table under l.
func (l Layout) routesOn(s int) bool {
	return s >= 0 && s < MaxRouterStages && l.RouterStages&(1<<uint(s)) != 0
}

// routerGroup lists c's router group: the stages holding a copy of the router table at
// c's other coordinates when c's stage is one of them and there are several, else c alone.
func routerGroup(l Layout, c Coord) []Coord {
	if l.PP < 2 || !l.routesOn(c.PP) || bits.OnesCount64(l.RouterStages) < 2 {
		return []Coord{c}
	}
	var out []Coord
	for s := range l.PP {
		if l.routesOn(s) {
			m := c
			m.PP = s
			out = append(out, m)
		}
	}
	return out
}

// routerGroupSize is the size of the router groups of l (1 when no stage shares the table).
func routerGroupSize(l Layout) int {
	if l.PP < 2 {
		return 1
	}
	return max(bits.OnesCount64(l.RouterStages), 1)
}

// holdsRouterTable reports whether this rank's stage holds a copy of the router table
// (the model has one: an MoE layer routes on it).
func (lw *lowerer) holdsRouterTable() bool {
	if lw.l.PP < 2 {
		return lw.c.PP == 0
	}
	return lw.l.routesOn(lw.c.PP)
}

// routerTableShared reports whether this rank's copy of the router table is summed with
// other stages' copies (its stage is in a router group of more than one).
func (lw *lowerer) routerTableShared() bool {
	return lw.l.PP > 1 && lw.l.routesOn(lw.c.PP) && routerGroupSize(lw.l) > 1 && lw.has(routerTable())
}

// reduceRouterTable emits, under pp, the all-reduce of the router table's gradient over
// the stages that hold a copy, before the data-parallel reduction (both are sums, so
// their order does not change the result).
func (lw *lowerer) reduceRouterTable() {
	if !lw.routerTableShared() {
		return
	}
	g, ok := lw.grad[routerTable()]
	if !ok {
		return
	}
	bytes := lw.p.Buffers[g].Bytes()
	n := int64(routerGroupSize(lw.l))
	lw.emit(Op{Kind: OpAllReduce, Phase: Reduce, Layer: -1, In: []int{g}, Out: []int{g}, Group: "route",
		Attr: "sum: the token-embedding router table's gradients from every stage that routes", Bytes: 2 * bytes * (n - 1) / n})
}

// MirrorsRouterTable reports whether id is, on p's rank, a copy of the token-embedding
// router table that another stage's copy stands for: under pp its gradient equals the
// first routing stage's after the router group's all-reduce, and the global gradient
// norm counts it on that stage only.
func (p *Program) MirrorsRouterTable(id params.ID) bool {
	id.Shard = params.Shard{}
	if id != routerTable() || p.Layout.PP < 2 || !p.Layout.routesOn(p.Coord.PP) {
		return false
	}
	first := bits.TrailingZeros64(p.Layout.RouterStages)
	return p.Coord.PP != first
}

// Mirrors reports whether id is, on p's rank, a copy of a parameter another pipeline
// stage holds too and counts toward the global gradient norm: the last stage's tied
// embedding (MirrorsEmbedding) or a later stage's router table (MirrorsRouterTable).
func (p *Program) Mirrors(id params.ID) bool {
	return p.MirrorsEmbedding(id) || p.MirrorsRouterTable(id)
}
