package exec

import (
	"fmt"
	"strings"

	"github.com/moec-dev/moec/compiler/params"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/internal/hugepages"
	"github.com/moec-dev/moec/runtime/optim"
)

// Executor runs one rank's step program on the CPU. Every buffer is a view of one arena
// per tier, at the offset the program's memory plan gave it: a step allocates nothing.
type Executor struct {
	// Kernels are the rank's kernels, which the executor calls op by op (a step program
	// written out as Go calls the same ones).
	*Kernels
	p    *step.Program
	f32  [][]float32 // each buffer's view (nil for int32 buffers)
	i32  [][]int32
	comm Comm
	// msg, when set, carries the rank's communication over a dist.Comm instead (NewOver).
	msg *messages
	// inFlight is the gradient all-reduce running beside the backward (overlap_reduce.go).
	inFlight *reduceInFlight
	// byParam finds a parameter's persistent buffer and gradient.
	param, grad map[params.ID]int
	// groups caches each collective group's members, found on first use.
	groups map[string]group
	// opt updates the parameter pieces optParams (SetOptimizer); counted says which part of
	// each counts toward the global gradient norm.
	opt       *optim.AdamW
	optParams []optim.Param
	counted   []countPiece
	pieces    []piece
	// normPieces is the grad_norm op's scratch: the counted parts of the gradients.
	normPieces [][]float32
	updated    bool
	// host is the unified cache's asynchronous host update (SetHostOverlap; nil when off).
	host *hostUpdate
	// arenaBytes is what New allocated for each tier's arena.
	arenaBytes [2]int64
	// teacher computes a distilling program's teacher logits (kernels_distill.go).
	teacher *Teacher
}

// ArenaBytes is the bytes New allocated for each tier's arena (step.Device, step.Host):
// every buffer of the program lives there.
func (e *Executor) ArenaBytes() [2]int64 { return e.arenaBytes }

// scratch holds reusable working arrays of the kernels (each kernel uses its own; terms
// holds the per-row or per-piece sums that the loss, the router and the gradient norm add
// in order, one op at a time).
type scratch struct {
	terms   []float64
	next    []int32
	fe, acc []float64
	dst     []float32
	w, b    [][]float32
	// order is the grouped products' expert order, largest first (eachExpertPart).
	order []int32
	// means are a LayerNorm backward's row means.
	means []float64
	// mla is latent attention's working space (kernels_mla.go): its rope tables and the
	// scores' gradient per (sequence, head).
	mla mlaScratch
}

func grow[T any](s *[]T, n int) []T {
	if cap(*s) < n {
		*s = make([]T, n)
	}
	*s = (*s)[:n]
	return *s
}

// Stats are the loss terms of one step, as runtime/nn reports them.
type Stats struct {
	// Each term is this rank's share of the step's mean over micro-batches and
	// data-parallel replicas: summed over the replicas (one rank per replica) it is the
	// step's value; on one rank it is the value. Under pipeline parallelism the cross-
	// entropy is the last stage's and each stage holds its layers' routing terms.
	Loss    float64 // CE + balance_loss·Balance + z_loss·ZLoss
	CE      float64 // mean cross-entropy over the step's tokens
	Balance float64 // Σ over MoE layers of E·Σ_e f_e·P_e
	ZLoss   float64 // Σ over MoE layers of mean logsumexp²
	Dropped int     // assignments dropped by capacity
	// Distill is a distillation stage's soft loss, the mean T²·KL(teacher ‖ student) over
	// the step's tokens; Loss is then hard·CE + soft·Distill + the routing terms.
	Distill float64
	// GradNorm and LR are the update's global gradient norm (before clipping) and
	// learning rate; zero without an optimizer.
	GradNorm, LR float64
	// Skipped says the step's gradients held an Inf or NaN under a loss scale
	// (Options.LossScale): the update was skipped, weights and moments untouched.
	Skipped bool
	// CacheMoved is the bytes the unified cache's fetches and write-backs copied between
	// the host and device tiers (summed over the ranks by Local.Step).
	CacheMoved int64
	// The unified cache's asynchronous host update (SetHostOverlap), summed over the ranks
	// by Local.Step: DeferredUnits is the units whose update this step handed to a helper
	// goroutine, to land while the next step runs; UpdateWaits the ops of this step that
	// waited for a unit of the previous step's update, UpdateWaitSeconds how long in all.
	DeferredUnits, UpdateWaits int
	UpdateWaitSeconds          float64
}

