package cudastep

import (
	"fmt"
	"math"
	"strings"

	"github.com/moec-dev/moec/compiler/params"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
)

// OpLaunches is what one op of a program lowers to.
type OpLaunches struct {
	// Launches run every step; for an op with WhenRecompute, and for share_select(_bwd),
	// only when the layer's attention-sharing die says recompute.
	Launches []Launch
	// Reuse runs instead of Launches when the die says reuse: a skipped op's zeroed outputs
	// (as runtime/exec leaves them), or share_select's other branch.
	Reuse []Launch
	// Conditional says the op depends on its layer's die (Launches or Reuse).
	Conditional bool
	// Settle says the host program settles the optimizer's coefficients before the
	// launches (the step's first adamw op): it reads the gradient norm the device summed.
	Settle bool
	// Collective, for a collective op, is its NCCL calls (collective.go); nil otherwise.
	Collective *Collective
	// Offload, for the offloaded optimizer's ops (to_host, to_device, the host adamw), is
	// the host program's copies or CPU update (offload.go); nil otherwise.
	Offload *Offload
	// Cache, for the unified cache's ops (fetch, write-back, evict) and the update's
	// grad_norm and adamw over the host tier, is the host program's copies or CPU work
	// (cache.go); nil otherwise.
	Cache *CacheOp
	// CacheWaits are the copy stream's events (the unified cache's fetches and write-backs)
	// the compute stream waits for before the op's launches (cache.go).
	CacheWaits []int
	// CacheRecord are the compute-stream events the host program records right after the
	// op's launches, for the unified cache's copies that wait for the op (cache.go).
	CacheRecord []int
	// PublishNorm says the host program writes this rank's sum of squares of the gradients
	// into the grad_norm op's output after the launches (several ranks: the program's
	// all_reduce then sums it over the ranks, and the update reads the sum).
	PublishNorm bool
}

// Lowered is a step program lowered to launches of the kernel library.
type Lowered struct {
	Program *step.Program
	Ops     []OpLaunches
	// Consts are workspaces the host program fills once when it opens from tables it
	// holds; Ropes are the rotary tables, which it computes when it opens (a table of
	// every position's cos and sin would be megabytes of C).
	Consts map[string][]float32
	Ropes  map[string]RopeFill
	// NormSlots is how many partial sums of squares dense_sumsq writes into NormWork's
	// double slots (a gradient's blocks', gradient after gradient in the executor's order),
	// which the host adds in order into the global norm.
	NormSlots int
	// LossSlots is how many cross-entropy means the step writes into LossWork's double
	// slots; the step's cross-entropy is their sum times LossScale.
	LossSlots int
	LossScale float64
	// SoftSlots is how many distillation soft losses (the means of T²·KL, one per
	// distill_loss op) the step writes into SoftWork's double slots; the step's soft loss
	// is their sum times LossScale, and its loss hard·CE + soft·that (Program.Layout.Distill).
	SoftSlots int
	// FusedAttention is how many layers' attention cores (per micro-batch) run as the
	// fused FlashAttention-2 kernels (kernels_flash.cu) instead of the score, softmax and
	// weighted-sum ops; the others' fusion is not valid (FindFlashChain says why). Latent
	// attention's fused backwards count too (flash_mla.go).
	FusedAttention int
	// Dropped is the bytes of the program's device buffers Options.Compact left out of the
	// arena (buffers only the fused kernels' chains named); 0 without it.
	Dropped int64
	// HostEvents is how many to_host copies (one per offloaded group) record an event
	// their group's host update waits for (offload.go); 0 without offload.
	HostEvents int
	// CacheEvents is how many fetches and write-backs of the unified cache record a
	// copy-stream event (cache.go), and CacheStage the bytes of the host arena's staging
	// area for write-backs that add into a host gradient; 0 without the cache.
	CacheEvents int
	CacheStage  int64
	// ComputeEvents is how many compute-stream events the unified cache's copies wait for
	// (reused once their copies are queued; cache.go's copyWaits); 0 without the cache.
	ComputeEvents int
	// CommStage is the bytes of the staging workspace the collectives over the unified
	// cache's host tier run through (collective_cache.go); 0 without them.
	CommStage int64
	// Comms are the NCCL communicators the collectives run on, one per distinct group of
	// ranks, sorted by their ranks (collective_groups.go); none on one rank.
	Comms []Comm
}

// flashChains are the attention cores of p the fused kernels may run, by the index of each
// of their ops (FindFlashChain): a core whose fusion is not valid (talking heads, weights
// shared between layers, a mask the kernels lack) keeps its score, softmax and
// weighted-sum kernels.
func flashChains(p *step.Program, m *program.Model) map[int]*FlashChain {
	out := map[int]*FlashChain{}
	for i, op := range p.Ops {
		if op.Kind != step.OpScores || out[i] != nil {
			continue
		}
		c, err := FindFlashChain(p, m, i)
		if err != nil {
			continue
		}
		for _, ops := range [][]int{c.Scores, c.Softmax, c.AV, {c.AVBwd, c.SoftmaxBwd, c.ScoresBwd}} {
			for _, j := range ops {
				if j >= 0 {
					out[j] = c
				}
			}
		}
	}
	return out
}

// countChains is how many distinct chains chains holds.
func countChains(chains map[int]*FlashChain) int {
	seen := map[*FlashChain]bool{}
	for _, c := range chains {
		seen[c] = true
	}
	return len(seen)
}

// Workspaces of the dense kernels.
const (
	ropeWork  = "dense_rope"  // the rotary tables: cos [T, Dh/2] then sin
	termsWork = "dense_terms" // the cross-entropy's per-row terms
	meanWork  = "dense_mean"  // LayerNorm's row means for its backward
	NormWork  = "dense_sumsq" // a double per gradient: Σ g²
	LossWork  = "dense_ce"    // a double per cross_entropy op: the mean loss
	SoftWork  = "dense_kl"    // a double per distill_loss op: the mean soft loss T²·KL
)

