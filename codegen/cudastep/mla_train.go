package cudastep

// Latent attention's training on the CUDA path: the attention that keeps its weights for
// its backward (mla_attention where mla_attention_bwd reads them) and the backward ops
// mla_attention_bwd, mla_heads_bwd and mla_split_bwd, lowered to kernels_mla.cu's
// training kernels (the latents' norms' backward is dense norm_bwd's). Semantics are
// runtime/exec's kernels_mla.go.

import (
	"fmt"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
)

// mlaTrainKernels are the training kernels of kernels_mla.cu with their parameters' C
// types in order.
func mlaTrainKernels() []Kernel {
	P, N, F := PtrF32, I32, F32
	return []Kernel{
		{"mla_attention_train", []ParamKind{P, P, P, P, P, N, N, N, N, N, F, N, N}},
		{"mla_attention_bwd_q", []ParamKind{P, P, P, P, P, P, P, N, N, N, N, N, F, N, N, N}},
		{"mla_attention_bwd_kv", []ParamKind{P, P, P, P, P, P, N, N, N, N, N, F, N, N}},
		{"mla_split_bwd", []ParamKind{P, P, P, N, N, N, N}},
		{"mla_heads_bwd", []ParamKind{P, P, P, P, P, P, N, N, N, N, N, N, N, N, N}},
		{"mla_heads_bwd_pe", []ParamKind{P, P, P, N, N, N, N, N, N, N}},
	}
}

// mlaScoresGradWork is the scores' gradient of a latent attention's backward ([B, H, T, T],
// mla_attention_bwd_q writes it, mla_attention_bwd_kv reads it).
const mlaScoresGradWork = "mla_scores_grad"

// isMLATrainOp reports whether op is a backward op of latent attention mlaTrainOp lowers.
func isMLATrainOp(op *step.Op) bool {
	switch op.Kind {
	case step.OpMLAAttnBwd, step.OpMLAHeadsBwd, step.OpMLASplitBwd:
		return true
	}
	return false
}

// mlaAttnShape is a training attention's sizes: B sequences of T rows, H heads of qk
// query/key and vd value features; q is the queries' buffer.
func (lw *opLowerer) mlaAttnShape(q int) (B, H, T, qk, vd int, err error) {
	md := step.MLADims{Nope: int(lw.m.Attention.QKNopeHeadDim), Rope: int(lw.m.Attention.QKRopeHeadDim), V: int(lw.m.Attention.VHeadDim)}
	B, T, qk, vd = lw.p.Batch.MicroBatch, lw.p.Batch.SeqLen, md.Nope+md.Rope, md.V
	if B < 1 || T < 1 || qk < 1 || lw.n(q)%int64(B*T*qk) != 0 {
		return 0, 0, 0, 0, 0, fmt.Errorf("%s holds %d values: not %d×%d rows of heads of %d", lw.p.Buffers[q].Name, lw.n(q), B, T, qk)
	}
	return B, int(lw.n(q)) / (B * T * qk), T, qk, vd, nil
}

// mlaAttentionTrain lowers mla_attention whose weights a backward reads: fused
// (flash_mla.go: the output and each row's log-sum-exp, no weights) where mlaFlash plans
// it, else the weights and the output, a warp per (sequence, head, row).
func (lw *opLowerer) mlaAttentionTrain(op *step.Op) ([]Launch, error) {
	fused, err := lw.mlaFlash(op.Out[1])
	if err != nil {
		return nil, err
	}
	if fused != nil {
		o := lw.buf(op.Out[0])
		keep := o
		if fused.keepO {
			keep = fused.keep()
		}
		return MLAFlashForward(fused.shape, float32(lw.m.LatentSoftmaxScale()), lw.buf(op.In[0]), lw.buf(op.In[1]), lw.buf(op.In[2]), o, keep, fused.lse())
	}
	B, H, T, qk, vd, err := lw.mlaAttnShape(op.In[0])
	if err != nil {
		return nil, err
	}
	if lw.n(op.Out[1]) != int64(B*H*T*T) {
		return nil, fmt.Errorf("weights %s of %d values, want %d×%d×%d×%d", lw.p.Buffers[op.Out[1]].Name, lw.n(op.Out[1]), B, H, T, T)
	}
	return []Launch{mlaRowsLaunch("mla_attention_train", B*H*T, lw.buf(op.In[0]), lw.buf(op.In[1]), lw.buf(op.In[2]), lw.buf(op.Out[0]), lw.buf(op.Out[1]),
		int32Arg(B), int32Arg(H), int32Arg(T), int32Arg(qk), int32Arg(vd), FloatArg(float32(lw.m.LatentSoftmaxScale())),
		int32Arg(op.Mask.Window), int32Arg(op.Mask.Chunk))}, nil
}