// New prepares p for execution: the arenas, each buffer's view and the rotary tables.
func New(p *step.Program, m *program.Model, comm Comm) (*Executor, error) {
	k, err := NewKernels(m, p.Batch, p.Layout, p.Coord)
	if err != nil {
		return nil, err
	}
	k.MarkPaddingUnread(p)
	e := &Executor{Kernels: k, p: p, comm: comm, param: map[params.ID]int{}, grad: map[params.ID]int{}}
	if len(p.Memory.Lifetime) != len(p.Buffers) {
		return nil, fmt.Errorf("exec: program %s/%s has %d lifetimes for %d buffers (step.Lifetimes computes them)", p.Model, p.Stage, len(p.Memory.Lifetime), len(p.Buffers))
	}
	var arenas [2][]float32
	for t := range arenas {
		arenas[t] = make([]float32, (p.Memory.Arena[t]+3)/4)
		e.arenaBytes[t] = 4 * int64(len(arenas[t]))
		// Weights, activations and moments on 2 MiB pages: the products stream them.
		hugepages.Back(arenas[t])
	}
	e.f32 = make([][]float32, len(p.Buffers))
	e.i32 = make([][]int32, len(p.Buffers))
	for i, b := range p.Buffers {
		if p.Memory.Lifetime[i][0] < 0 {
			continue // no op touches it
		}
		if b.Offset%4 != 0 {
			return nil, fmt.Errorf("exec: buffer %s at offset %d is not 4-byte aligned", b.Name, b.Offset)
		}
		view := arenas[b.Tier][b.Offset/4 : b.Offset/4+b.Elements()]
		if b.Int {
			e.i32[i] = asInt32(view)
		} else {
			e.f32[i] = view
		}
		if b.Param != nil {
			id := *b.Param
			id.Shard = params.Shard{}
			switch b.Kind {
			case step.KindParam:
				e.param[id] = i
			case step.KindGrad, step.KindActGrad:
				e.grad[id] = i
			}
		}
	}
	e.groups = map[string]group{}
	return e, nil
}

// Param is the buffer holding parameter id (nil when this rank does not hold it whole:
// another rank's expert, or a ZeRO-3 shard). With an asynchronous host update
// (SetHostOverlap, SetDelayedUpdate) call Settle before reading it.
func (e *Executor) Param(id params.ID) []float32 {
	if i, ok := e.param[id]; ok {
		return e.f32[i]
	}
	return nil
}

// Grad is the gradient buffer of parameter id (nil when this rank has none).
func (e *Executor) Grad(id params.ID) []float32 {
	if i, ok := e.grad[id]; ok {
		return e.f32[i]
	}
	return nil
}

// GradShard is this rank's ZeRO-2/3 shard of a parameter group's reduced gradient (the
// group's flat vector, Program.Groups), nil when the group's gradients are not sharded.
func (e *Executor) GradShard(group string) []float32 {
	for i, b := range e.p.Buffers {
		if b.Kind == step.KindGrad && b.Param == nil && strings.HasPrefix(b.Name, "grads["+group+"]") {
			return e.f32[i]
		}
	}
	return nil
}

// Options are what a step needs beyond its tokens.
type Options struct {
	Seed, Step int64
	// Inference makes every layer compute its own attention weights (no share_weights
	// dice), as runtime/nn's evaluation does: a distillation teacher's forward.
	Inference bool
	// LossScale, when positive, is the step's dynamic loss scale (fp16 training): the
	// loss gradients are seeded with it, the update unscales the gradients before their
	// norm, clipping and AdamW, and a step whose gradients hold an Inf or NaN skips the
	// update (Stats.Skipped). 0: no scaling.
	LossScale float64
}