// Lower lowers p (one rank's program of m's stage) to kernel launches and, for several
// ranks, NCCL calls (collective.go; pipeline.go for the pipeline stages' sends and
// receives, zero3.go for ZeRO 3's gathers, collective_tp.go for tensor parallelism's own
// passes, collective_sp.go for sequence parallelism's, offload.go for the offloaded
// optimizer's copies and host update, cache.go for the unified cache's fetches,
// write-backs and host update, collective_cache.go for its reductions over the host tier
// on several ranks). A layout it does not lower yet is an error
// saying so.
func Lower(p *step.Program, m *program.Model) (*Lowered, error) {
	return LowerWith(p, m, Options{})
}

// Options are the lowering's choices beyond the program.
type Options struct {
	// BF16 runs the weight products (matmul and its two gradients) on the tensor cores in
	// bfloat16 with fp32 sums (kernels_mma.cu), as runtime/exec's SetBF16Products computes
	// them on the CPU (a train block's precision = bf16): both operands rounded to bfloat16,
	// the weights through a 16-bit copy cast before each product reads it.
	BF16 bool
	// FP16 runs them in IEEE half instead (a train block's precision = fp16: the f16
	// kernels of kernels_mma.cu, the loss scaled at run time; fp16.go).
	FP16 bool
	// Compact places the device arena again without the buffers no launch, collective or
	// copy touches (compact.go): what the fused attention kernels never hold. The lowered
	// program (Lowered.Program) is then a copy of p with the new offsets. Programs that
	// share one arena with another (decoding's prefill and steps) are not compacted.
	Compact bool
}

// LowerWith is Lower with o's choices.
func LowerWith(p *step.Program, m *program.Model, o Options) (*Lowered, error) {
	low, err := lowerOnce(p, m, o)
	if err != nil || !o.Compact {
		return low, err
	}
	return compact(low, m, o) // compact.go
}

// lowerOnce lowers p as its memory plan places it.
func lowerOnce(p *step.Program, m *program.Model, o Options) (*Lowered, error) {
	if err := supported(p); err != nil {
		return nil, err
	}
	if err := o.check(); err != nil {
		return nil, err
	}
	d, err := m.Dims()
	if err != nil {
		return nil, fmt.Errorf("cudastep: %w", err)
	}
	lw := &opLowerer{p: p, m: m, d: d, bf16: o.BF16, fp16: o.FP16, out: &Lowered{Program: p, Consts: map[string][]float32{}, Ropes: map[string]RopeFill{},
		LossScale: 1 / float64(p.Batch.Micro*max(p.Layout.DP, 1))}}
	settled := false
	hostEvents := map[int]int{} // offload.go: each group's to_host event
	expert := expertBuffers(p)
	chains := flashChains(p, m)
	lw.out.FusedAttention = countChains(chains)
	for i := range p.Ops {
		op := &p.Ops[i]
		var ol OpLaunches
		if what := unhonoured(m, op); what != "" {
			return nil, fmt.Errorf("cudastep: op %d (%s %s): %s is not lowered to CUDA yet; train this stage on the CPU (without --device)", i, op.Phase, op.Kind, what)
		}
		if c := chains[i]; c != nil {
			ls, _, err := c.At(i)
			if err != nil {
				return nil, fmt.Errorf("cudastep: op %d (%s %s): fused attention: %w", i, op.Phase, op.Kind, err)
			}
			ol.Launches = ls
			lw.out.Ops = append(lw.out.Ops, ol)
			continue
		}
		switch {
		case isCacheOp(p, op) && op.Kind == step.OpAdamW && settled:
			// cache.go: the first host adamw updated every group (one optimizer step)
		case isCacheOp(p, op): // cache.go: the unified cache's copies and the host update
			if err := lw.cacheOp(op, &ol); err != nil {
				return nil, fmt.Errorf("cudastep: op %d (%s %s): unified cache: %w", i, op.Phase, op.Kind, err)
			}
			if op.Kind == step.OpAdamW && !settled {
				ol.Settle, settled = true, true
			}
		case op.Kind == step.OpToHost || op.Kind == step.OpToDevice || op.Kind == step.OpAdamW && onHost(p, op):
			// offload.go: the offloaded optimizer's copies and host update
			if err := lw.offload(op, &ol, hostEvents); err != nil {
				return nil, fmt.Errorf("cudastep: op %d (%s %s): offloaded optimizer: %w", i, op.Phase, op.Kind, err)
			}
			if op.Kind == step.OpAdamW && !settled {
				ol.Settle, settled = true, true
			}
		case hostCollective(p, op) || op.CacheFill && p.Layout.Cache.On():
			// collective_cache.go: staged through the device; zero3.go: the cache's fetch
			// from the host shards
			c, err := lw.collective(op)
			if err != nil {
				return nil, fmt.Errorf("cudastep: op %d (%s %s): unified cache: %w", i, op.Phase, op.Kind, err)
			}
			ol.Collective = c
		case onHost(p, op):
			return nil, fmt.Errorf("cudastep: op %d (%s %s) reads or writes host memory, which only the offloaded optimizer's and the unified cache's copies and updates do on the CUDA path (%s)", i, op.Phase, op.Kind, op.Attr)
		case isDecodeOp(op): // decode.go: the inference programs' own ops
			ls, err := lw.decodeOp(op)
			if err != nil {
				return nil, fmt.Errorf("cudastep: op %d (%s %s): %w", i, op.Phase, op.Kind, err)
			}
			ol.Launches = ls
		case isMLAOp(op): // mla.go: latent attention's inference ops
			ls, err := lw.mlaOp(op)
			if err != nil {
				return nil, fmt.Errorf("cudastep: op %d (%s %s): %w", i, op.Phase, op.Kind, err)
			}
			ol.Launches = ls
		case isRouteBiasOp(op): // route_bias.go: aux-free balancing's loads and bias update
			ls, err := lw.routeBiasOp(op)
			if err != nil {
				return nil, fmt.Errorf("cudastep: op %d (%s %s): %w", i, op.Phase, op.Kind, err)
			}
			ol.Launches = ls
		case isMoE(p, op, expert):
			ls, err := lowerMoE(p, m, i)
			if err != nil {
				return nil, fmt.Errorf("cudastep: op %d (%s %s): %w", i, op.Phase, op.Kind, err)
			}
			ol.Launches = ls
		case isCollective(op.Kind): // collective.go
			c, err := lw.collective(op)
			if err != nil {
				return nil, fmt.Errorf("cudastep: op %d (%s %s): %w", i, op.Phase, op.Kind, err)
			}
			ol.Collective, ol.Launches = c, c.Before
		case op.Kind == step.OpAdamW:
			if !settled {
				ls, err := lw.adamw()
				if err != nil {
					return nil, err
				}
				ol.Launches, ol.Settle, settled = ls, true, true
			}
		default:
			if err := lw.op(op, &ol); err != nil {
				return nil, fmt.Errorf("cudastep: op %d (%s %s): %w", i, op.Phase, op.Kind, err)
			}
		}
		if op.WhenRecompute && op.Layer >= 0 {
			ol.Conditional = true
			ol.Reuse = lw.skip(op)
		}
		lw.out.Ops = append(lw.out.Ops, ol)
	}
	if err := addExchangedFills(lw.out); err != nil { // moe_ep.go
		return nil, err
	}
	if p.Layout.Cache.On() {
		if err := cacheOrder(p, lw.out); err != nil { // cache.go
			return nil, err
		}
	}
	sortComms(lw.out)                                    // collective_groups.go
	if err := pairPipelineMessages(lw.out); err != nil { // pipeline.go
		return nil, err
	}
	return lw.out, nil
}

