package step

// Latent attention in the feeding program (LowerFeed). A feed's layer lowers as the
// decoding step's (mlaInfer): every row's heads' keys and values (mla_heads, the rope
// features rotated at the row's own position) join its sequence's per-head caches by
// kv_append_rows, whose rows are as wide as each cache (qk_nope+qk_rope features for the
// keys, v_head_dim for the values), before any row attends; then mla_attn_rows attends
// each row's query to its own sequence's cache up to its position, as mla_attn_decode
// does for one row per sequence. A padding row (sequence −1) writes nothing and reads
// zeros.

// OpMLAAttnRows is the feeding program's latent attention: each row's query against its
// sequence's caches up to its position. In: the queries, the key and value caches, the
// positions, the rows' sequences.
const OpMLAAttnRows OpKind = "mla_attn_rows"

// mlaRowsOp is op (an op of latent attention's decoding step) as the feeding program
// runs it; ok is false for any other op.
func (lw *lowerer) mlaRowsOp(op Op) (Op, bool) {
	switch op.Kind {
	case OpMLAKVAppend:
		op.Kind, op.In = OpKVAppendRows, append(op.In, lw.feed.seq)
	case OpMLAAttnDecode:
		op.Kind, op.In = OpMLAAttnRows, append(op.In, lw.feed.seq)
	default:
		return op, false
	}
	return op, true
}
