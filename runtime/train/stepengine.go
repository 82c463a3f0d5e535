package train

import (
	"fmt"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
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
// of this process. Each data-parallel replica takes its slice of every micro-batch the
// single rank would run, and routes it on its own.
type stepEngine struct {
	lc     *exec.Local
	layout step.Layout
	mb     int // sequences per micro-batch on a replica
	spec   *Spec
}

// stepLayout is the step program's layout for l.
func stepLayout(l Sharding) step.Layout {
	tp, pp := max(l.TP, 1), max(l.PP, 1)
	return step.Layout{DP: max(l.Ranks, 1) / (tp * pp), EP: max(l.EP, 1), TP: tp, PP: pp, ZeRO: l.ZeRO, OffloadOpt: l.Offload}
}

// validStepLayout checks l against the model with the step program's axes table.
func validStepLayout(m *program.Model, l Sharding) error {
	tp, pp := max(l.TP, 1), max(l.PP, 1)
	if l.Ranks < 1 || l.Ranks%(tp*pp) != 0 {
		return fmt.Errorf("%d ranks are not a multiple of tp %d × pp %d", l.Ranks, tp, pp)
	}
	sl := stepLayout(l)
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
	// recompute = full in the train block: each layer's forward runs again before its
	// backward (the same numbers, less memory); selective is not lowered and keeps all.
	sl.Recompute = spec.Train != nil && spec.Train.Memory.Recompute == program.RecomputeFull
	if sl.DP*sl.TP*sl.PP != l.Ranks {
		return nil, fmt.Errorf("%d ranks are not a multiple of tp %d × pp %d", l.Ranks, sl.TP, sl.PP)
	}
	if l.Cache != nil {
		return nil, fmt.Errorf("the step programs' executor does not run the unified cache yet (an offloaded optimizer it does: --offload)")
	}
	if spec.MicroBatch%sl.DP != 0 {
		return nil, fmt.Errorf("%d data-parallel replicas do not divide the micro-batch of %d sequences; each replica takes an equal slice", sl.DP, spec.MicroBatch)
	}
	mb := spec.MicroBatch / sl.DP
	timeout := opt.CollectiveTimeout
	if timeout <= 0 {
		timeout = dist.DefaultTimeout
	}
	lc, err := exec.NewLocal(spec.Model, step.Batch{MicroBatch: mb, SeqLen: spec.SeqLen, Micro: spec.Accum}, sl, timeout)
	if err != nil {
		return nil, err
	}
	if err := lc.SetOptimizer(cfg); err != nil {
		return nil, err
	}
	// The ranks start from the weights a single rank initialises (resume and growth
	// replace them).
	whole, err := wholeModel(opt.NewNet, spec, nil)
	if err != nil {
		return nil, err
	}
	if err := lc.Load(whole); err != nil {
		return nil, err
	}
	return &stepEngine{lc: lc, layout: sl, mb: mb, spec: spec}, nil
}

func (s *stepEngine) leader() bool { return true }

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
	st, err := s.lc.Step(micro, exec.Options{Seed: spec.Seed, Step: stepN})
	rec := StepRecord{Loss: st.Loss, CE: st.CE, Balance: st.Balance, ZLoss: st.ZLoss, Dropped: st.Dropped}
	info := optim.StepInfo{LR: st.LR, GradNorm: st.GradNorm}
	if spec.Train != nil {
		info.Clipped = spec.Train.Optimizer.ClipNorm > 0 && st.GradNorm > spec.Train.Optimizer.ClipNorm
	}
	if err != nil {
		return rec, info, fmt.Errorf("train: step %d: %w", stepN+1, err)
	}
	return rec, info, nil
}

func (s *stepEngine) tensors() ([]safetensors.Tensor, []safetensors.Tensor, error) {
	model, moments := s.lc.Tensors()
	return model, moments, nil
}

func (s *stepEngine) optStep() int64 { return s.lc.OptStep() }

func (s *stepEngine) load(model, moments []safetensors.Tensor, stepN int64) error {
	if err := checkManifest(s.spec.Model, model); err != nil {
		return err
	}
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
	return s.lc.Load(whole)
}

func (s *stepEngine) stop(local bool) (bool, error) { return local, nil }

// evalNet is the hand-written model holding the trained weights: validation runs there.
func (s *stepEngine) evalNet(newNet NewNetFunc, spec *Spec) (Net, error) {
	if newNet == nil {
		newNet = newNNNet
	}
	net, err := newNet(spec.Model, spec.Seed)
	if err != nil {
		return nil, err
	}
	model, _ := s.lc.Tensors()
	return net, LoadParams(net.Params(), model, "the step programs' run")
}

// report is each rank's memory: its arenas, exactly as its program's memory plan sized
// them (the executor allocates nothing else for a step), by the kind of buffer live at
// the device peak.
func (s *stepEngine) report() []RankMemory {
	var out []RankMemory
	for r, p := range s.lc.Progs {
		rm := RankMemory{Rank: r}
		for kind, bytes := range p.Memory.ByKind {
			rm.Measured[dist.Device][componentOf(kind)] += bytes
		}
		rm.Measured[dist.Host][dist.Optimizer] = p.Memory.Arena[step.Host]
		out = append(out, rm)
	}
	return out
}

func componentOf(k step.Kind) dist.Component {
	switch k {
	case step.KindParam, step.KindGathered:
		return dist.Params
	case step.KindGrad:
		return dist.Grads
	case step.KindOptimizer:
		return dist.Optimizer
	case step.KindDispatch:
		return dist.Dispatch
	case step.KindActivation, step.KindActGrad:
		return dist.Activations
	}
	return dist.Temp
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