// supported refuses the layouts the CUDA backend does not lower yet.
func supported(p *step.Program) error {
	l := p.Layout
	var missing []string
	missing = append(missing, collectivesSupported(l)...)
	missing = append(missing, cacheSupported(l)...) // cache.go
	if l.Distill.On() && l.TP > 1 {
		missing = append(missing, "distillation under tensor parallelism")
	}
	if len(missing) > 0 {
		return fmt.Errorf("cudastep: %s/%s runs %s; the CUDA backend does not lower %v yet (one rank; data, expert, tensor, sequence and pipeline parallelism with ZeRO 0–3 and the offloaded optimizer; the unified cache under each of them; distillation without tensor parallelism)",
			p.Model, p.Stage, l, missing)
	}
	return nil
}

// moeKind reports whether ops of kind k are the MoE lowering's whatever their buffers.
func moeKind(k step.OpKind) bool {
	switch k {
	case step.OpRouter, step.OpRouterBwd, step.OpPermute, step.OpPermuteBwd, step.OpGroupedMM, step.OpGroupedMMDX,
		step.OpGroupedMMDW, step.OpCombine, step.OpCombineBwd:
		return true
	}
	return false
}

// expertBuffers marks the buffers the MoE ops write: the expert buffers ([experts, slots,
// width], or packed dispatch rows [rows, width] under dropless routing).
func expertBuffers(p *step.Program) []bool {
	out := make([]bool, len(p.Buffers))
	for _, op := range p.Ops {
		if moeKind(op.Kind) {
			for _, b := range op.Out {
				out[b] = true
			}
		}
	}
	return out
}

// isMoE reports whether op is the MoE lowering's (lowerMoE): routing, dispatch, the
// experts' products, the combine, and the activation (and its backward) over expert
// buffers (expert, from expertBuffers).
func isMoE(p *step.Program, op *step.Op, expert []bool) bool {
	if moeKind(op.Kind) {
		return true
	}
	if op.Kind != step.OpAct && op.Kind != step.OpActBwd {
		return false
	}
	for _, b := range op.In {
		if buf := p.Buffers[b]; expert[b] || len(buf.Shape) == 3 || buf.Kind == step.KindDispatch {
			return true
		}
	}
	return false
}

type opLowerer struct {
	p    *step.Program
	m    *program.Model
	d    program.Dims
	out  *Lowered
	bf16 bool // weight products on the tensor cores (Options.BF16)
	fp16 bool // in IEEE half (Options.FP16)
}

func (lw *opLowerer) buf(b int) Arg { return BufArg(PtrF32, b) }

func (lw *opLowerer) ints(b int) Arg { return BufArg(PtrI32, b) }

func (lw *opLowerer) n(b int) int64 { return lw.p.Buffers[b].Elements() }

func (lw *opLowerer) shape(b int) []int { return lw.p.Buffers[b].Shape }

// denseElementwise is a grid-stride launch over n values, eight per thread (at most 1024
// blocks).
func denseElementwise(kernel string, n int64, args ...Arg) Launch {
	blocks := min((n+2047)/2048, 1024)
	return Launch{Kernel: kernel, Grid: [3]int{int(max(blocks, 1)), 1, 1}, Block: [3]int{256, 1, 1}, Args: args}
}

// densePerRow is a launch of a warp-per-row kernel over rows.
func densePerRow(kernel string, rows int, args ...Arg) Launch {
	return Launch{Kernel: kernel, Grid: [3]int{max((rows+3)/4, 1), 1, 1}, Block: [3]int{128, 1, 1}, Args: args}
}

// densePerColumn is a launch of a thread-per-column kernel over cols.
func densePerColumn(kernel string, cols int, args ...Arg) Launch {
	return Launch{Kernel: kernel, Grid: [3]int{max((cols+127)/128, 1), 1, 1}, Block: [3]int{128, 1, 1}, Args: args}
}

func (lw *opLowerer) zero(b int) Launch {
	return denseElementwise("dense_zero", lw.n(b), lw.buf(b), IntArg(I64, lw.n(b)))
}

func int32Arg(v int) Arg { return IntArg(I32, int64(v)) }

func boolArg(v bool) Arg {
	if v {
		return int32Arg(1)
	}
	return int32Arg(0)
}

