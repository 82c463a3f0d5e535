package cudastep

import (
	"fmt"

	"github.com/moec-dev/moec/compiler/step"
)

// Latent attention in the prefill and decoding-step programs (step.LowerPrefill,
// step.LowerDecode: `moec generate --device`). Their heads are the feed's (mla_heads; the
// prefill's at each row's place in its prompt, row t at position t % T), their caches the
// other attentions' (decode_kv_write, decode_kv_append: each cache at its own width, the
// keys qk_nope+qk_rope features a head, the values v_head_dim), and their attention
// mla_attention_rows: a decoding step's one row per sequence at its position, and the
// prefill's causal attention with the prompt's own keys and values as the caches (T
// positions), row t of sequence t / T at position t % T. The prefill's mla_attention runs
// fused instead (flash_mla_fwd, flash_mla.go: no window or chunk, heads of at most 192/128
// features), its rows' log-sum-exp to a scratch workspace nothing reads. The op also
// writes the attention weights for a backward; an inference program has none, and where
// something reads them (training) mla_train.go lowers it.

// isMLADecodeOp reports whether op is one of latent attention's prefill or decoding-step
// ops mlaDecodeOp lowers.
func isMLADecodeOp(op *step.Op) bool {
	switch op.Kind {
	case step.OpMLAKVWrite, step.OpMLAKVAppend, step.OpMLAAttnDecode, step.OpMLAAttention:
		return true
	}
	return false
}

// mlaDecodeOp lowers one of the ops isMLADecodeOp names (runtime/exec's kernels_mla.go
// computes the same).
func (lw *opLowerer) mlaDecodeOp(op *step.Op) ([]Launch, error) {
	switch op.Kind {
	case step.OpMLAKVWrite, step.OpMLAKVAppend: // the other attentions' cache writes, at each cache's width
		plain := *op
		plain.Kind = step.OpKVWrite
		if op.Kind == step.OpMLAKVAppend {
			plain.Kind = step.OpKVAppend
		}
		return lw.decodeOp(&plain)
	case step.OpMLAAttnDecode: // the queries, the caches, the positions
		return lw.mlaAttentionRows(op, op.In[0], op.In[1], op.In[2], lw.ints(op.In[3]), NullArg(PtrI32), int(lw.n(op.In[3])), lw.shape(op.In[1])[1])
	default: // mla_attention: the queries, keys and values of every prompt position
		if lw.readerOf(op.Out[1]) >= 0 { // training: a backward reads the weights (mla_train.go)
			return lw.mlaAttentionTrain(op)
		}
		if ls, err := lw.mlaFlashInference(op); ls != nil || err != nil {
			return ls, err
		}
		T := lw.p.Batch.SeqLen
		rows := lw.p.Batch.MicroBatch * T
		return lw.mlaAttentionRows(op, op.In[0], op.In[1], op.In[2], NullArg(PtrI32), NullArg(PtrI32), rows, T)
	}
}

// mlaAttentionRows is one mla_attention_rows launch for op, a block per (row, head): rows
// queries q against the caches kc and vc of maxLen positions, at the positions pos and of
// the sequences seq (null pos: row r at position r % maxLen of sequence r / maxLen).
func (lw *opLowerer) mlaAttentionRows(op *step.Op, q, kc, vc int, pos, seq Arg, rows, maxLen int) ([]Launch, error) {
	md := step.MLADims{Nope: int(lw.m.Attention.QKNopeHeadDim), Rope: int(lw.m.Attention.QKRopeHeadDim), V: int(lw.m.Attention.VHeadDim)}
	qk := md.Nope + md.Rope
	if qk > mlaMaxWidth || md.V > mlaMaxWidth {
		return nil, fmt.Errorf("heads of %d query/key and %d value features: the latent attention kernel takes at most %d", qk, md.V, mlaMaxWidth)
	}
	if rows < 1 || lw.n(q)%int64(rows*qk) != 0 {
		return nil, fmt.Errorf("%s holds %d values: not %d rows of heads of %d", lw.p.Buffers[q].Name, lw.n(q), rows, qk)
	}
	H := int(lw.n(q)) / (rows * qk)
	return []Launch{{Kernel: "mla_attention_rows", Grid: [3]int{rows * H, 1, 1}, Block: [3]int{32 * mlaWarps, 1, 1},
		Args: []Arg{lw.buf(q), lw.buf(kc), lw.buf(vc), pos, seq, lw.buf(op.Out[0]),
			int32Arg(rows), int32Arg(H), int32Arg(qk), int32Arg(md.V), int32Arg(maxLen), FloatArg(float32(lw.m.LatentSoftmaxScale())),
			int32Arg(op.Mask.Window), int32Arg(op.Mask.Chunk)}}}, nil
}

// readerOf is the first op that reads buffer b, or −1.
func (lw *opLowerer) readerOf(b int) int {
	for i, op := range lw.p.Ops {
		for _, in := range op.In {
			if in == b {
				return i
			}
		}
	}
	return -1
}
