package cudastep

import (
	_ "embed"
	"fmt"
	"math"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
)

// Fused attention (kernels_flash.cu): FlashAttention-2's causal forward and backward over
// the step program's query, key, value and attention-output buffers, in fp32, without the
// [B, H, T, T] scores, weights and their gradients.
//
// Forward (one launch, flash_fwd_dN): one block per (64 query rows, head, sequence); the
// keys and values up to the tile's last query stream through shared memory in tiles, the
// softmax is online (a running maximum and sum per row, the output rescaled as the maximum
// grows), and the block writes the output rows and each row's log-sum-exp of the scaled
// scores (LSE: [B, H, T] floats, which the backward reads), and, where the program
// reuses the output's memory before the backward, a copy of the output (FlashKeep).
//
// Backward (two launches): flash_bwd_prep computes D = rowsum(dO ⊙ O) per row (a warp per
// (token, head)) and clears dq unless dq is added to; flash_bwd_dN runs one block per (key
// tile, key/value head, sequence), which recomputes P from Q, K and the LSE for every
// query tile at or after its keys and every query head of its group, accumulates dK and dV
// in registers and writes them once (so grouped-query heads need no atomics), and adds the
// tile's share of dQ into dq with float atomics. Atomics rather than a second pass over
// the query tiles: a second pass recomputes Q·Kᵀ and dO·Vᵀ again (two of the backward's
// five products, about 40% more work), and its Q, dO, K and V tiles would leave it key
// tiles of 8 rows at head_dim 128 within the 48 KiB a kernel gets without opting in; the
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

// flashTile is one feature width's kernels and tiles: the query/key features MaxD and the
// value features MaxV (MaxD's own in standard attention, narrower in latent attention's
// flashMLATiles), forward query × key tile rows (BR × BC), backward key × query tile rows
// (BK × BQ), as kernels_flash.cu instantiates.
type flashTile struct {
	MaxD, MaxV, BR, BC, BK, BQ int
}

// flashTiles lists the feature widths, narrowest first.
func flashTiles() []flashTile {
	return []flashTile{
		{MaxD: 16, MaxV: 16, BR: 64, BC: 64, BK: 64, BQ: 32},
		{MaxD: 32, MaxV: 32, BR: 64, BC: 64, BK: 64, BQ: 32},
		{MaxD: 64, MaxV: 64, BR: 64, BC: 32, BK: 32, BQ: 32},
		{MaxD: 128, MaxV: 128, BR: 64, BC: 16, BK: 32, BQ: 8},
	}
}

// forwardShared is the forward's shared bytes: Q [BR][MaxD+1], a K-then-V tile
// [BC][max(MaxD, MaxV)+1] and P [BR][BC+1], floats. It does not depend on the sequence
// length.
func (t flashTile) forwardShared() int {
	return 4 * (t.BR*(t.MaxD+1) + t.BC*(max(t.MaxD, t.MaxV)+1) + t.BR*(t.BC+1))
}

// backwardShared is the backward's: K [BK][MaxD+1], V [BK][MaxV+1], Q [BQ][MaxD+1], dO
// [BQ][MaxV+1], Pᵀ and dSᵀ [BK][BQ+1], the query rows' LSE and D [BQ].
func (t flashTile) backwardShared() int {
	return 4 * (t.BK*(t.MaxD+t.MaxV+2) + t.BQ*(t.MaxD+t.MaxV+2) + 2*t.BK*(t.BQ+1) + 2*t.BQ)
}