// denseGemm is one dense_gemm launch: C = alpha·op(A)·op(B) + beta·C (+ bias), batched over
// batches × units (see the kernel).
type denseGemm struct {
	a, b, c                Arg
	bias                   *Arg // nil: none
	m, n, k, lda, ldb, ldc int
	transA, transB, causal bool
	alpha, beta            float32
	batches, units         int
	headMul, headAdd, grp  int
	aB, aH, aG             int64
	bB, bH, bG             int64
	cB, cH, cG             int64
}

func (g denseGemm) launch() Launch {
	if g.batches == 0 {
		g.batches = 1
	}
	if g.units == 0 {
		g.units = 1
	}
	if g.headMul == 0 {
		g.headMul = 1
	}
	if g.grp == 0 {
		g.grp = 1
	}
	bias := NullArg(PtrF32)
	if g.bias != nil {
		bias = *g.bias
	}
	L := func(v int64) Arg { return IntArg(I64, v) }
	return Launch{Kernel: "dense_gemm",
		Grid:  [3]int{(g.n + 63) / 64, (g.m + 63) / 64, g.batches * g.units},
		Block: [3]int{16, 16, 1},
		Args: []Arg{g.a, g.b, g.c, bias, int32Arg(g.m), int32Arg(g.n), int32Arg(g.k), int32Arg(g.lda), int32Arg(g.ldb), int32Arg(g.ldc),
			boolArg(g.transA), boolArg(g.transB), FloatArg(g.alpha), FloatArg(g.beta), boolArg(g.causal),
			int32Arg(g.units), int32Arg(g.headMul), int32Arg(g.headAdd), int32Arg(g.grp),
			L(g.aB), L(g.aH), L(g.aG), L(g.bB), L(g.bH), L(g.bG), L(g.cB), L(g.cH), L(g.cG)}}
}

func accBeta(acc bool) float32 {
	if acc {
		return 1
	}
	return 0
}

// attnDims are an attention op's sequences, positions, heads, key/value heads and head
// width, from its query-side buffer q and key-side buffer k.
func (lw *opLowerer) attnDims(q, k int) (B, T, H, KV, Dh int) {
	B, T, Dh = lw.p.Batch.MicroBatch, lw.p.Batch.SeqLen, lw.d.Dh
	return B, T, int(lw.n(q)) / (B * T * Dh), int(lw.n(k)) / (B * T * Dh), Dh
}

