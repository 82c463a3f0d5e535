package cudastep

import (
	_ "embed"
	"fmt"

	"github.com/moec-dev/moec/compiler/step"
)

// decodeSource is kernels_decode.cu: the kernels of the inference programs' own ops (the
// KV caches' writes, one query row's attention over its cache, with talking heads too,
// rotary positions at each sequence's position, each prompt's last row, and the feeding
// program's rows of several sequences).
//
//go:embed kernels_decode.cu
var decodeSource string

// DecodeSource is kernels_decode.cu's text.
func DecodeSource() string { return decodeSource }

// DecodeKernels is every __global__ function of kernels_decode.cu with its parameters' C
// types in order (TestKernelTablesMatchSources holds the two together).
func DecodeKernels() []Kernel {
	P, I, N, F := PtrF32, PtrI32, I32, F32
	return []Kernel{
		{"decode_kv_write", []ParamKind{P, P, N, N, N, N}},
		{"decode_kv_append", []ParamKind{P, P, I, N, N, N}},
		{"decode_last_rows", []ParamKind{P, I, P, N, N, N}},
		{"decode_rotary_at", []ParamKind{P, P, I, N, N, N, N}},
		{"decode_kv_append_rows", []ParamKind{P, P, I, I, N, N, N}},
		{"decode_pick_rows", []ParamKind{P, I, P, N, N}},
		{"decode_attention", []ParamKind{P, P, P, I, I, P, P, N, N, N, N, N, F, N, N}},
		{"decode_attention_mixed", []ParamKind{P, P, P, I, I, P, P, P, P, P, N, N, N, N, N, F, N, N}},
	}
}

// decodeWarps is decode_attention's warps per block (DECODE_WARPS) and decodeMaxDh the
// widest head it takes (DECODE_MAX_DH).
const (
	decodeWarps = 4
	decodeMaxDh = 256
)

// decodeRopeWork is the rotary tables of rotary_at: cos [max_len, Dh/2] then sin, filled
// when the host program opens.
const decodeRopeWork = "decode_rope"

// isDecodeOp reports whether op is one of the inference programs' own ops, which
// decodeOp lowers: the caches' writes, rotary positions and attention at each sequence's
// position, each prompt's last row, and the learned positions' rows at those positions.
func isDecodeOp(op *step.Op) bool {
	switch op.Kind {
	case step.OpKVWrite, step.OpKVAppend, step.OpLastRows, step.OpRotaryAt, step.OpAttnDecode,
		step.OpKVAppendRows, step.OpAttnRows, step.OpPickRows:
		return true
	case step.OpEmbed:
		return op.Rows == step.RowsAtPosition
	}
	return false
}

// decodeOp lowers one of the inference ops isDecodeOp names (runtime/exec's decode.go
// computes the same).
func (lw *opLowerer) decodeOp(op *step.Op) ([]Launch, error) {
	in, out := op.In, op.Out
	switch op.Kind {
	case step.OpKVWrite, step.OpKVAppend:
		var ls []Launch
		for i, cache := range out {
			sh := lw.shape(cache) // [sequences, max_len, width]
			if len(sh) != 3 {
				return nil, fmt.Errorf("cache %s has shape %v, want [sequences, positions, width]", lw.p.Buffers[cache].Name, sh)
			}
			B, maxLen, width := sh[0], sh[1], sh[2]
			if op.Kind == step.OpKVAppend {
				pos := in[len(in)-1]
				ls = append(ls, denseElementwise("decode_kv_append", int64(B*width), lw.buf(in[i]), lw.buf(cache), lw.ints(pos),
					int32Arg(B), int32Arg(maxLen), int32Arg(width)))
				continue
			}
			T := lw.p.Batch.SeqLen
			if int64(B*T*width) != lw.n(in[i]) {
				return nil, fmt.Errorf("%s holds %d values, want %d sequences of %d positions of %d", lw.p.Buffers[in[i]].Name, lw.n(in[i]), B, T, width)
			}
			ls = append(ls, denseElementwise("decode_kv_write", int64(B*T*width), lw.buf(in[i]), lw.buf(cache),
				int32Arg(B), int32Arg(T), int32Arg(maxLen), int32Arg(width)))
		}
		return ls, nil
	case step.OpLastRows:
		B := int(lw.n(in[1]))
		width := int(lw.n(out[0])) / B
		return []Launch{denseElementwise("decode_last_rows", int64(B*width), lw.buf(in[0]), lw.ints(in[1]), lw.buf(out[0]),
			int32Arg(B), int32Arg(lw.p.Batch.SeqLen), int32Arg(width))}, nil
	case step.OpRotaryAt:
		pos := in[len(in)-1]
		rows := int(lw.n(pos))
		tab, positions, err := lw.decodeRope()
		if err != nil {
			return nil, err
		}
		var ls []Launch
		for _, b := range out { // the queries, and the keys unless the layer reads its group owner's (share_kv)
			width := int(lw.n(b)) / rows
			ls = append(ls, denseElementwise("decode_rotary_at", int64(rows*width/2), lw.buf(b), tab, lw.ints(pos),
				int32Arg(rows), int32Arg(width), int32Arg(lw.d.Dh), int32Arg(positions)))
		}
		return ls, nil
	case step.OpAttnDecode, step.OpAttnRows:
		return lw.attnDecode(op)
	case step.OpKVAppendRows:
		pos, seq := in[len(in)-2], in[len(in)-1]
		var ls []Launch
		for i, cache := range out {
			sh := lw.shape(cache) // [sequences, max_len, width]
			R := int(lw.n(seq))
			ls = append(ls, denseElementwise("decode_kv_append_rows", int64(R*sh[2]), lw.buf(in[i]), lw.buf(cache), lw.ints(pos), lw.ints(seq),
				int32Arg(R), int32Arg(sh[1]), int32Arg(sh[2])))
		}
		return ls, nil
	case step.OpPickRows:
		S := int(lw.n(in[1]))
		width := int(lw.n(out[0])) / S
		return []Launch{denseElementwise("decode_pick_rows", int64(S*width), lw.buf(in[0]), lw.ints(in[1]), lw.buf(out[0]),
			int32Arg(S), int32Arg(width))}, nil
	default: // the learned positions' rows at each sequence's position
		table, at, x := in[1], in[0], out[0]
		w := lw.shape(table)[1]
		rows, n := int(lw.n(table))/w, int(lw.n(at))
		return []Launch{{Kernel: "dense_embed", Grid: [3]int{n, 1, 1}, Block: [3]int{128, 1, 1},
			Args: []Arg{lw.ints(at), lw.buf(table), lw.buf(x), int32Arg(n), int32Arg(w), int32Arg(rows), int32Arg(0), int32Arg(1), boolArg(false)}}}, nil
	}
}