// FlashKernels is kernels_flash.cu's kernel table.
func FlashKernels() []Kernel {
	ks := []Kernel{{Name: "flash_bwd_prep", Params: []ParamKind{PtrF32, PtrF32, PtrF32, PtrF32, I32, I32, I32, I32, I32}}}
	for _, t := range flashTiles() {
		ks = append(ks,
			Kernel{Name: fmt.Sprintf("flash_fwd_d%d", t.MaxD),
				Params: []ParamKind{PtrF32, PtrF32, PtrF32, PtrF32, PtrF32, PtrF32, I32, I32, I32, I32, F32}},
			Kernel{Name: fmt.Sprintf("flash_bwd_d%d", t.MaxD),
				Params: []ParamKind{PtrF32, PtrF32, PtrF32, PtrF32, PtrF32, PtrF32, PtrF32, PtrF32, PtrF32, I32, I32, I32, I32, F32, I32, I32}})
	}
	return append(ks, flashMLAKernels()...) // flash_mla.go
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

// FlashKeep is the workspace holding a copy of layer's attention output in micro-batch
// micro from its forward to its backward, for a program that reuses the output's memory
// in between (the backward's D = rowsum(dO ⊙ O) reads it).
func FlashKeep(s FlashShape, layer, micro int) Arg {
	return WorkArg(PtrF32, fmt.Sprintf("flash_keep.L%d.m%d", layer, micro),
		4*int64(s.Batch)*int64(s.SeqLen)*int64(s.Heads)*int64(s.HeadDim))
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
// [Batch·SeqLen, KVHeads·HeadDim]; lse holds StatBytes (FlashLSE). keep is o itself, or
// where a second copy of the output goes for the backward (FlashKeep) when the program
// reuses o's memory before the backward runs.
func FlashForward(s FlashShape, q, k, v, o, keep, lse Arg) ([]Launch, error) {
	t, err := s.check()
	if err != nil {
		return nil, err
	}
	if err := flashCheckPointers("forward", q, k, v, o, keep, lse); err != nil {
		return nil, err
	}
	return []Launch{{
		Kernel: fmt.Sprintf("flash_fwd_d%d", t.MaxD),
		Grid:   [3]int{flashCeilDiv(s.SeqLen, t.BR), s.Heads, s.Batch},
		Block:  [3]int{flashThreads, 1, 1},
		Shared: t.forwardShared(),
		Args: []Arg{q, k, v, o, keep, lse, IntArg(I32, int64(s.SeqLen)), IntArg(I32, int64(s.Heads)), IntArg(I32, int64(s.KVHeads)),
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

// FlashChain is one layer's attention core in a step program (FindFlashChain): the ops
// the fused launches replace, and the buffers those launches read and write.
type FlashChain struct {
	Layer, Micro int
	Shape        FlashShape
	// Scores, Softmax and AV are every attn_scores, softmax and attn_av op of the chain: the
	// forward's, and the copies a recompute mode runs again in the backward. AVBwd,
	// SoftmaxBwd and ScoresBwd are its backward ops, -1 in a program without a backward.
	Scores, Softmax, AV          []int
	AVBwd, SoftmaxBwd, ScoresBwd int
	Q, K, V, O, DO, DQ, DK, DV   int // buffers; the gradients -1 without a backward
	AccQ, AccK, AccV             bool
	// KeepO says that another op writes the attention output's memory between the last
	// attn_av and attn_av_bwd (a memory plan made for the unfused backward, which does not
	// read the output, may reuse it), so the forward keeps a copy in a workspace
	// (FlashKeep) for the backward's D = rowsum(dO ⊙ O).
	KeepO bool
}

// FindFlashChain finds the attention core that the attn_scores op at index scores of p
// begins and checks that the fused launches may replace it. The fusion is valid when:
//
//   - the layer's attention is plain causal softmax attention: no sliding window, sinks,
//     chunked attention, talking heads or multi-head latent attention, head_dim ≤ 128,
//     fp32 buffers, and the scores op is not one that attention-weight sharing may skip;
//   - nothing but the chain reads the scores, the weights or their gradients: the scores
//     only by softmax, the weights only by attn_av, attn_av_bwd and softmax_bwd (not a
//     head_mix or share_select, nor the next layer's sharing), the weights' gradient only
//     by softmax_bwd, the scores' gradient only by attn_scores_bwd, both of them written
//     (not added to);
//   - the fused backward runs where attn_av_bwd runs, so it writes dq and dk there instead
//     of at attn_scores_bwd: no other op between the two may touch their memory or write
//     q's or k's.
//
// The fused backward also reads the attention output (for D = rowsum(dO ⊙ O)), which the
// unfused backward does not: where the memory plan lets another op overwrite the output
// first, the forward keeps a copy (KeepO). The other chain ops run nothing
// (FlashChain.At), and the scores, weights and their gradients are never touched (the
// memory plan, made for the unfused ops, still reserves them). A chain may be found from
// any of its attn_scores ops (selective recompute's copy too); under full recompute the
// layer's recomputed forward, over recomputed q, k and v, is a chain of its own, and the
// first forward's is one without a backward.
func FindFlashChain(p *step.Program, m *program.Model, scores int) (*FlashChain, error) {
	if scores < 0 || scores >= len(p.Ops) || p.Ops[scores].Kind != step.OpScores {
		return nil, fmt.Errorf("fused attention: op %d is not attn_scores", scores)
	}
	first := p.Ops[scores]
	if len(first.In) != 2 || len(first.Out) != 1 {
		return nil, fmt.Errorf("fused attention: op %d: attn_scores with %d inputs and %d outputs", scores, len(first.In), len(first.Out))
	}
	f := &flashFinder{p: p, c: &FlashChain{Layer: first.Layer, Micro: first.Micro, AVBwd: -1, SoftmaxBwd: -1, ScoresBwd: -1,
		Q: first.In[0], K: first.In[1], V: -1, O: -1, DO: -1, DQ: -1, DK: -1, DV: -1},
		scoresOut: map[int]bool{}, probs: map[int]bool{}, dprobs: -1, dscores: -1}
	c := f.c
	where := fmt.Sprintf("fused attention of layer %d, micro-batch %d", c.Layer, c.Micro)
	if err := flashModelFits(m, c.Layer); err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	for _, find := range []func() error{f.forward, f.backward, f.isolated} {
		if err := find(); err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
	}
	shape, err := flashShapeOf(p, m, c)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	c.Shape = shape
	if c.AVBwd < 0 {
		return c, nil
	}
	if err := f.backwardOrder(); err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	return c, nil
}

// flashFinder is FindFlashChain's state: the chain found so far and the buffers it
// passes along (the scores of q and k, their weights, and the gradients of both).
type flashFinder struct {
	p                *step.Program
	c                *FlashChain
	scoresOut, probs map[int]bool
	dprobs, dscores  int
	chain            map[int]bool // the chain's ops
}

func (f *flashFinder) name(b int) string { return f.p.Buffers[b].Name }

// forward finds the chain's forward ops from the buffers they pass along: the scores of
// q and k (the forward's, and under selective recompute the backward's copy), the weights
// of those scores, their products with v, and the backward op of those products.
func (f *flashFinder) forward() error {
	p, c := f.p, f.c
	for i, op := range p.Ops {
		if op.Kind == step.OpScores && len(op.In) == 2 && op.In[0] == c.Q && op.In[1] == c.K && len(op.Out) == 1 {
			if op.WhenRecompute {
				return fmt.Errorf("attention-weight sharing may use the layer below's weights instead of computing them")
			}
			c.Scores = append(c.Scores, i)
			f.scoresOut[op.Out[0]] = true
		}
	}
	for i, op := range p.Ops {
		if op.Kind == step.OpSoftmax && len(op.In) == 1 && f.scoresOut[op.In[0]] && len(op.Out) == 1 {
			c.Softmax = append(c.Softmax, i)
			f.probs[op.Out[0]] = true
		}
	}
	if len(c.Softmax) == 0 {
		return fmt.Errorf("no softmax reads the scores %s", f.name(p.Ops[c.Scores[0]].Out[0]))
	}
	for i, op := range p.Ops {
		switch {
		case op.Kind == step.OpAttnAV && len(op.In) == 2 && f.probs[op.In[0]] && len(op.Out) == 1:
			if c.V >= 0 && (op.In[1] != c.V || op.Out[0] != c.O) {
				return fmt.Errorf("attn_av ops of the weights read or write other buffers")
			}
			c.V, c.O = op.In[1], op.Out[0]
			c.AV = append(c.AV, i)
		case op.Kind == step.OpAttnAVBwd && len(op.In) == 3 && f.probs[op.In[1]] && len(op.Out) == 2:
			if c.AVBwd >= 0 {
				return fmt.Errorf("two attn_av_bwd ops read the weights")
			}
			c.AVBwd, c.DO, f.dprobs, c.DV = i, op.In[0], op.Out[0], op.Out[1]
			c.AccV = flashAcc(op, 1)
			if flashAcc(op, 0) {
				return fmt.Errorf("attn_av_bwd adds to the weights' gradient %s", f.name(f.dprobs))
			}
		}
	}
	if len(c.AV) == 0 {
		return fmt.Errorf("no attn_av reads the weights")
	}
	if c.AVBwd >= 0 && p.Ops[c.AVBwd].In[2] != c.V {
		return fmt.Errorf("attn_av_bwd reads other values than attn_av")
	}
	return nil
}

// backward finds the chain's softmax_bwd and attn_scores_bwd, where the program has a
// backward.
func (f *flashFinder) backward() error {
	p, c := f.p, f.c
	if c.AVBwd < 0 {
		return nil
	}
	for i, op := range p.Ops {
		if op.Kind == step.OpSoftmaxBwd && len(op.In) == 2 && op.In[0] == f.dprobs && len(op.Out) == 1 {
			if c.SoftmaxBwd >= 0 || !f.probs[op.In[1]] || flashAcc(op, 0) {
				return fmt.Errorf("softmax_bwd op %d is not the chain's one writer of the scores' gradient", i)
			}
			c.SoftmaxBwd, f.dscores = i, op.Out[0]
		}
	}
	if c.SoftmaxBwd < 0 {
		return fmt.Errorf("no softmax_bwd reads the weights' gradient %s", f.name(f.dprobs))
	}
	for i, op := range p.Ops {
		if op.Kind == step.OpScoresBwd && len(op.In) == 3 && op.In[0] == f.dscores && len(op.Out) == 2 {
			if c.ScoresBwd >= 0 || op.In[1] != c.Q || op.In[2] != c.K {
				return fmt.Errorf("attn_scores_bwd op %d is not the chain's one reader of the scores' gradient", i)
			}
			c.ScoresBwd, c.DQ, c.DK = i, op.Out[0], op.Out[1]
			c.AccQ, c.AccK = flashAcc(op, 0), flashAcc(op, 1)
		}
	}
	if c.ScoresBwd < 0 {
		return fmt.Errorf("no attn_scores_bwd reads the scores' gradient %s", f.name(f.dscores))
	}
	return nil
}

// isolated checks that only the chain touches the scores, the weights and their gradients.
func (f *flashFinder) isolated() error {
	c := f.c
	f.chain = map[int]bool{}
	for _, ops := range [][]int{c.Scores, c.Softmax, c.AV, {c.AVBwd, c.SoftmaxBwd, c.ScoresBwd}} {
		for _, i := range ops {
			f.chain[i] = true
		}
	}
	dropped := map[int]bool{f.dprobs: true, f.dscores: true}
	for b := range f.scoresOut {
		dropped[b] = true
	}
	for b := range f.probs {
		dropped[b] = true
	}
	for i, op := range f.p.Ops {
		if f.chain[i] {
			continue
		}
		for _, b := range append(append([]int(nil), op.In...), op.Out...) {
			if dropped[b] {
				return fmt.Errorf("op %d (%s) also uses %s", i, op.Kind, f.name(b))
			}
		}
	}
	return nil
}

// backwardOrder checks that the fused backward may run where attn_av_bwd runs: the
// output is still there for D (else KeepO), and no op between it and attn_scores_bwd
// touches dq's or dk's memory or writes over q or k.
func (f *flashFinder) backwardOrder() error {
	p, c := f.p, f.c
	lastAV := -1
	for _, i := range c.AV {
		if i < c.AVBwd {
			lastAV = max(lastAV, i)
		}
	}
	if lastAV < 0 {
		return fmt.Errorf("attn_av_bwd runs before any attn_av")
	}
	if c.ScoresBwd < c.AVBwd {
		return fmt.Errorf("attn_scores_bwd runs before attn_av_bwd")
	}
	for i := lastAV + 1; i < c.AVBwd && !c.KeepO; i++ {
		if f.chain[i] {
			continue
		}
		for _, b := range p.Ops[i].Out {
			c.KeepO = c.KeepO || flashOverlap(p, b, c.O)
		}
	}
	for i := c.AVBwd + 1; i < c.ScoresBwd; i++ {
		if f.chain[i] {
			continue
		}
		op := p.Ops[i]
		for _, b := range op.In {
			if flashOverlap(p, b, c.DQ) || flashOverlap(p, b, c.DK) {
				return fmt.Errorf("op %d (%s) reads %s, which shares memory with dq or dk, before attn_scores_bwd", i, op.Kind, f.name(b))
			}
		}
		for _, b := range op.Out {
			for _, x := range []int{c.DQ, c.DK, c.Q, c.K} {
				if flashOverlap(p, b, x) {
					return fmt.Errorf("op %d (%s) writes %s over %s before attn_scores_bwd", i, op.Kind, f.name(b), f.name(x))
				}
			}
		}
	}
	return nil
}

// flashGrad is the workspace the fused backward writes the chain's dq or dk into.
func flashGrad(c *FlashChain, what string, b int) Arg {
	elems := c.q()
	if what == "dk" {
		elems = c.kv()
	}
	return WorkArg(PtrF32, fmt.Sprintf("flash_%s.L%d.m%d", what, c.Layer, c.Micro), 4*elems)
}

// q and kv are the elements of the chain's queries and of its keys (or values).
func (c *FlashChain) q() int64 {
	s := c.Shape
	return int64(s.Batch) * int64(s.SeqLen) * int64(s.Heads) * int64(s.HeadDim)
}

func (c *FlashChain) kv() int64 {
	s := c.Shape
	return int64(s.Batch) * int64(s.SeqLen) * int64(s.KVHeads) * int64(s.HeadDim)
}

// flashMove is the launch that brings a fused gradient from its workspace to the program's
// buffer b: copied, or added where the op it stands for adds.
func flashMove(from Arg, b int, acc bool, n int64) Launch {
	kernel := "dense_copy"
	if acc {
		kernel = "dense_accumulate"
	}
	return denseElementwise(kernel, n, BufArg(PtrF32, b), from, IntArg(I64, n))
}

// flashAcc reports whether op adds to its output i.
func flashAcc(op step.Op, i int) bool { return i < len(op.Acc) && op.Acc[i] }

// flashOverlap reports whether buffers a and b are one or share arena memory.
func flashOverlap(p *step.Program, a, b int) bool {
	if a == b {
		return true
	}
	x, y := p.Buffers[a], p.Buffers[b]
	return x.Tier == y.Tier && x.Offset < y.Offset+y.Bytes() && y.Offset < x.Offset+x.Bytes()
}

// flashModelFits refuses the attention features the fused kernels do not compute.
func flashModelFits(m *program.Model, layer int) error {
	a := m.Attention
	switch {
	case a.MLA || a.KVLoraRank > 0:
		return fmt.Errorf("multi-head latent attention has its own ops and fused kernels (flash_mla.go), not this chain")
	case a.TalkingHeads:
		return fmt.Errorf("talking heads mix the heads' score maps, which the fused kernels never hold")
	case a.Sinks:
		return fmt.Errorf("attention sinks are not fused: the kernels' softmax has no sink logit")
	case a.WindowAt(layer) > 0:
		return fmt.Errorf("a sliding window of %d is not fused: the kernels attend to the whole causal prefix", a.WindowAt(layer))
	case a.ChunkSize > 0:
		return fmt.Errorf("chunked attention (chunk %d) is not fused: the kernels attend to the whole causal prefix", a.ChunkSize)
	}
	return nil
}

// flashShapeOf is the chain's shape: the micro-batch's sequences and length, and the heads
// the rank's q and k buffers hold (its tensor-parallel share). Every buffer is a float32
// [tokens, heads·head_dim] matrix over the micro-batch's tokens: q, o and their gradients
// with the query heads, k, v and theirs with the key/value heads.
func flashShapeOf(p *step.Program, m *program.Model, c *FlashChain) (FlashShape, error) {
	d, err := m.Dims()
	if err != nil {
		return FlashShape{}, err
	}
	B, T := p.Batch.MicroBatch, p.Batch.SeqLen
	width := func(b int) (int, error) {
		buf := p.Buffers[b]
		if buf.Elem != 4 || buf.Int {
			return 0, fmt.Errorf("%s is not a float32 buffer", buf.Name)
		}
		if len(buf.Shape) != 2 || buf.Shape[0] != B*T || buf.Shape[1]%d.Dh != 0 {
			return 0, fmt.Errorf("%s is %v, not %d tokens × heads of head_dim %d", buf.Name, buf.Shape, B*T, d.Dh)
		}
		return buf.Shape[1], nil
	}
	heads := map[bool]int{}
	for _, g := range []struct {
		query bool
		bufs  []int
	}{{true, []int{c.Q, c.O, c.DO, c.DQ}}, {false, []int{c.K, c.V, c.DK, c.DV}}} {
		for _, b := range g.bufs {
			if b < 0 {
				continue
			}
			w, err := width(b)
			if err != nil {
				return FlashShape{}, err
			}
			if h, ok := heads[g.query]; ok && h != w/d.Dh {
				return FlashShape{}, fmt.Errorf("%s holds %d heads, not %d", p.Buffers[b].Name, w/d.Dh, h)
			}
			heads[g.query] = w / d.Dh
		}
	}
	s := FlashShape{Batch: B, SeqLen: T, HeadDim: d.Dh, Heads: heads[true], KVHeads: heads[false]}
	if _, err := s.check(); err != nil {
		return FlashShape{}, err
	}
	return s, nil
}

// At is what the host program runs for op i of the program: the fused forward at each
// attn_av op, the fused backward at attn_av_bwd, nothing at the chain's other ops (chain
// true, no launches); chain false for an op outside the chain.
func (c *FlashChain) At(i int) (launches []Launch, chain bool, err error) {
	lse := FlashLSE(c.Shape, c.Layer, c.Micro)
	buf := func(b int) Arg { return BufArg(PtrF32, b) }
	keep := buf(c.O)
	if c.KeepO {
		keep = FlashKeep(c.Shape, c.Layer, c.Micro)
	}
	for _, av := range c.AV {
		if i == av {
			ls, err := FlashForward(c.Shape, buf(c.Q), buf(c.K), buf(c.V), buf(c.O), keep, lse)
			return ls, true, err
		}
	}
	// The fused backward runs where attn_av_bwd runs, but dq and dk belong to
	// attn_scores_bwd: the memory plan may let another buffer live in their memory until
	// then. They go to workspaces, written (not added to), and reach dq and dk at
	// attn_scores_bwd, copied or added as that op would have written them.
	dq, dk := flashGrad(c, "dq", c.DQ), flashGrad(c, "dk", c.DK)
	if i >= 0 && i == c.AVBwd {
		ls, err := FlashBackward(c.Shape, FlashGrads{Q: buf(c.Q), K: buf(c.K), V: buf(c.V), O: keep, LSE: lse, DO: buf(c.DO),
			DQ: dq, DK: dk, DV: buf(c.DV), Delta: FlashDelta(c.Shape), AccQ: false, AccK: false, AccV: c.AccV})
		return ls, true, err
	}
	if i >= 0 && i == c.ScoresBwd {
		return []Launch{flashMove(dq, c.DQ, c.AccQ, c.q()), flashMove(dk, c.DK, c.AccK, c.kv())}, true, nil
	}
	if i >= 0 && i == c.SoftmaxBwd {
		return nil, true, nil
	}
	for _, ops := range [][]int{c.Scores, c.Softmax} {
		for _, j := range ops {
			if i == j {
				return nil, true, nil
			}
		}
	}
	return nil, false, nil
}