// op lowers one dense op into ol.
func (lw *opLowerer) op(op *step.Op, ol *OpLaunches) error {
	in, out, acc := op.In, op.Out, op.Accumulates
	add := func(ls ...Launch) { ol.Launches = append(ol.Launches, ls...) }
	opt := func(bufs []int, i int) Arg {
		if i < len(bufs) {
			return lw.buf(bufs[i])
		}
		return NullArg(PtrF32)
	}
	layerNorm := lw.m.Norm == program.LayerNorm
	switch op.Kind {
	case step.OpEmbed, step.OpEmbedBwd:
		if op.Rows != step.RowsOfTokens && op.Rows != step.RowsOfPositions && op.Rows != step.RowsOfVocabParallel {
			return fmt.Errorf("embedding rows %d are not lowered yet (decoding)", op.Rows)
		}
		table, tok, x := in[1], in[0], out[0]
		kernel := "dense_embed"
		if op.Kind == step.OpEmbedBwd {
			table, tok, x, kernel = out[0], in[1], in[0], "dense_embed_bwd"
		}
		w := lw.shape(table)[1]
		rows, n := int(lw.n(table))/w, int(lw.n(tok))
		first := 0
		if op.Rows == step.RowsOfVocabParallel {
			first = lw.p.Coord.TP * rows // this tp rank's slice of the vocabulary, as runtime/exec's firstRow
		}
		sizes := []Arg{int32Arg(n), int32Arg(w), int32Arg(rows), int32Arg(first), int32Arg(lw.p.Batch.SeqLen), boolArg(op.Rows == step.RowsOfPositions)}
		if op.Kind == step.OpEmbed {
			add(Launch{Kernel: kernel, Grid: [3]int{n, 1, 1}, Block: [3]int{128, 1, 1},
				Args: append([]Arg{lw.ints(tok), lw.buf(table), lw.buf(x)}, sizes...)})
			return nil
		}
		if !acc(0) {
			add(lw.zero(table))
		}
		add(densePerColumn(kernel, w, append([]Arg{lw.buf(x), lw.ints(tok), lw.buf(table)}, sizes...)...))
	case step.OpNorm:
		d := int(lw.n(in[1]))
		rows := int(lw.n(in[0])) / d
		add(densePerRow("dense_norm", rows, lw.buf(in[0]), lw.buf(in[1]), opt(in, 2), lw.buf(out[0]), lw.buf(out[1]),
			int32Arg(rows), int32Arg(d), FloatArg(float32(lw.d.NormEps)), boolArg(layerNorm)))
	case step.OpNormBwd:
		d := int(lw.n(in[2]))
		rows := int(lw.n(in[1])) / d
		mean := NullArg(PtrF32)
		if layerNorm {
			mean = WorkArg(PtrF32, meanWork, int64(rows)*4)
			add(densePerRow("dense_row_mean", rows, lw.buf(in[1]), mean, int32Arg(rows), int32Arg(d)))
		}
		if len(out) > 2 && !acc(2) {
			add(lw.zero(out[2]))
		}
		if !acc(1) {
			add(lw.zero(out[1]))
		}
		add(densePerColumn("dense_norm_bwd_dw", d, lw.buf(in[0]), lw.buf(in[1]), lw.buf(in[3]), mean, lw.buf(out[1]), opt(out, 2), int32Arg(rows), int32Arg(d)))
		add(densePerRow("dense_norm_bwd_dx", rows, lw.buf(in[0]), lw.buf(in[1]), lw.buf(in[2]), lw.buf(in[3]), mean, lw.buf(out[0]),
			int32Arg(rows), int32Arg(d), boolArg(acc(0))))
	case step.OpMatMul, step.OpMatMulDX, step.OpMatMulDW:
		if lw.bf16 || lw.fp16 {
			ls, err := lw.tensorCoreProduct(op)
			if err != nil {
				return err
			}
			add(ls...)
			return nil
		}
		return lw.simtProduct(op, ol)
	case step.OpAdd:
		add(denseElementwise("dense_add", lw.n(out[0]), lw.buf(out[0]), lw.buf(in[0]), lw.buf(in[1]), IntArg(I64, lw.n(out[0]))))
	case step.OpAccumulate:
		switch {
		case !acc(0):
			add(denseElementwise("dense_copy", lw.n(out[0]), lw.buf(out[0]), lw.buf(in[0]), IntArg(I64, lw.n(out[0]))))
		case lw.p.Buffers[in[0]].Offset != lw.p.Buffers[out[0]].Offset:
			add(denseElementwise("dense_accumulate", lw.n(out[0]), lw.buf(out[0]), lw.buf(in[0]), IntArg(I64, lw.n(out[0]))))
		}
	case step.OpCopy:
		add(denseElementwise("dense_copy", lw.n(out[0]), lw.buf(out[0]), lw.buf(in[0]), IntArg(I64, lw.n(out[0]))))
	case step.OpSeqSlice: // sequence parallelism: this tp rank's rows of a whole value (collective_sp.go)
		return lw.seqSlice(op, add)
	case step.OpRotary, step.OpRotaryBwd:
		tab := lw.ropeTable()
		tokens := lw.p.Batch.MicroBatch * lw.p.Batch.SeqLen
		for _, b := range out { // q and k, or q alone where the layer reuses an earlier layer's keys (share_kv)
			width := int(lw.n(b)) / tokens
			add(denseElementwise("dense_rotary", int64(tokens*width/2), lw.buf(b), tab, int32Arg(tokens), int32Arg(width),
				int32Arg(lw.p.Batch.SeqLen), int32Arg(lw.d.Dh), boolArg(op.Kind == step.OpRotaryBwd)))
		}
	case step.OpScores:
		B, T, H, KV, Dh := lw.attnDims(in[0], in[1])
		qd, kd, tt := int64(H*Dh), int64(KV*Dh), int64(T*T)
		add(denseGemm{a: lw.buf(in[0]), b: lw.buf(in[1]), c: lw.buf(out[0]), m: T, n: T, k: Dh, lda: int(qd), ldb: int(kd), ldc: T,
			transB: true, causal: true, alpha: attnScale(Dh), batches: B, units: H, grp: H / KV,
			aB: int64(T) * qd, aH: int64(Dh), bB: int64(T) * kd, bG: int64(Dh), cB: int64(H) * tt, cH: tt}.launch())
	case step.OpScoresBwd:
		B, T, H, KV, Dh := lw.attnDims(in[1], in[2])
		qd, kd, tt := int64(H*Dh), int64(KV*Dh), int64(T*T)
		per := H / KV
		add(denseGemm{a: lw.buf(in[0]), b: lw.buf(in[2]), c: lw.buf(out[0]), m: T, n: Dh, k: T, lda: T, ldb: int(kd), ldc: int(qd),
			alpha: attnScale(Dh), beta: accBeta(acc(0)), batches: B, units: H, grp: per,
			aB: int64(H) * tt, aH: tt, bB: int64(T) * kd, bG: int64(Dh), cB: int64(T) * qd, cH: int64(Dh)}.launch())
		if !acc(1) {
			add(lw.zero(out[1]))
		}
		// The heads of a key/value group add into its gradient one after another, in order.
		for i := 0; i < per; i++ {
			add(denseGemm{a: lw.buf(in[0]), b: lw.buf(in[1]), c: lw.buf(out[1]), m: T, n: Dh, k: T, lda: T, ldb: int(qd), ldc: int(kd),
				transA: true, alpha: attnScale(Dh), beta: 1, batches: B, units: KV, headMul: per, headAdd: i, grp: per,
				aB: int64(H) * tt, aH: tt, bB: int64(T) * qd, bH: int64(Dh), cB: int64(T) * kd, cG: int64(Dh)}.launch())
		}
	case step.OpHeadMix:
		B, T := lw.p.Batch.MicroBatch, lw.p.Batch.SeqLen
		H, tt := lw.shape(in[1])[0], int64(T*T)
		add(denseGemm{a: lw.buf(in[1]), b: lw.buf(in[0]), c: lw.buf(out[0]), m: H, n: int(tt), k: H, lda: H, ldb: int(tt), ldc: int(tt),
			alpha: 1, batches: B, bB: int64(H) * tt, cB: int64(H) * tt}.launch())
	case step.OpHeadMixBwd:
		B, T := lw.p.Batch.MicroBatch, lw.p.Batch.SeqLen
		H, tt := lw.shape(in[2])[0], int64(T*T)
		if !acc(1) {
			add(lw.zero(out[1]))
		}
		for b := 0; b < B; b++ {
			at := func(buf int) Arg { a := lw.buf(buf); a.Offset = int64(b*H) * tt; return a }
			add(denseGemm{a: at(in[0]), b: at(in[1]), c: lw.buf(out[1]), m: H, n: H, k: int(tt), lda: int(tt), ldb: int(tt), ldc: H,
				transB: true, alpha: 1, beta: 1}.launch())
		}
		add(denseGemm{a: lw.buf(in[2]), b: lw.buf(in[0]), c: lw.buf(out[0]), m: H, n: int(tt), k: H, lda: H, ldb: int(tt), ldc: int(tt),
			transA: true, alpha: 1, beta: accBeta(acc(0)), batches: B, bB: int64(H) * tt, cB: int64(H) * tt}.launch())
	case step.OpSoftmax:
		T := lw.p.Batch.SeqLen
		rows := int(lw.n(in[0])) / T
		add(densePerRow("dense_softmax", rows, lw.buf(in[0]), lw.buf(out[0]), int32Arg(rows), int32Arg(T)))
	case step.OpSoftmaxBwd:
		T := lw.p.Batch.SeqLen
		rows := int(lw.n(in[1])) / T
		add(densePerRow("dense_softmax_bwd", rows, lw.buf(in[0]), lw.buf(in[1]), lw.buf(out[0]), int32Arg(rows), int32Arg(T), boolArg(acc(0))))
	case step.OpAttnAV:
		B, T, H, KV, Dh := lw.attnDims(out[0], in[1])
		qd, kd, tt := int64(H*Dh), int64(KV*Dh), int64(T*T)
		add(denseGemm{a: lw.buf(in[0]), b: lw.buf(in[1]), c: lw.buf(out[0]), m: T, n: Dh, k: T, lda: T, ldb: int(kd), ldc: int(qd),
			alpha: 1, batches: B, units: H, grp: H / KV,
			aB: int64(H) * tt, aH: tt, bB: int64(T) * kd, bG: int64(Dh), cB: int64(T) * qd, cH: int64(Dh)}.launch())
	case step.OpAttnAVBwd:
		B, T, H, KV, Dh := lw.attnDims(in[0], in[2])
		qd, kd, tt := int64(H*Dh), int64(KV*Dh), int64(T*T)
		per := H / KV
		add(denseGemm{a: lw.buf(in[0]), b: lw.buf(in[2]), c: lw.buf(out[0]), m: T, n: T, k: Dh, lda: int(qd), ldb: int(kd), ldc: T,
			transB: true, causal: true, alpha: 1, beta: accBeta(acc(0)), batches: B, units: H, grp: per,
			aB: int64(T) * qd, aH: int64(Dh), bB: int64(T) * kd, bG: int64(Dh), cB: int64(H) * tt, cH: tt}.launch())
		if !acc(1) {
			add(lw.zero(out[1]))
		}
		for i := 0; i < per; i++ {
			add(denseGemm{a: lw.buf(in[1]), b: lw.buf(in[0]), c: lw.buf(out[1]), m: T, n: Dh, k: T, lda: T, ldb: int(qd), ldc: int(kd),
				transA: true, alpha: 1, beta: 1, batches: B, units: KV, headMul: per, headAdd: i, grp: per,
				aB: int64(H) * tt, aH: tt, bB: int64(T) * qd, bH: int64(Dh), cB: int64(T) * kd, cG: int64(Dh)}.launch())
		}
	case "share_select":
		n := IntArg(I64, lw.n(out[0]))
		ol.Conditional = true
		add(denseElementwise("dense_copy", lw.n(out[0]), lw.buf(out[0]), lw.buf(in[0]), n))
		ol.Reuse = []Launch{denseElementwise("dense_copy", lw.n(out[0]), lw.buf(out[0]), lw.buf(in[1]), n)}
	case "share_select_bwd":
		ol.Conditional = true
		route := func(dst, other int, accDst, accOther bool) []Launch {
			n := IntArg(I64, lw.n(dst))
			var ls []Launch
			if accDst {
				ls = append(ls, denseElementwise("dense_accumulate", lw.n(dst), lw.buf(dst), lw.buf(in[0]), n))
			} else {
				ls = append(ls, denseElementwise("dense_copy", lw.n(dst), lw.buf(dst), lw.buf(in[0]), n))
			}
			if !accOther {
				ls = append(ls, lw.zero(other))
			}
			return ls
		}
		add(route(out[0], out[1], acc(0), acc(1))...)
		ol.Reuse = route(out[1], out[0], acc(1), acc(0))
	case step.OpAct:
		kind, err := denseActKind(op.Activation)
		if err != nil {
			return err
		}
		add(denseElementwise("dense_act", lw.n(in[0]), lw.buf(in[0]), opt(in, 1), lw.buf(out[0]), IntArg(I64, lw.n(in[0])), int32Arg(kind)))
	case step.OpActBwd:
		kind, err := denseActKind(op.Activation)
		if err != nil {
			return err
		}
		add(denseElementwise("dense_act_bwd", lw.n(in[1]), lw.buf(in[0]), lw.buf(in[1]), opt(in, 2), lw.buf(out[0]), opt(out, 1),
			IntArg(I64, lw.n(in[1])), int32Arg(kind), boolArg(acc(0)), boolArg(len(out) > 1 && acc(1))))
	case step.OpCrossEntropy:
		if op.Pass != step.LossWhole || len(in) > 2 {
			return lw.crossEntropyTP(op, add) // collective_tp.go
		}
		V := lw.shape(in[0])[1]
		rows := int(lw.n(in[0])) / V
		dl := opt(out, 1)
		terms := WorkArg(PtrF32, termsWork, int64(rows)*4)
		slot := WorkArg(PtrF32, LossWork, 0)
		slot.Offset = int64(2 * lw.out.LossSlots)
		lw.out.LossSlots++
		add(densePerRow("dense_xent", rows, lw.buf(in[0]), lw.ints(in[1]), dl, terms, int32Arg(rows), int32Arg(V), int32Arg(0),
			LossScaledArg(float32(lw.out.LossScale/float64(rows)))))
		add(Launch{Kernel: "dense_xent_mean", Grid: [3]int{1, 1, 1}, Block: [3]int{32, 1, 1},
			Args: []Arg{terms, lw.buf(out[0]), slot, int32Arg(rows)}})
	case step.OpDistillLoss:
		return lw.distill(op, add) // distill.go
	case step.OpGradNorm:
		pieces, err := lw.pieces()
		if err != nil {
			return err
		}
		slots := 0
		for _, pc := range pieces {
			g, n := lw.countedGrad(pc) // collective.go
			// A tp replica or another stage's copy (collective_tp.go) is counted elsewhere.
			if lw.tpReplicaElsewhere(pc) || lw.mirroredElsewhere(pc) {
				n = 0
			}
			if n <= 0 {
				continue
			}
			blocks := int(min(max((n+2047)/2048, 1), 64))
			slot := WorkArg(PtrF32, NormWork, 0)
			slot.Offset = int64(2 * slots)
			slots += blocks
			add(Launch{Kernel: "dense_sumsq", Grid: [3]int{blocks, 1, 1}, Block: [3]int{256, 1, 1},
				Args: []Arg{g, IntArg(I64, n), slot}})
		}
		lw.out.NormSlots = slots
		ol.PublishNorm = lw.p.Layout.World() > 1
	default:
		return fmt.Errorf("no CUDA lowering for %s yet", op.Kind)
	}
	return nil
}