// Forward and backward: Run executes the program's forward and backward ops (and the
// gradient reduction) for the micro-batches of tokens ([B·(T+1)] each, as runtime/nn's
// Batch holds them); with update it also runs the update ops.
func (e *Executor) Run(micro [][]int32, o Options) (Stats, error) {
	p := e.p
	if len(micro) != p.Batch.Micro {
		return Stats{}, fmt.Errorf("exec: %d micro-batches, the program takes %d", len(micro), p.Batch.Micro)
	}
	e.BeginStep(o.Seed, o.Step)
	e.lossScaling = o.LossScale
	if o.Inference {
		for l := range e.recompute {
			e.recompute[l] = true
		}
	}
	B, T := p.Batch.MicroBatch, p.Batch.SeqLen
	for i, b := range p.Buffers {
		if b.Kind != step.KindInput || e.i32[i] == nil {
			continue
		}
		mi, name := microOf(b.Name)
		if mi < 0 || mi >= len(micro) {
			return Stats{}, fmt.Errorf("exec: input %s names no micro-batch", b.Name)
		}
		var tokens, targets []int32
		switch name {
		case "tokens":
			tokens = e.i32[i]
		case "targets":
			targets = e.i32[i]
		}
		if err := SplitTokens(tokens, targets, micro[mi], B, T, e.d.V); err != nil {
			return Stats{}, fmt.Errorf("micro-batch %d: %w", mi, err)
		}
	}
	if _, err := e.fillTeacherLogits(micro, o); err != nil {
		return Stats{}, err
	}
	e.updated = false
	for i := range p.Ops {
		if err := e.runOp(i); err != nil {
			if e.inFlight != nil {
				_ = e.awaitReduce() // the step failed already: its error is the one to report
			}
			return e.stats, fmt.Errorf("exec: rank %d op %d (%s %s): %w", p.Rank, i, p.Ops[i].Phase, p.Ops[i].Kind, err)
		}
	}
	if r := e.inFlight; r != nil {
		if err := e.awaitReduce(); err != nil {
			return e.stats, fmt.Errorf("exec: rank %d (%s %s, beside the backward): %w", p.Rank, r.op.Phase, r.op.Kind, err)
		}
	}
	return e.stats, nil
}

// runOp runs op i of the step: after the gradient all-reduce in flight where it must
// follow it, or beside the ops after it where it is one (overlap_reduce.go).
func (e *Executor) runOp(i int) error {
	op := &e.p.Ops[i]
	if op.Phase == step.Update && e.opt == nil {
		return nil // forward and backward only (SetOptimizer runs the update)
	}
	if err := e.awaitBefore(op); err != nil {
		return err
	}
	if op.WhenRecompute && op.Layer >= 0 && !e.recompute[op.Layer] {
		e.skip(op)
		return nil
	}
	if e.host != nil {
		if err := e.awaitUnits(i); err != nil {
			return err
		}
	}
	if e.runsBeside(op) {
		return e.startBeside(op)
	}
	return e.run(op)
}

// skip leaves zeros in the outputs a skipped op would have overwritten.
func (e *Executor) skip(op *step.Op) {
	for i, b := range op.Out {
		if op.Accumulates(i) || contains(op.In, b) {
			continue
		}
		if e.f32[b] != nil {
			clear(e.f32[b])
		} else {
			clear(e.i32[b])
		}
	}
}

func contains(xs []int, x int) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

// microOf splits "tokens@3" into 3 and "tokens".
func microOf(name string) (int, string) {
	for i := len(name) - 1; i >= 0; i-- {
		if name[i] == '@' {
			n := 0
			for _, c := range name[i+1:] {
				if c < '0' || c > '9' {
					return -1, name
				}
				n = n*10 + int(c-'0')
			}
			return n, name[:i]
		}
	}
	return -1, name
}
