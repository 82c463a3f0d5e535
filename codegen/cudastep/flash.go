package cudastep

import (
	_ "embed"
	"fmt"
	"math"
)

// Fused attention (kernels_flash.cu): FlashAttention-2's causal forward and backward over
// the step program's query, key, value and attention-output buffers, in fp32, without the
// [B, H, T, T] scores, weights and their gradients.
//
// Forward (one launch, flash_fwd_dN): one block per (64 query rows, head, sequence); the
// keys and values up to the tile's last query stream through shared memory in tiles, the
// softmax is online (a running maximum and sum per row, the output rescaled as the maximum
// grows), and the block writes the output rows and each row's log-sum-exp of the scaled
// scores (LSE: [B, H, T] floats, which the backward reads).
//
// Backward (two launches): flash_bwd_prep computes D = rowsum(dO ⊙ O) per row (a warp per
// (token, head)) and clears dq unless dq is added to; flash_bwd_dN runs one block per (key
// tile, key/value head, sequence), which recomputes P from Q, K and the LSE for every
// query tile at or after its keys and every query head of its group, accumulates dK and dV
// in registers and writes them once (so grouped-query heads need no atomics), and adds the
// tile's share of dQ into dq with float atomics. Atomics rather than a second pass over
// the query tiles: a second pass recomputes Q·Kᵀ and dO·Vᵀ again (two of the backward's
// five products, about 40% more work) and needs its own query tiles of Q and dO beside K
// and V, which at head_dim 128 does not fit the 48 KiB a kernel gets without opting in; the
// cost is that dq's sums run in no fixed order (run-to-run differences in the last bits,
// as in FlashAttention-2), while o, lse, dk and dv are deterministic.
//
// Feature widths: one kernel pair per MAXD ∈ {16, 32, 64, 128}, the smallest at least the
// head_dim (features past head_dim are zeros in shared memory), so head_dim 1..128.

//go:embed kernels_flash.cu
var flashSource string

// FlashSource is the text of kernels_flash.cu.
func FlashSource() string { return flashSource }

// flashThreads is every flash kernel's block size (FLASH_THREADS).
const flashThreads = 128

// flashTile is one feature width's kernels and tiles: forward query × key tile rows
// (BR × BC), backward key × query tile rows (BK × BQ), as kernels_flash.cu instantiates.
type flashTile struct {
	MaxD, BR, BC, BK, BQ int
}

// flashTiles lists the feature widths, narrowest first.
func flashTiles() []flashTile {
	return []flashTile{
		{MaxD: 16, BR: 64, BC: 64, BK: 64, BQ: 32},
		{MaxD: 32, BR: 64, BC: 64, BK: 64, BQ: 32},
		{MaxD: 64, BR: 64, BC: 32, BK: 32, BQ: 32},
		{MaxD: 128, BR: 64, BC: 16, BK: 32, BQ: 8},
	}
}

// forwardShared is the forward's shared bytes: Q [BR][MaxD+1], a K-then-V tile
// [BC][MaxD+1] and P [BR][BC+1], floats. It does not depend on the sequence length.
func (t flashTile) forwardShared() int {
	return 4 * (t.BR*(t.MaxD+1) + t.BC*(t.MaxD+1) + t.BR*(t.BC+1))
}

// backwardShared is the backward's: K and V [BK][MaxD+1], Q and dO [BQ][MaxD+1], Pᵀ and
// dSᵀ [BK][BQ+1], the query rows' LSE and D [BQ].
func (t flashTile) backwardShared() int {
	return 4 * (2*t.BK*(t.MaxD+1) + 2*t.BQ*(t.MaxD+1) + 2*t.BK*(t.BQ+1) + 2*t.BQ)
}