// mlaRowsLaunch is a launch of a warp-per-row attention kernel over rows (MLA_WARPS rows a
// block).
func mlaRowsLaunch(kernel string, rows int, args ...Arg) Launch {
	return Launch{Kernel: kernel, Grid: [3]int{max(ceilDiv(rows, mlaWarps), 1), 1, 1}, Block: [3]int{32 * mlaWarps, 1, 1}, Args: args}
}

// mlaTrainOp lowers an op isMLATrainOp names.
func (lw *opLowerer) mlaTrainOp(op *step.Op) ([]Launch, error) {
	in, out, acc := op.In, op.Out, op.Accumulates
	md := step.MLADims{Nope: int(lw.m.Attention.QKNopeHeadDim), Rope: int(lw.m.Attention.QKRopeHeadDim), V: int(lw.m.Attention.VHeadDim)}
	switch op.Kind {
	case step.OpMLAAttnBwd: // do, q, k, v, p → dq, dk, dv
		fused, err := lw.mlaFlash(in[4])
		if err != nil {
			return nil, err
		}
		if fused != nil { // P recomputed from q, k and the forward's log-sum-exp
			lw.out.FusedAttention++
			o := lw.buf(fused.out)
			if fused.keepO {
				o = fused.keep()
			}
			return MLAFlashBackward(fused.shape, float32(lw.m.LatentSoftmaxScale()), FlashGrads{Q: lw.buf(in[1]), K: lw.buf(in[2]), V: lw.buf(in[3]),
				O: o, LSE: fused.lse(), DO: lw.buf(in[0]), DQ: lw.buf(out[0]), DK: lw.buf(out[1]), DV: lw.buf(out[2]), Delta: fused.delta(),
				AccQ: acc(0), AccK: acc(1), AccV: acc(2)})
		}
		B, H, T, qk, vd, err := lw.mlaAttnShape(in[1])
		if err != nil {
			return nil, err
		}
		scale := FloatArg(float32(lw.m.LatentSoftmaxScale()))
		ds := WorkArg(PtrF32, mlaScoresGradWork, int64(B*H*T*T)*4)
		rows := B * H * T
		return []Launch{
			mlaRowsLaunch("mla_attention_bwd_q", rows, lw.buf(in[0]), lw.buf(in[1]), lw.buf(in[2]), lw.buf(in[3]), lw.buf(in[4]), ds, lw.buf(out[0]),
				int32Arg(B), int32Arg(H), int32Arg(T), int32Arg(qk), int32Arg(vd), scale, int32Arg(op.Mask.Window), int32Arg(op.Mask.Chunk), boolArg(acc(0))),
			mlaRowsLaunch("mla_attention_bwd_kv", rows, lw.buf(in[0]), lw.buf(in[1]), lw.buf(in[4]), ds, lw.buf(out[1]), lw.buf(out[2]),
				int32Arg(B), int32Arg(H), int32Arg(T), int32Arg(qk), int32Arg(vd), scale, boolArg(acc(1)), boolArg(acc(2))),
		}, nil
	case step.OpMLASplitBwd: // dlat, dkpe → dkva
		rows := lw.shape(out[0])[0]
		rank := int(lw.n(in[0])) / rows
		return []Launch{denseElementwise("mla_split_bwd", lw.n(out[0]), lw.buf(in[0]), lw.buf(in[1]), lw.buf(out[0]),
			int32Arg(rows), int32Arg(rank), int32Arg(md.Rope), boolArg(acc(0)))}, nil
	default: // mla_heads_bwd: dqh, dkh, dvh → dq, dkv_b, dk_pe
		rows := int(lw.n(out[2])) / md.Rope
		qk := md.Nope + md.Rope
		H := int(lw.n(in[0])) / (rows * qk)
		tab, positions := NullArg(PtrF32), 0
		if lw.m.Position == program.Rotary {
			var err error
			if tab, positions, err = lw.mlaRope(md.Rope); err != nil {
				return nil, err
			}
		}
		T := lw.p.Batch.SeqLen
		return []Launch{
			denseElementwise("mla_heads_bwd", int64(rows*H*(md.Nope+md.Rope/2+md.V)), lw.buf(in[0]), lw.buf(in[1]), lw.buf(in[2]), tab,
				lw.buf(out[0]), lw.buf(out[1]), int32Arg(rows), int32Arg(H), int32Arg(md.Nope), int32Arg(md.Rope), int32Arg(md.V),
				int32Arg(T), int32Arg(positions), boolArg(acc(0)), boolArg(acc(1))),
			denseElementwise("mla_heads_bwd_pe", int64(rows*md.Rope/2), lw.buf(in[1]), tab, lw.buf(out[2]), int32Arg(rows), int32Arg(H),
				int32Arg(md.Nope), int32Arg(md.Rope), int32Arg(T), int32Arg(positions), boolArg(acc(2))),
		}, nil
	}
}
