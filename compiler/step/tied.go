package step

import (
	"github.com/moec-dev/moec/compiler/params"
)

// Tied embeddings under pipeline parallelism, as Megatron-Core keeps them: the first
// stage holds the token embedding and the last stage a copy of it for the head (holds,
// lower.go). Both copies start equal (every rank loads the same tensor), each stage's
// backward writes its own copy's gradient (the embedding's rows, the head's product),
// and before the update the two gradients are summed over the embedding group (the axis
// "embed": the first and the last stage of the same data- and tensor-parallel
// coordinates), so that both copies take the same update and stay equal. The global
// gradient norm counts the table once, on the first stage (MirrorsEmbedding).

// tiedEmbedding is the shared table's identity.
func tiedEmbedding() params.ID { return params.ID{Role: params.RoleEmbed, Layer: -1, Expert: -1} }

// embeddingGroup lists c's embedding group: the first and the last pipeline stage at c's
// other coordinates when c is one of them and the layout has several stages, else c alone.
func embeddingGroup(l Layout, c Coord) []Coord {
	if l.PP < 2 || c.PP != 0 && c.PP != l.PP-1 {
		return []Coord{c}
	}
	first, last := c, c
	first.PP, last.PP = 0, l.PP-1
	return []Coord{first, last}
}

// reduceTiedEmbedding emits, with tie_embeddings under pp, the all-reduce of the shared
// table's gradient between the first and the last stage, before the data-parallel
// reduction (both are sums, so their order does not change the result).
func (lw *lowerer) reduceTiedEmbedding() {
	if !lw.m.TieEmbeddings || lw.l.PP < 2 || lw.c.PP != 0 && lw.c.PP != lw.l.PP-1 {
		return
	}
	g, ok := lw.grad[tiedEmbedding()]
	if !ok {
		return
	}
	bytes := lw.p.Buffers[g].Bytes()
	lw.emit(Op{Kind: OpAllReduce, Phase: Reduce, Layer: -1, In: []int{g}, Out: []int{g}, Group: "embed",
		Attr: "sum: the tied embedding's gradients from the first stage (embedding) and the last (head)", Bytes: bytes})
}

// MirrorsEmbedding reports whether id is, on p's rank, the last stage's copy of a tied
// embedding: its gradient equals the first stage's after the embedding group's
// all-reduce, and the global gradient norm counts it on the first stage only.
func (p *Program) MirrorsEmbedding(id params.ID) bool {
	id.Shard = params.Shard{}
	return id == tiedEmbedding() && p.Layout.PP > 1 && p.Coord.PP == p.Layout.PP-1
}
