package exec

// The kernels with explicit arguments: what the executor calls for each op of a program,
// and what a step program written out as Go (codegen/gogen) calls, statement by statement,
// on views of its arena.

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/runtime/optim"
	"github.com/moec-dev/moec/runtime/rng"
)

// Kernels are one rank's kernels: what every op of its program needs beyond its buffers
// (the model's sizes and options, the micro-batch shape, the rank's tensor-parallel index
// and the step's loss scale, the rotary tables), the working space the kernels reuse, and
// the loss terms of the step being run. A step allocates nothing in them after the first.
type Kernels struct {
	m *program.Model
	d program.Dims
	// batch is one micro-batch on this replica; tpRank the rank's tensor-parallel index;
	// replicas the data-parallel replicas the step's mean spans.
	batch    step.Batch
	tpRank   int
	replicas int
	cos, sin []float64 // rotary tables [positions, Dh/2]
	// recompute is this step's attention-sharing dice, per layer.
	recompute []bool
	stats     Stats
	normSq    float64
	// fill is each buffer's expert rows filled (Fill, kernels_rows.go), kept between ops.
	fill []*RowFill
	// scratch is kernels' working space, grown on first use and reused: steps after the
	// first allocate nothing for it.
	scratch scratch
	// bf16 runs the weight products in bfloat16 (SetBF16Products, kernels_bf16.go).
	bf16 bool
	// fp16 runs them in IEEE half (SetFP16Products), and lossScaling is the step's
	// dynamic loss scale (Options.LossScale; 0: none): kernels_fp16.go.
	fp16        bool
	lossScaling float64
	// fp16Bufs holds the half products' rounded operand copies between products, a set
	// per product running at once (gemmFP16).
	fp16Bufs sync.Pool
}

// NewKernels prepares the kernels of the rank at c of layout l for micro-batches of b.
func NewKernels(m *program.Model, b step.Batch, l step.Layout, c step.Coord) (*Kernels, error) {
	d, err := m.Dims()
	if err != nil {
		return nil, fmt.Errorf("exec: %w", err)
	}
	k := &Kernels{m: m, d: d, batch: b, tpRank: c.TP, replicas: max(l.DP, 1), recompute: make([]bool, d.L)}
	if m.Position == program.Rotary {
		k.growRope(b.SeqLen)
	}
	return k, nil
}

// BeginStep starts step number stepN of a run seeded with seed: it clears the loss terms
// and throws the attention-sharing dice of every layer (Recompute).
func (k *Kernels) BeginStep(seed, stepN int64) {
	k.stats = Stats{}
	share := k.m.Attention.RecomputeProbability()
	for l := range k.recompute {
		k.recompute[l] = l == 0 || share >= 1 || rng.New(rng.Key(seed, stepN, l, rng.PurposeAttnShare)).Bernoulli(share)
	}
}

// Recompute reports whether layer l computes its own attention weights this step (else it
// reuses the layer below's: share_weights).
func (k *Kernels) Recompute(l int) bool { return k.recompute[l] }

// Stats are the loss terms of the step so far.
func (k *Kernels) Stats() Stats { return k.stats }

// SplitTokens fills a micro-batch's token and target buffers from its B sequences of T+1
// tokens (as runtime/nn's Batch holds them), refusing an id outside a vocabulary of V.
func SplitTokens(tokens, targets, seqs []int32, B, T, V int) error {
	if len(seqs) != B*(T+1) {
		return fmt.Errorf("exec: a micro-batch of %d tokens, want %d", len(seqs), B*(T+1))
	}
	for r := 0; r < B; r++ {
		for t := 0; t < T; t++ {
			if tokens != nil {
				tokens[r*T+t] = seqs[r*(T+1)+t]
			}
			if targets != nil {
				targets[r*T+t] = seqs[r*(T+1)+t+1]
			}
		}
	}
	for _, v := range seqs {
		if v < 0 || int(v) >= V {
			return fmt.Errorf("exec: token id %d outside the vocabulary of %d", v, V)
		}
	}
	return nil
}

// SumSquares writes into out[0] the sum of squares of the gradients grads, in order (a
// grad_norm op of a one-rank program, where every value counts once), and keeps the sum
// unrounded for AdamW.
func (k *Kernels) SumSquares(out []float32, grads ...[]float32) {
	sq := sumSquares(grads, &k.scratch.terms)
	out[0] = float32(sq)
	k.normSq = sq
}

// sumSquares is Σ v² over the pieces: each piece's sum on one of the cores (into terms,
// reused from step to step), the pieces' sums added in order, so the result does not
// depend on how many cores there are.
func sumSquares(pieces [][]float32, terms *[]float64) float64 {
	sums := grow(terms, len(pieces))
	eachIndex(len(pieces), func(i int) {
		if sq, ok := sumSquaresVec(pieces[i]); ok {
			sums[i] = sq
			return
		}
		var sq float64
		for _, v := range pieces[i] {
			sq += float64(v) * float64(v)
		}
		sums[i] = sq
	})
	var sq float64
	for _, v := range sums {
		sq += v
	}
	return sq
}

// eachIndex runs f(i) for every i in [0, n) on the cores, each worker taking the next
// index as it comes free: for work items of unequal size (gradients of every shape, the
// experts' parts). The items must write disjoint outputs.
func eachIndex(n int, f func(i int)) {
	workers := min(runtime.GOMAXPROCS(0), n)
	if workers <= 1 {
		for i := 0; i < n; i++ {
			f(i)
		}
		return
	}
	var next atomic.Int64
	work := func() {
		for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
			f(i)
		}
	}
	var wg sync.WaitGroup
	for range workers - 1 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			work()
		}()
	}
	work()
	wg.Wait()
}

// AdamW runs one update of opt's parameters with the global gradient norm the step
// reduced: the sum of squares in normSq[0], or, on one rank (world 1), the unrounded sum
// SumSquares kept. Every group's update op calls it with its own optimizer; the learning
// rate and norm are the step's.
func (k *Kernels) AdamW(opt *optim.AdamW, normSq []float32, world int) error {
	global := k.globalNormSq(normSq, world)
	gradScale, global := k.unscale(global)
	info, err := opt.StepGlobal(gradScale, global) // the grad_norm op summed the squares
	k.stats.GradNorm, k.stats.LR = info.GradNorm, info.LR
	return k.skipOverflow(err)
}

// globalNormSq is the step's reduced sum of squares of the gradients: normSq[0], or on
// one rank (world 1) the unrounded sum SumSquares kept.
func (k *Kernels) globalNormSq(normSq []float32, world int) float64 {
	if world == 1 {
		return k.normSq
	}
	return float64(normSq[0])
}

// Int32 views a float32 buffer of the arena as the int32 values it holds (token ids,
// routing indices, counts).
func Int32(view []float32) []int32 { return asInt32(view) }

func asInt32(view []float32) []int32 {
	return unsafe.Slice((*int32)(unsafe.Pointer(unsafe.SliceData(view))), len(view))
}
