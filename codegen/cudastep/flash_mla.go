package cudastep

import (
	"fmt"

	"github.com/moec-dev/moec/compiler/step"
)

// Fused latent attention (kernels_flash.cu's flash_mla_* kernels): FlashAttention-2's
// causal forward and backward (flash.go) with the query/key width qk = qk_nope + qk_rope
// apart from the value width v_head_dim, and one key/value head per query head. Training's
// mla_attention and mla_attention_bwd run them (mla_train.go) instead of the warp-per-row
// kernels that write the attention weights p ([B, H, T, T]) and read them back with the
// scores' gradient (a second [B, H, T, T] workspace): the forward saves each row's
// log-sum-exp, the backward recomputes P from q, k and it.

// flashMLATiles lists latent attention's (query/key, value) widths, narrowest first: the
// first both widths fit runs. deepseek_tiny's 24/16 takes the 32/32 pair, DeepSeek-V3's
// 192/128 its own (tiles halved to stay within 48 KiB of shared memory).
func flashMLATiles() []flashTile {
	return []flashTile{
		{MaxD: 32, MaxV: 32, BR: 64, BC: 64, BK: 64, BQ: 32},
		{MaxD: 64, MaxV: 64, BR: 64, BC: 32, BK: 32, BQ: 32},
		{MaxD: 128, MaxV: 128, BR: 64, BC: 16, BK: 32, BQ: 8},
		{MaxD: 192, MaxV: 128, BR: 32, BC: 16, BK: 16, BQ: 8},
	}
}

func (t flashTile) mlaName(dir string) string {
	return fmt.Sprintf("flash_mla_%s_q%d_v%d", dir, t.MaxD, t.MaxV)
}

// flashMLAKernels is kernels_flash.cu's latent-attention kernels with their parameters' C
// types in order.
func flashMLAKernels() []Kernel {
	P, N, F := PtrF32, I32, F32
	ks := []Kernel{{Name: "flash_mla_bwd_prep", Params: []ParamKind{P, P, P, P, N, N, N, N, N, N}}}
	for _, t := range flashMLATiles() {
		ks = append(ks,
			Kernel{Name: t.mlaName("fwd"), Params: []ParamKind{P, P, P, P, P, P, N, N, N, N, F}},
			Kernel{Name: t.mlaName("bwd"), Params: []ParamKind{P, P, P, P, P, P, P, P, P, N, N, N, N, F, N, N}})
	}
	return ks
}

// MLAFlashShape is the size of one fused latent attention: Batch sequences of SeqLen
// tokens, Heads heads of QK query/key and V value features.
type MLAFlashShape struct {
	Batch, SeqLen, Heads, QK, V int
}

// tile is the kernel pair that runs s, or an error saying why none does.
func (s MLAFlashShape) tile() (flashTile, error) {
	if s.Batch <= 0 || s.SeqLen <= 0 || s.Heads <= 0 || s.QK <= 0 || s.V <= 0 {
		return flashTile{}, fmt.Errorf("fused latent attention: batch %d, sequence %d, heads %d and widths %d/%d must all be positive",
			s.Batch, s.SeqLen, s.Heads, s.QK, s.V)
	}
	if s.Heads > flashMaxGrid || s.Batch > flashMaxGrid {
		return flashTile{}, fmt.Errorf("fused latent attention: %d heads × %d sequences exceed the grid's %d per dimension", s.Heads, s.Batch, flashMaxGrid)
	}
	if rows := int64(s.Batch) * int64(s.SeqLen) * int64(s.Heads); rows > 1<<31-1 {
		return flashTile{}, fmt.Errorf("fused latent attention: %d (token, head) rows exceed an int", rows)
	}
	for _, t := range flashMLATiles() {
		if s.QK <= t.MaxD && s.V <= t.MaxV {
			return t, nil
		}
	}
	return flashTile{}, fmt.Errorf("fused latent attention: heads of %d query/key and %d value features are over the kernels' widest, 192/128", s.QK, s.V)
}

