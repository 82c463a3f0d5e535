package train

import (
	"errors"
	"fmt"

	"github.com/moec-dev/moec/compiler/plan"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/internal/pagepool"
	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/runtime/data"
	"github.com/moec-dev/moec/runtime/dist"
	"github.com/moec-dev/moec/runtime/exec"
	"github.com/moec-dev/moec/runtime/nn"
	"github.com/moec-dev/moec/runtime/optim"
	"github.com/moec-dev/moec/runtime/safetensors"
	"github.com/moec-dev/moec/runtime/weights"
)

// stepEngine trains through step programs (compiler/step, executed by runtime/exec): any
// layout of data, expert, tensor and pipeline parallelism and ZeRO, its ranks goroutines
// of this process, or under mpirun one rank per process (Options.Comm). Each
// data-parallel replica takes its slice of every micro-batch the single rank would run,
// and routes it on its own.
type stepEngine struct {
	lc     *exec.Local
	comm   dist.Comm // the MPI world, or nil for in-process ranks
	layout step.Layout
	mb     int // sequences per micro-batch on a replica
	spec   *Spec
	steps  int64 // steps run by this engine
	// loss is fp16 training's dynamic loss scaler (nil for bf16 and fp32: fp16.go).
	loss *lossScaler
	// last is the weights the last tensors call assembled (on rank 0 under MPI), valid
	// while assembled: evaluation reuses them instead of assembling again.
	last      []safetensors.Tensor
	assembled bool
}

// stepLayout is the step program's layout for l.
func stepLayout(l Sharding) step.Layout {
	tp, pp := max(l.TP, 1), max(l.PP, 1)
	sl := step.Layout{DP: max(l.Ranks, 1) / (tp * pp), EP: max(l.EP, 1), TP: tp, PP: pp, ZeRO: l.ZeRO, OffloadOpt: l.Offload,
		SequenceParallel: l.SP && tp > 1, GradBucket: l.GradBucket}
	if c := l.Cache; c != nil {
		// The step program's unified cache: every state in the host tier, units fetched
		// into a device working set the budget bounds (compiler/step's cache.go).
		sl.Cache = step.Cache{Budget: c.Budget, Page: c.Page, Eviction: pagepool.Policy(c.Eviction)}
	}
	return sl
}

// validStepLayout checks l against the model with the step program's axes table.
func validStepLayout(m *program.Model, l Sharding) error {
	tp, pp := max(l.TP, 1), max(l.PP, 1)
	if l.Ranks < 1 || l.Ranks%(tp*pp) != 0 {
		return fmt.Errorf("%d ranks are not a multiple of tp %d × pp %d", l.Ranks, tp, pp)
	}
	sl := stepLayout(l)
	sl.SequenceParallel = false // what sp divides is the batch's: lowering checks it
	if sl.DP%sl.EP != 0 {
		return fmt.Errorf("expert-parallel size %d must divide the %d data-parallel ranks", sl.EP, sl.DP)
	}
	d, err := m.Dims()
	if err != nil {
		return err
	}
	if ps := step.Check(sl, d, step.Batch{MicroBatch: 1, SeqLen: 1, Micro: 1}); len(ps) > 0 {
		return &step.LayoutError{Problems: ps}
	}
	return nil
}