// attnScale is 1/√Dh, as the executor rounds it.
func attnScale(dh int) float32 { return float32(1 / math.Sqrt(float64(dh))) }

// denseActKind is the dense kernels' number for an activation.
func denseActKind(a program.Activation) (int, error) {
	switch a {
	case program.ReLU:
		return 0, nil
	case program.GELU, program.GeGLU:
		return 1, nil
	case program.SiLU, program.SwiGLU:
		return 2, nil
	}
	return 0, fmt.Errorf("activation %q has no CUDA kernel", a)
}

// RopeFill is a rotary table the host program computes when it opens (moec_fill_rope):
// cos, then sin, of float32(p)·Inv[i] in float64 for positions p < Positions, each times
// Attention and rounded to float32 — compiler/program's Model.RopeTable, from the same
// frequencies (Model.RopeFrequencies).
type RopeFill struct {
	Inv       []float32
	Positions int
	Attention float64
}

// Floats is the table's size in floats: [Positions, len(Inv)] of cos, then of sin.
func (r RopeFill) Floats() int { return 2 * r.Positions * len(r.Inv) }

// ropeFill is the rotary tables of rotary dimension dim over positions for model m.
func ropeFill(m *program.Model, dim, positions int) RopeFill {
	inv, attention := m.RopeFrequencies(dim, positions)
	return RopeFill{Inv: inv, Positions: positions, Attention: attention}
}