// StatBytes is the size of a [B, H, T] float row statistic: the LSE or D.
func (s MLAFlashShape) StatBytes() int64 {
	return 4 * int64(s.Batch) * int64(s.Heads) * int64(s.SeqLen)
}

// OutBytes is the size of the attention output ([B·T, H·V] floats).
func (s MLAFlashShape) OutBytes() int64 {
	return 4 * int64(s.Batch) * int64(s.SeqLen) * int64(s.Heads) * int64(s.V)
}

// MLAFlashForward is the forward's launch: o = softmax(causal(scale·q·kᵀ))·v per head and
// lse the rows' log-sum-exp (StatBytes); keep is o itself or a second copy of the output
// for the backward.
func MLAFlashForward(s MLAFlashShape, scale float32, q, k, v, o, keep, lse Arg) ([]Launch, error) {
	t, err := s.tile()
	if err != nil {
		return nil, err
	}
	if err := flashCheckPointers("latent forward", q, k, v, o, keep, lse); err != nil {
		return nil, err
	}
	return []Launch{{
		Kernel: t.mlaName("fwd"),
		Grid:   [3]int{flashCeilDiv(s.SeqLen, t.BR), s.Heads, s.Batch},
		Block:  [3]int{flashThreads, 1, 1},
		Shared: t.forwardShared(),
		Args: []Arg{q, k, v, o, keep, lse, IntArg(I32, int64(s.SeqLen)), IntArg(I32, int64(s.Heads)), IntArg(I32, int64(s.QK)),
			IntArg(I32, int64(s.V)), FloatArg(scale)},
	}}, nil
}

// MLAFlashBackward is the backward's two launches: D = rowsum(dO ⊙ O) and dq's clearing
// (unless AccQ), then dq (added with atomics), dk and dv (each written, or added with its
// Acc flag).
func MLAFlashBackward(s MLAFlashShape, scale float32, g FlashGrads) ([]Launch, error) {
	t, err := s.tile()
	if err != nil {
		return nil, err
	}
	if err := flashCheckPointers("latent backward", g.Q, g.K, g.V, g.O, g.LSE, g.DO, g.DQ, g.DK, g.DV, g.Delta); err != nil {
		return nil, err
	}
	rows := s.Batch * s.SeqLen * s.Heads
	T, H, QK, V := IntArg(I32, int64(s.SeqLen)), IntArg(I32, int64(s.Heads)), IntArg(I32, int64(s.QK)), IntArg(I32, int64(s.V))
	return []Launch{
		{
			Kernel: "flash_mla_bwd_prep",
			Grid:   [3]int{flashCeilDiv(rows, flashThreads/32), 1, 1},
			Block:  [3]int{flashThreads, 1, 1},
			Args:   []Arg{g.O, g.DO, g.Delta, g.DQ, IntArg(I32, int64(rows)), T, H, QK, V, flashFlag(g.AccQ)},
		},
		{
			Kernel: t.mlaName("bwd"),
			Grid:   [3]int{flashCeilDiv(s.SeqLen, t.BK), s.Heads, s.Batch},
			Block:  [3]int{flashThreads, 1, 1},
			Shared: t.backwardShared(),
			Args: []Arg{g.Q, g.K, g.V, g.DO, g.LSE, g.Delta, g.DQ, g.DK, g.DV, T, H, QK, V, FloatArg(scale),
				flashFlag(g.AccK), flashFlag(g.AccV)},
		},
	}, nil
}

// mlaFlashPlan is how a training attention runs fused: its shape, the weights buffer
// whose forward and backward ops the fused launches replace, and whether the forward keeps
// a copy of the output for the backward.
type mlaFlashPlan struct {
	shape MLAFlashShape
	p     int  // the weights buffer
	keepO bool // another op writes the output's memory between the forward and the backward
	out   int  // the forward's output
}

// lse, keep and delta are the plan's workspaces: the rows' log-sum-exp and the output's
// copy, named by the weights buffer that pairs the forward with its backward, and D,
// which every backward shares with standard attention's.
func (f *mlaFlashPlan) lse() Arg {
	return WorkArg(PtrF32, fmt.Sprintf("flash_mla_lse.b%d", f.p), f.shape.StatBytes())
}