// FlashKernels is kernels_flash.cu's kernel table.
func FlashKernels() []Kernel {
	ks := []Kernel{{Name: "flash_bwd_prep", Params: []ParamKind{PtrF32, PtrF32, PtrF32, PtrF32, I32, I32, I32, I32, I32}}}
	for _, t := range flashTiles() {
		ks = append(ks,
			Kernel{Name: fmt.Sprintf("flash_fwd_d%d", t.MaxD),
				Params: []ParamKind{PtrF32, PtrF32, PtrF32, PtrF32, PtrF32, I32, I32, I32, I32, F32}},
			Kernel{Name: fmt.Sprintf("flash_bwd_d%d", t.MaxD),
				Params: []ParamKind{PtrF32, PtrF32, PtrF32, PtrF32, PtrF32, PtrF32, PtrF32, PtrF32, PtrF32, I32, I32, I32, I32, F32, I32, I32}})
	}
	return ks
}

// FlashShape is the size of one fused attention: Batch sequences of SeqLen tokens, Heads
// query heads (the rank's: under tensor parallelism its share) over KVHeads key/value
// heads, HeadDim features per head.
type FlashShape struct {
	Batch, SeqLen, Heads, KVHeads, HeadDim int
}

// flashMaxGrid is the largest grid y or z a launch may have.
const flashMaxGrid = 65535

func (s FlashShape) check() (flashTile, error) {
	if s.Batch <= 0 || s.SeqLen <= 0 || s.Heads <= 0 || s.KVHeads <= 0 || s.HeadDim <= 0 {
		return flashTile{}, fmt.Errorf("fused attention: batch %d, sequence %d, heads %d, kv heads %d and head_dim %d must all be positive",
			s.Batch, s.SeqLen, s.Heads, s.KVHeads, s.HeadDim)
	}
	if s.Heads%s.KVHeads != 0 {
		return flashTile{}, fmt.Errorf("fused attention: %d kv heads do not divide %d heads", s.KVHeads, s.Heads)
	}
	if s.Heads > flashMaxGrid || s.Batch > flashMaxGrid {
		return flashTile{}, fmt.Errorf("fused attention: %d heads × %d sequences exceed the grid's %d per dimension", s.Heads, s.Batch, flashMaxGrid)
	}
	if rows := int64(s.Batch) * int64(s.SeqLen) * int64(s.Heads); rows > 1<<31-1 {
		return flashTile{}, fmt.Errorf("fused attention: %d (token, head) rows exceed an int", rows)
	}
	for _, t := range flashTiles() {
		if s.HeadDim <= t.MaxD {
			return t, nil
		}
	}
	return flashTile{}, fmt.Errorf("fused attention: head_dim %d is over the kernels' 128", s.HeadDim)
}

// Scale is the scores' factor 1/√head_dim, in float32 as runtime/exec computes it.
func (s FlashShape) Scale() float32 { return flashScale(s.HeadDim) }

// StatBytes is the size of a [B, H, T] float row statistic: the LSE or D.
func (s FlashShape) StatBytes() int64 {
	return 4 * int64(s.Batch) * int64(s.Heads) * int64(s.SeqLen)
}

// FlashLSE is the workspace holding the log-sum-exp rows of layer's attention in
// micro-batch micro, from its forward to its backward: named per layer and micro-batch so
// that other layers' and micro-batches' launches leave it alone.
func FlashLSE(s FlashShape, layer, micro int) Arg {
	return WorkArg(PtrF32, fmt.Sprintf("flash_lse.L%d.m%d", layer, micro), s.StatBytes())
}

// FlashDelta is the backward's D = rowsum(dO ⊙ O) workspace: written by its first launch
// and read by its second, so every layer's backward shares it.
func FlashDelta(s FlashShape) Arg { return WorkArg(PtrF32, "flash_delta", s.StatBytes()) }

func flashCeilDiv(a, b int) int { return (a + b - 1) / b }

func flashCheckPointers(what string, args ...Arg) error {
	for _, a := range args {
		if a.Kind != PtrF32 {
			return fmt.Errorf("fused attention: %s: an argument of kind %s, want float*", what, a.Kind.CType())
		}
	}
	return nil
}