func newStepEngine(spec *Spec, cfg optim.Config, l Sharding, opt Options) (*stepEngine, error) {
	sl := stepLayout(l)
	// recompute in the train block: full runs each layer's forward again before its
	// backward, selective the attention core before its use (the same numbers, less memory).
	if spec.Train != nil {
		sl.Recompute = spec.Train.Memory.Recompute
	}
	sl.Distill = stepDistill(spec) // a distillation stage's loss (distill.go)
	if sl.DP*sl.TP*sl.PP != l.Ranks {
		return nil, fmt.Errorf("%d ranks are not a multiple of tp %d × pp %d", l.Ranks, sl.TP, sl.PP)
	}
	if spec.MicroBatch%sl.DP != 0 {
		return nil, fmt.Errorf("%d data-parallel replicas do not divide the micro-batch of %d sequences; each replica takes an equal slice", sl.DP, spec.MicroBatch)
	}
	mb := spec.MicroBatch / sl.DP
	timeout := opt.CollectiveTimeout
	if timeout <= 0 {
		timeout = dist.DefaultTimeout
	}
	b := step.Batch{MicroBatch: mb, SeqLen: spec.SeqLen, Micro: spec.Accum}
	var lc *exec.Local
	var err error
	if opt.Comm != nil {
		lc, err = exec.NewRankOf(spec.Model, b, sl, opt.Comm)
	} else {
		lc, err = exec.NewLocal(spec.Model, b, sl, timeout)
	}
	if err != nil {
		return nil, err
	}
	if err := lc.SetOptimizer(cfg); err != nil {
		return nil, err
	}
	lc.SetBF16Products(bf16Products(spec))
	var loss *lossScaler
	if fp16Products(spec) {
		if opt.DelayedUpdate {
			return nil, refuseFP16(spec, "--delayed-update", "drop --delayed-update")
		}
		lc.SetFP16Products(true)
		loss = newLossScaler(opt.InitialLossScale)
	}
	// The unified cache's host update lands unit by unit while the next step's forward
	// fetches them (where the layout allows it: ZeRO 0 or 3); the numbers are the same.
	if _, err := lc.SetHostOverlap(sl.Cache.On() && !opt.SerialHostUpdate); err != nil {
		return nil, err
	}
	if opt.DelayedUpdate {
		applies, err := lc.SetDelayedUpdate(true)
		if err != nil {
			return nil, err
		}
		if !applies {
			e := diag.Runtimef(diag.CodeBadRunOption, "--delayed-update: the one-step-delayed update runs under the unified cache at ZeRO 0 or 3 only (this layout is %s)", sl)
			e.Suggestion = "use --zero 0 or --zero 3, or drop --delayed-update"
			return nil, e
		}
	}
	// The ranks start from the weights a single rank initialises (resume and growth
	// replace them): runtime/weights' drawn a tensor at a time into the arenas, or the
	// whole model a NewNet builds.
	if opt.NewNet == nil {
		if err := lc.LoadInitial(spec.Seed); err != nil {
			return nil, err
		}
	} else {
		whole, err := wholeModel(opt.NewNet, spec, nil)
		if err != nil {
			return nil, err
		}
		if err := lc.Load(whole); err != nil {
			return nil, err
		}
	}
	// The initial weights, dropped once loaded, go back to the system, and the collector
	// keeps the heap near the ranks' memory plans (exec.Local.LimitHeap; GOGC in
	// the environment overrides it).
	lc.LimitHeap()
	return &stepEngine{lc: lc, comm: opt.Comm, layout: sl, mb: mb, spec: spec, loss: loss}, nil
}

func (s *stepEngine) leader() bool { return s.comm == nil || s.comm.Rank() == 0 }

func (s *stepEngine) step(stepN int64, spec *Spec, corpus *data.Corpus) (StepRecord, optim.StepInfo, error) {
	B, T, M := spec.MicroBatch, spec.SeqLen, spec.Accum
	micro := make([][]int32, s.layout.DP*M)
	for r := 0; r < s.layout.DP; r++ {
		for m := 0; m < M; m++ {
			toks, err := corpus.Batch(spec.Seed, stepN, m*B+r*s.mb, s.mb, T)
			if err != nil {
				return StepRecord{}, optim.StepInfo{}, err
			}
			micro[r*M+m] = toks
		}
	}
	s.assembled = false
	o := exec.Options{Seed: spec.Seed, Step: stepN}
	if s.loss != nil {
		o.LossScale = s.loss.Scale
	}
	st, err := s.lc.Step(micro, o)
	s.steps++
	rec := StepRecord{Loss: st.Loss, CE: st.CE, Balance: st.Balance, ZLoss: st.ZLoss, Dropped: st.Dropped, SoftLoss: st.Distill}
	info := optim.StepInfo{LR: st.LR, GradNorm: st.GradNorm}
	if spec.Train != nil {
		info.Clipped = spec.Train.Optimizer.ClipNorm > 0 && st.GradNorm > spec.Train.Optimizer.ClipNorm
	}
	if err == nil && s.loss != nil {
		err = s.scaleStep(&rec, &info, st.Skipped, s.optStep())
	}
	if err != nil {
		err = fmt.Errorf("train: step %d: %w", stepN+1, err)
		if _, diverged := errors.AsType[*optim.NonFiniteError](err); diverged {
			err = &updateError{err} // a diverged run, which Run reports as E0613
		}
		return rec, info, err
	}
	return rec, info, nil
}

// tensors assembles the whole model and moments; under MPI every rank takes part and rank
// 0 gets them.
func (s *stepEngine) tensors() ([]safetensors.Tensor, []safetensors.Tensor, error) {
	model, moments, err := s.lc.Tensors()
	if err != nil {
		return nil, nil, fmt.Errorf("train: %w", err)
	}
	s.last, s.assembled = model, true
	return model, moments, nil
}

