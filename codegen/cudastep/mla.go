package cudastep

import (
	_ "embed"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
)

// mlaSource is kernels_mla.cu: the kernels of latent attention's inference ops (the split
// of kv_a_proj_with_mqa's rows, the heads' assembly with rotary positions on the rope
// features at each row's position, each row's attention over its sequence's per-head
// caches or a prefill's prompt), which the feeding program serve runs (step.LowerFeed) and
// the prefill and decoding steps generate runs (mla_decode.go) launch, and of its training
// (the attention keeping its weights and the backward ops, mla_train.go).
//
//go:embed kernels_mla.cu
var mlaSource string

// MLAKernels is every __global__ function of kernels_mla.cu with its parameters' C types in
// order (TestKernelTablesMatchSources holds the two together).
func MLAKernels() []Kernel {
	P, I, N, F := PtrF32, PtrI32, I32, F32
	return append([]Kernel{
		{"mla_split", []ParamKind{P, P, P, N, N, N}},
		{"mla_heads", []ParamKind{P, P, P, I, P, P, P, P, N, N, N, N, N, N, N}},
		{"mla_attention_rows", []ParamKind{P, P, P, I, I, P, N, N, N, N, N, F, N, N}},
	}, mlaTrainKernels()...) // mla_train.go
}

// mlaWarps is mla_attention_rows's warps per block (MLA_WARPS) and mlaMaxWidth the widest
// query/key or value head it takes (MLA_MAX_WIDTH).
const (
	mlaWarps    = 4
	mlaMaxWidth = 256
)

// mlaRopeWork is mla_heads's rotary tables of the rope features: cos [max_len, rope/2]
// then sin, filled when the host program opens.
const mlaRopeWork = "mla_rope"

// isMLAOp reports whether op is one of latent attention's ops mlaOp lowers: the latents'
// norms, the split, the heads, a feed's attention, the prefill's and decoding step's
// caches and attention (mla_decode.go), and training's attention and backward ops
// (mla_train.go).
func isMLAOp(op *step.Op) bool {
	switch op.Kind {
	case step.OpLatentNorm, step.OpMLASplit, step.OpMLAHeads, step.OpMLAAttnRows:
		return true
	}
	return isMLADecodeOp(op) || isMLATrainOp(op)
}

// mlaOp lowers one of the ops isMLAOp names (runtime/exec's kernels_mla.go and
// kernels_feed_mla.go compute the same).
func (lw *opLowerer) mlaOp(op *step.Op) ([]Launch, error) {
	if isMLADecodeOp(op) {
		return lw.mlaDecodeOp(op) // mla_decode.go
	}
	if isMLATrainOp(op) {
		return lw.mlaTrainOp(op) // mla_train.go
	}
	in, out := op.In, op.Out
	md := step.MLADims{Nope: int(lw.m.Attention.QKNopeHeadDim), Rope: int(lw.m.Attention.QKRopeHeadDim), V: int(lw.m.Attention.VHeadDim)}
	qk := md.Nope + md.Rope
	switch op.Kind {
	case step.OpLatentNorm: // an RMSNorm with DeepSeek's epsilon: dense_norm's
		d := int(lw.n(in[1]))
		rows := int(lw.n(in[0])) / d
		return []Launch{densePerRow("dense_norm", rows, lw.buf(in[0]), lw.buf(in[1]), NullArg(PtrF32), lw.buf(out[0]), lw.buf(out[1]),
			int32Arg(rows), int32Arg(d), FloatArg(float32(step.LatentNormEps)), boolArg(false))}, nil
	case step.OpMLASplit:
		rows := lw.shape(in[0])[0]
		rank := int(lw.n(out[0])) / rows
		return []Launch{denseElementwise("mla_split", lw.n(in[0]), lw.buf(in[0]), lw.buf(out[0]), lw.buf(out[1]),
			int32Arg(rows), int32Arg(rank), int32Arg(md.Rope))}, nil
	case step.OpMLAHeads:
		rows := int(lw.n(in[2])) / md.Rope
		H := int(lw.n(in[0])) / (rows * qk)
		tab, positions := NullArg(PtrF32), 0
		if lw.m.Position == program.Rotary {
			var err error
			if tab, positions, err = lw.mlaRope(md.Rope); err != nil {
				return nil, err
			}
		}
		pos := NullArg(PtrI32) // a prefill's: row t at position t % T
		if len(in) > 3 {
			pos = lw.ints(in[3]) // at each row's position
		}
		return []Launch{denseElementwise("mla_heads", int64(rows*H*(md.Nope+md.Rope/2+md.V)), lw.buf(in[0]), lw.buf(in[1]), lw.buf(in[2]),
			pos, tab, lw.buf(out[0]), lw.buf(out[1]), lw.buf(out[2]),
			int32Arg(rows), int32Arg(H), int32Arg(md.Nope), int32Arg(md.Rope), int32Arg(md.V), int32Arg(lw.p.Batch.SeqLen), int32Arg(positions))}, nil
	default: // mla_attn_rows: the queries, the caches, the positions, the rows' sequences
		return lw.mlaAttentionRows(op, in[0], in[1], in[2], lw.ints(in[3]), lw.ints(in[4]), int(lw.n(in[3])), lw.shape(in[1])[1])
	}
}

// mlaRope is mla_heads's rotary tables of rope features, as many positions as the caches
// hold (or a sequence, in a program without caches), filled when the host program opens.
func (lw *opLowerer) mlaRope(rope int) (Arg, int, error) {
	positions := lw.p.Batch.SeqLen
	for _, b := range lw.p.Buffers {
		if b.Kind == step.KindCache && len(b.Shape) == 3 {
			positions = max(positions, b.Shape[1])
		}
	}
	if _, ok := lw.out.Ropes[mlaRopeWork]; !ok {
		lw.out.Ropes[mlaRopeWork] = ropeFill(lw.m, rope, positions)
	}
	return WorkArg(PtrF32, mlaRopeWork, int64(lw.out.Ropes[mlaRopeWork].Floats())*4), positions, nil
}