func (f *mlaFlashPlan) keep() Arg {
	return WorkArg(PtrF32, fmt.Sprintf("flash_mla_keep.b%d", f.p), f.shape.OutBytes())
}

func (f *mlaFlashPlan) delta() Arg { return WorkArg(PtrF32, "flash_delta", f.shape.StatBytes()) }

// mlaFlash is the fused plan of the training attention whose weights are buffer p, or
// nil where the warp-per-row kernels run it instead: a sliding window or chunk (the fused
// kernels attend to the whole causal prefix), heads wider than the kernels', or an op
// other than mla_attention (which writes p) and mla_attention_bwd (which reads it as its
// weights) touching p. The weights buffer stays in the program (the memory plan, made for
// the unfused ops, still reserves it), but no fused launch reads or writes it.
func (lw *opLowerer) mlaFlash(p int) (*mlaFlashPlan, error) {
	fwd, bwd := -1, -1
	for i, op := range lw.p.Ops {
		for j, in := range op.In {
			if in != p {
				continue
			}
			if op.Kind != step.OpMLAAttnBwd || j != 4 || bwd >= 0 {
				return nil, nil
			}
			bwd = i
		}
		for j, out := range op.Out {
			if out != p {
				continue
			}
			if op.Kind != step.OpMLAAttention || j != 1 {
				return nil, nil
			}
			if bwd < 0 {
				fwd = i // the last forward before the backward (a recompute's)
			}
		}
	}
	if fwd < 0 || bwd < 0 {
		return nil, nil
	}
	f, b := &lw.p.Ops[fwd], &lw.p.Ops[bwd]
	if f.Mask.Window > 0 || f.Mask.Chunk > 0 || b.Mask != f.Mask {
		return nil, nil
	}
	B, H, T, qk, vd, err := lw.mlaAttnShape(f.In[0])
	if err != nil {
		return nil, err
	}
	plan := &mlaFlashPlan{shape: MLAFlashShape{Batch: B, SeqLen: T, Heads: H, QK: qk, V: vd}, p: p, out: f.Out[0]}
	if _, err := plan.shape.tile(); err != nil {
		return nil, nil // too wide for the fused kernels: the warp-per-row kernels take it
	}
	// The unfused backward does not read the output: the memory plan may put another buffer
	// in its memory before the backward, the backward's own gradients included.
	for i := fwd + 1; i <= bwd && !plan.keepO; i++ {
		for _, o := range lw.p.Ops[i].Out {
			plan.keepO = plan.keepO || flashOverlap(lw.p, o, plan.out)
		}
	}
	return plan, nil
}

// mlaFlashLSEScratch is the log-sum-exp rows of a fused attention without a backward (a
// prefill's, full recompute's first forward): written, never read.
const mlaFlashLSEScratch = "flash_mla_lse"

// mlaFlashInference is the fused forward of an mla_attention whose weights nothing reads
// (a prefill's causal attention over its prompt, or full recompute's first forward), or
// no launches where the row kernel takes it instead: a sliding window or chunk, or heads
// wider than the fused kernels'.
func (lw *opLowerer) mlaFlashInference(op *step.Op) ([]Launch, error) {
	if op.Mask.Window > 0 || op.Mask.Chunk > 0 {
		return nil, nil
	}
	B, H, T, qk, vd, err := lw.mlaAttnShape(op.In[0])
	if err != nil {
		return nil, err
	}
	s := MLAFlashShape{Batch: B, SeqLen: T, Heads: H, QK: qk, V: vd}
	if _, err := s.tile(); err != nil {
		return nil, nil
	}
	o := lw.buf(op.Out[0])
	return MLAFlashForward(s, float32(lw.m.LatentSoftmaxScale()), lw.buf(op.In[0]), lw.buf(op.In[1]), lw.buf(op.In[2]), o, o,
		WorkArg(PtrF32, mlaFlashLSEScratch, s.StatBytes()))
}