// ropeTable is the rotary tables' workspace, filled when the host program opens.
func (lw *opLowerer) ropeTable() Arg {
	T := lw.p.Batch.SeqLen
	if _, ok := lw.out.Ropes[ropeWork]; !ok {
		lw.out.Ropes[ropeWork] = ropeFill(lw.m, lw.d.Dh, T)
	}
	return WorkArg(PtrF32, ropeWork, int64(lw.out.Ropes[ropeWork].Floats())*4)
}

// skip is what a WhenRecompute op leaves when its layer reuses the weights below: zeros in
// the outputs it would have overwritten (runtime/exec's skip).
func (lw *opLowerer) skip(op *step.Op) []Launch {
	var ls []Launch
	for i, b := range op.Out {
		if op.Accumulates(i) || containsBuf(op.In, b) {
			continue
		}
		ls = append(ls, lw.zero(b))
	}
	return ls
}

func containsBuf(xs []int, x int) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

// optPiece is one tensor the optimizer updates: its weights, gradient, and the moments at its
// flat offset in its group's adam_m and adam_v.
type optPiece struct {
	param, grad, m, v int // param: −1 under ZeRO 3 (the weights live in pshard)
	pshard            int // ZeRO 3: the group's flat shard of the weights (−1: none)
	shard             int // ZeRO 2: the group's reduced gradient shard buffer (−1: none)
	group             int // its group's index in the program's Groups
	flat              int64
	decay             bool
}

// pieces are the optimizer's tensors in runtime/exec's order (SetOptimizer): by group,
// then by gradient buffer.
func (lw *opLowerer) pieces() ([]optPiece, error) {
	p := lw.p
	paramOf := map[params.ID]int{}
	for i, b := range p.Buffers {
		if b.Kind == step.KindParam && b.Param != nil {
			id := *b.Param
			id.Shard = params.Shard{}
			paramOf[id] = i
		}
	}
	// A buffer by its name's prefix, as runtime/exec's bufferNamed finds it (a ZeRO shard's
	// name goes on with its part, "adam_m[dense] 0/2").
	named := func(kind step.Kind, name string) int {
		for i, b := range p.Buffers {
			if b.Kind == kind && b.Param == nil && strings.HasPrefix(b.Name, name) {
				return i
			}
		}
		return -1
	}
	var out []optPiece
	for gi, g := range p.Groups {
		m, v := named(step.KindOptimizer, "adam_m["+g.Name+"]"), named(step.KindOptimizer, "adam_v["+g.Name+"]")
		shard := named(step.KindGrad, "grads["+g.Name+"]")
		pshard := -1
		if g.ZeRO == 3 {
			if pshard = named(step.KindParam, "params["+g.Name+"]"); pshard < 0 {
				return nil, fmt.Errorf("group %s is under ZeRO 3 but the program has no shard of its weights", g.Name)
			}
		}
		if m < 0 || v < 0 {
			return nil, fmt.Errorf("group %s has no moments in the program", g.Name)
		}
		for i, b := range p.Buffers {
			if b.Param == nil || b.Flat < 0 || (b.Kind != step.KindGrad && b.Kind != step.KindActGrad) {
				continue
			}
			id := *b.Param
			id.Shard = params.Shard{}
			group := 0
			if id.Role.Routed() && len(p.Groups) > 1 {
				group = 1
			}
			if group != gi {
				continue
			}
			w, ok := paramOf[id]
			if !ok && pshard < 0 {
				return nil, fmt.Errorf("gradient %s has no parameter buffer", b.Name)
			}
			if pshard >= 0 {
				w = -1
			}
			out = append(out, optPiece{param: w, pshard: pshard, grad: i, m: m, v: v, shard: shard, group: gi, flat: b.Flat, decay: len(b.Shape) >= 2})
		}
	}
	return out, nil
}