func (s *stepEngine) optStep() int64 { return s.lc.OptStep() }

func (s *stepEngine) scaler() *lossScaler { return s.loss }

func (s *stepEngine) load(model, moments []safetensors.Tensor, stepN int64) error {
	if err := checkManifest(s.spec.Model, model); err != nil {
		return err
	}
	s.assembled = false
	if err := s.lc.Load(model); err != nil {
		return err
	}
	if moments == nil {
		return nil
	}
	return s.lc.LoadMoments(moments, stepN)
}

// initialise fills a whole single-rank model and loads it into the ranks, so the run
// starts exactly where a single rank would.
func (s *stepEngine) initialise(newNet NewNetFunc, spec *Spec, fill func([]*nn.Param) error) error {
	whole, err := wholeModel(newNet, spec, fill)
	if err != nil {
		return err
	}
	s.assembled = false
	return s.lc.Load(whole)
}

// stop agrees on stopping: under MPI every rank stops when any asks.
func (s *stepEngine) stop(local bool) (bool, error) {
	if s.comm == nil {
		return local, nil
	}
	v := []float64{0}
	if local {
		v[0] = 1
	}
	if err := s.comm.AllReduceF64(v); err != nil {
		return false, err
	}
	return v[0] > 0, nil
}

// evalNet is the hand-written model holding the trained weights: validation runs there.
func (s *stepEngine) evalNet(newNet NewNetFunc, spec *Spec) (Net, error) {
	if !s.assembled { // collective under MPI: every rank takes part
		if _, _, err := s.tensors(); err != nil {
			return nil, err
		}
	}
	if !s.leader() {
		return nil, nil
	}
	return assembledNet(newNet, spec, s.last, "the step programs' run")
}

// report is each rank's memory: what its program's memory plan holds at each tier's peak,
// per component (plan.MemoryOf, the reading the local planner predicts with), and the
// arenas its executor allocated (the executor allocates nothing else for a step; under
// mpirun only this process's rank has one here). The cache's hits, misses and evictions
// are the program's per step, times the steps run.
func (s *stepEngine) report() []RankMemory {
	var out []RankMemory
	for r, p := range s.lc.Progs {
		rm := RankMemory{Rank: r}
		pm := plan.MemoryOf(p)
		for t, tier := range [2]dist.Tier{dist.Device, dist.Host} {
			for c := dist.Component(0); c < dist.NumComponents; c++ {
				rm.Measured[tier][c] = pm.Component(step.Tier(t), c.String())
			}
		}
		for _, op := range p.Ops {
			switch op.Kind {
			case step.OpCacheFetch:
				rm.CacheMisses += s.steps
			case step.OpCacheEvict:
				rm.CacheEvictions += s.steps
			}
		}
		rm.CacheHits = int64(p.CacheHits) * s.steps
		if ex := s.executorOf(r); ex != nil {
			arena := ex.ArenaBytes()
			rm.Arena[dist.Device], rm.Arena[dist.Host] = arena[step.Device], arena[step.Host]
		}
		out = append(out, rm)
	}
	return out
}

// InitialWeights are stage model m's freshly initialised weights for seed, as tensors in
// the single-rank layout: where every engine starts a first stage (runtime/weights, where
// the generated step program starts too).
func InitialWeights(m *program.Model, seed int64) ([]safetensors.Tensor, error) {
	return wholeModel(nil, &Spec{Model: m, Seed: seed}, nil)
}

// GrownWeights are stage model m's weights grown by g from the final checkpoint in from (a
// run folder or checkpoint), as Run grows a stage from the one before (weights.Grown).
func GrownWeights(from string, m *program.Model, g program.Grow, seed int64) ([]safetensors.Tensor, error) {
	ts, err := weights.Grown(from, m, g, seed)
	if err != nil {
		return nil, err
	}
	return weights.Safetensors(ts), nil
}

// executorOf is rank r's executor when it runs in this process, else nil.
func (s *stepEngine) executorOf(r int) *exec.Executor {
	if s.comm != nil {
		if r == s.comm.Rank() && len(s.lc.Ranks) == 1 {
			return s.lc.Ranks[0]
		}
		return nil
	}
	if r < len(s.lc.Ranks) {
		return s.lc.Ranks[r]
	}
	return nil
}