// FlashForward is the forward's launch: o = softmax(causal(q·kᵀ/√Dh))·v per head, and lse
// the rows' log-sum-exp. q and o are [Batch·SeqLen, Heads·HeadDim] floats, k and v
// [Batch·SeqLen, KVHeads·HeadDim]; lse holds StatBytes (FlashLSE).
func FlashForward(s FlashShape, q, k, v, o, lse Arg) ([]Launch, error) {
	t, err := s.check()
	if err != nil {
		return nil, err
	}
	if err := flashCheckPointers("forward", q, k, v, o, lse); err != nil {
		return nil, err
	}
	return []Launch{{
		Kernel: fmt.Sprintf("flash_fwd_d%d", t.MaxD),
		Grid:   [3]int{flashCeilDiv(s.SeqLen, t.BR), s.Heads, s.Batch},
		Block:  [3]int{flashThreads, 1, 1},
		Shared: t.forwardShared(),
		Args: []Arg{q, k, v, o, lse, IntArg(I32, int64(s.SeqLen)), IntArg(I32, int64(s.Heads)), IntArg(I32, int64(s.KVHeads)),
			IntArg(I32, int64(s.HeadDim)), FloatArg(s.Scale())},
	}}, nil
}

// FlashGrads are the backward's buffers: the forward's q, k, v, o and lse, the output's
// gradient do, and the gradients dq, dk and dv, each written or, with its Acc flag, added
// to (a gradient that already holds another contribution). Delta is D's workspace
// (FlashDelta).
type FlashGrads struct {
	Q, K, V, O, LSE, DO, DQ, DK, DV, Delta Arg
	AccQ, AccK, AccV                       bool
}

func flashFlag(b bool) Arg {
	if b {
		return IntArg(I32, 1)
	}
	return IntArg(I32, 0)
}

// FlashBackward is the backward's two launches: D and dq's clearing, then dq, dk and dv.
func FlashBackward(s FlashShape, g FlashGrads) ([]Launch, error) {
	t, err := s.check()
	if err != nil {
		return nil, err
	}
	if err := flashCheckPointers("backward", g.Q, g.K, g.V, g.O, g.LSE, g.DO, g.DQ, g.DK, g.DV, g.Delta); err != nil {
		return nil, err
	}
	rows := s.Batch * s.SeqLen * s.Heads
	T, H, KV, Dh := IntArg(I32, int64(s.SeqLen)), IntArg(I32, int64(s.Heads)), IntArg(I32, int64(s.KVHeads)), IntArg(I32, int64(s.HeadDim))
	return []Launch{
		{
			Kernel: "flash_bwd_prep",
			Grid:   [3]int{flashCeilDiv(rows, flashThreads/32), 1, 1},
			Block:  [3]int{flashThreads, 1, 1},
			Args:   []Arg{g.O, g.DO, g.Delta, g.DQ, IntArg(I32, int64(rows)), T, H, Dh, flashFlag(g.AccQ)},
		},
		{
			Kernel: fmt.Sprintf("flash_bwd_d%d", t.MaxD),
			Grid:   [3]int{flashCeilDiv(s.SeqLen, t.BK), s.KVHeads, s.Batch},
			Block:  [3]int{flashThreads, 1, 1},
			Shared: t.backwardShared(),
			Args: []Arg{g.Q, g.K, g.V, g.DO, g.LSE, g.Delta, g.DQ, g.DK, g.DV, T, H, KV, Dh, FloatArg(s.Scale()),
				flashFlag(g.AccK), flashFlag(g.AccV)},
		},
	}, nil
}

// flashScale is 1/√dh in float32, as runtime/exec's attention kernels compute it.
func flashScale(dh int) float32 { return float32(1 / math.Sqrt(float64(dh))) }