// adamw is the step's update: one dense_adamw launch per tensor with the coefficients the
// host program settles.
func (lw *opLowerer) adamw() ([]Launch, error) {
	pieces, err := lw.pieces()
	if err != nil {
		return nil, fmt.Errorf("cudastep: adamw: %w", err)
	}
	var ls []Launch
	for _, pc := range pieces {
		w, g, m, v, n, ok := lw.zeroPiece(pc) // collective.go: a ZeRO shard's part
		if !ok {
			continue
		}
		decay := FloatArg(0)
		if pc.decay {
			decay = HostFloatArg(HostAdamDecay)
		}
		ls = append(ls, denseElementwise("dense_adamw", n, w, g, m, v, IntArg(I64, n),
			HostFloatArg(HostAdamScale), HostFloatArg(HostAdamB1), HostFloatArg(HostAdamC1), HostFloatArg(HostAdamB2),
			HostFloatArg(HostAdamC2), HostFloatArg(HostAdamInvBC2), HostFloatArg(HostAdamEps), decay, HostFloatArg(HostAdamLRBC1)))
	}
	return ls, nil
}

// simtProduct lowers a weight product (matmul, matmul_dx, matmul_dw) to the fp32 SIMT
// GEMM (the reference path).
func (lw *opLowerer) simtProduct(op *step.Op, ol *OpLaunches) error {
	in, out, acc := op.In, op.Out, op.Accumulates
	add := func(ls ...Launch) { ol.Launches = append(ol.Launches, ls...) }
	opt := func(bufs []int, i int) Arg {
		if i < len(bufs) {
			return lw.buf(bufs[i])
		}
		return NullArg(PtrF32)
	}
	switch op.Kind {
	case step.OpMatMul:
		o, k := lw.shape(in[1])[0], lw.shape(in[1])[1]
		n := int(lw.n(in[0])) / k
		bias := opt(in, 2)
		add(denseGemm{a: lw.buf(in[0]), b: lw.buf(in[1]), c: lw.buf(out[0]), bias: &bias, m: n, n: o, k: k,
			lda: k, ldb: k, ldc: o, transB: true, alpha: 1}.launch())
	case step.OpMatMulDX:
		o, k := lw.shape(in[1])[0], lw.shape(in[1])[1]
		n := int(lw.n(in[0])) / o
		add(denseGemm{a: lw.buf(in[0]), b: lw.buf(in[1]), c: lw.buf(out[0]), m: n, n: k, k: o,
			lda: o, ldb: k, ldc: k, alpha: 1, beta: accBeta(acc(0))}.launch())
	case step.OpMatMulDW:
		o, k := lw.shape(out[0])[0], lw.shape(out[0])[1]
		n := int(lw.n(in[0])) / o
		if int64(n*k) != lw.n(in[1]) {
			return fmt.Errorf("x has %d values, want %d×%d", lw.n(in[1]), n, k)
		}
		add(denseGemm{a: lw.buf(in[0]), b: lw.buf(in[1]), c: lw.buf(out[0]), m: o, n: k, k: n,
			lda: o, ldb: k, ldc: k, transA: true, alpha: 1, beta: accBeta(acc(0))}.launch())
		if len(out) > 1 {
			if !acc(1) {
				add(lw.zero(out[1]))
			}
			add(densePerColumn("dense_col_sum", o, lw.buf(in[0]), lw.buf(out[1]), int32Arg(n), int32Arg(o)))
		}
	}
	return nil
}

// tensorCoreProduct lowers a weight product to the bfloat16 (or half) tensor-core kernels
// (kernels_mma.cu): the weights cast to a 16-bit copy right before the product reads them
// (a workspace per weight; casting once per step after the update is the cheaper schedule
// a later change can make), the activations rounded as they are staged, fp32 sums.
func (lw *opLowerer) tensorCoreProduct(op *step.Op) ([]Launch, error) {
	in, out, acc := op.In, op.Out, op.Accumulates
	w16 := func(b int) (Arg, Launch, error) {
		n := lw.n(b)
		copy16 := WorkArg(PtrU16, fmt.Sprintf("mma_w16_%d", b), 2*n)
		cast, err := CastLaunch(lw.precision(), n, lw.buf(b), copy16)
		return copy16, cast, err
	}
	switch op.Kind {
	case step.OpMatMul:
		o, k := lw.shape(in[1])[0], lw.shape(in[1])[1]
		n := int(lw.n(in[0])) / k
		w, cast, err := w16(in[1])
		if err != nil {
			return nil, err
		}
		var bias *Arg
		if len(in) > 2 {
			b := lw.buf(in[2])
			bias = &b
		}
		fwd, err := MatMul{Precision: lw.precision(), M: n, N: o, K: k}.Forward(lw.buf(in[0]), w, lw.buf(out[0]), bias)
		return []Launch{cast, fwd}, err
	case step.OpMatMulDX:
		o, k := lw.shape(in[1])[0], lw.shape(in[1])[1]
		n := int(lw.n(in[0])) / o
		w, cast, err := w16(in[1])
		if err != nil {
			return nil, err
		}
		dx, err := MatMul{Precision: lw.precision(), M: n, N: o, K: k, Accumulate: acc(0)}.InputGrad(lw.buf(in[0]), w, lw.buf(out[0]))
		return []Launch{cast, dx}, err
	default: // matmul_dw
		o, k := lw.shape(out[0])[0], lw.shape(out[0])[1]
		n := int(lw.n(in[0])) / o
		if int64(n*k) != lw.n(in[1]) {
			return nil, fmt.Errorf("x has %d values, want %d×%d", lw.n(in[1]), n, k)
		}
		mm := MatMul{Precision: lw.precision(), M: n, N: o, K: k, Accumulate: acc(0)}
		dw, err := mm.WeightGrad(lw.buf(in[0]), lw.buf(in[1]), lw.buf(out[0]))
		if err != nil {
			return nil, err
		}
		ls := []Launch{dw}
		if len(out) > 1 {
			mm.Accumulate = acc(1)
			db, err := mm.BiasGrad(lw.buf(in[0]), lw.buf(out[1]))
			if err != nil {
				return nil, err
			}
			ls = append(ls, db)
		}
		return ls, nil
	}
}