// attnDecode is one decode_attention launch, a block per (row, head), or with talking
// heads one decode_attention_mixed launch, a block per row.
func (lw *opLowerer) attnDecode(op *step.Op) ([]Launch, error) {
	in := step.AttnInputsOf(op)
	sinks, seq := NullArg(PtrF32), NullArg(PtrI32)
	if in.Sinks >= 0 {
		sinks = lw.buf(in.Sinks)
	}
	if in.Seq >= 0 {
		seq = lw.ints(in.Seq)
	}
	sh := lw.shape(in.KCache) // [sequences, max_len, kv heads · Dh]
	maxLen, kvd := sh[1], sh[2]
	rows := int(lw.n(in.Pos))
	Dh := lw.d.Dh
	H, KV := int(lw.n(in.Q))/(rows*Dh), kvd/Dh
	if KV < 1 || H%KV != 0 {
		return nil, fmt.Errorf("%d query heads over %d key/value heads", H, KV)
	}
	if in.Pre >= 0 {
		work := WorkArg(PtrF32, "decode_mixed_scores", int64(rows)*2*int64(H)*int64(maxLen)*4)
		return []Launch{{Kernel: "decode_attention_mixed", Grid: [3]int{rows, 1, 1}, Block: [3]int{32 * decodeWarps, 1, 1},
			Args: []Arg{lw.buf(in.Q), lw.buf(in.KCache), lw.buf(in.VCache), lw.ints(in.Pos), seq, lw.buf(in.Pre), lw.buf(in.Post), sinks,
				lw.buf(op.Out[0]), work, int32Arg(rows), int32Arg(H), int32Arg(KV), int32Arg(Dh), int32Arg(maxLen), FloatArg(attnScale(Dh)),
				int32Arg(op.Mask.Window), int32Arg(op.Mask.Chunk)}}}, nil
	}
	if Dh > decodeMaxDh || Dh < 1 {
		return nil, fmt.Errorf("heads of %d values: the decoding attention kernel takes at most %d", Dh, decodeMaxDh)
	}
	return []Launch{{Kernel: "decode_attention", Grid: [3]int{rows * H, 1, 1}, Block: [3]int{32 * decodeWarps, 1, 1},
		Args: []Arg{lw.buf(in.Q), lw.buf(in.KCache), lw.buf(in.VCache), lw.ints(in.Pos), seq, sinks, lw.buf(op.Out[0]),
			int32Arg(rows), int32Arg(H), int32Arg(KV), int32Arg(Dh), int32Arg(maxLen), FloatArg(attnScale(Dh)),
			int32Arg(op.Mask.Window), int32Arg(op.Mask.Chunk)}}}, nil
}

// decodeRope is rotary_at's tables, as many positions as the caches hold, filled when the
// host program opens.
func (lw *opLowerer) decodeRope() (Arg, int, error) {
	positions := 0
	for _, b := range lw.p.Buffers {
		if b.Kind == step.KindCache && len(b.Shape) == 3 {
			positions = max(positions, b.Shape[1])
		}
	}
	if positions == 0 {
		return Arg{}, 0, fmt.Errorf("rotary positions at the step's position in a program without KV caches")
	}
	if _, ok := lw.out.Ropes[decodeRopeWork]; !ok {
		lw.out.Ropes[decodeRopeWork] = ropeFill(lw.m, lw.d.Dh, positions)
	}
	return WorkArg(PtrF32, decodeRopeWork, int64(lw.out.Ropes[decodeRopeWork].Floats())*4), positions, nil
}
