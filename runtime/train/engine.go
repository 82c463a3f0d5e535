package train

import (
	"errors"
	"fmt"
	"math"
	"sync"

	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/runtime/data"
	"github.com/moec-dev/moec/runtime/dist"
	"github.com/moec-dev/moec/runtime/nn"
	"github.com/moec-dev/moec/runtime/optim"
	"github.com/moec-dev/moec/runtime/safetensors"
	"github.com/moec-dev/moec/runtime/weights"
)

// engine is how Run trains: one model in this process (single), or the ranks of a sharded
// run (group). Calls that gather or reduce are collective: under MPI every process makes
// them in the same order.
type engine interface {
	leader() bool // writes the run's files
	step(step int64, spec *Spec, corpus *data.Corpus) (StepRecord, optim.StepInfo, error)
	// tensors returns the whole model and its optimizer moments in the single-rank
	// layout (on the leader; nil elsewhere).
	tensors() (model, moments []safetensors.Tensor, err error)
	optStep() int64
	load(model, moments []safetensors.Tensor, optStep int64) error
	// initialise sets the weights by fill, which writes the whole model's parameters in
	// the single-rank layout (growing a stage from the one before).
	initialise(newNet NewNetFunc, spec *Spec, fill func(params []*nn.Param) error) error
	// stop agrees on whether to stop: true on every rank when any rank asks.
	stop(local bool) (bool, error)
	// evalNet returns a model holding the trained weights for validation on the leader
	// (nil elsewhere); collective, as it may assemble the weights.
	evalNet(newNet NewNetFunc, spec *Spec) (Net, error)
	report() []RankMemory
}

// single is the one-process, one-model engine.
type single struct {
	net    Net
	params []*nn.Param
	adam   *optim.AdamW
}

func (s *single) leader() bool { return true }

func (s *single) step(step int64, spec *Spec, corpus *data.Corpus) (StepRecord, optim.StepInfo, error) {
	B, T := spec.MicroBatch, spec.SeqLen
	s.net.ZeroGrad()
	var rec StepRecord
	for micro := 0; micro < spec.Accum; micro++ {
		toks, err := corpus.Batch(spec.Seed, step, micro*B, B, T)
		if err != nil {
			return rec, optim.StepInfo{}, err
		}
		st, err := s.net.ForwardBackward(nn.Batch{B: B, T: T, Tokens: toks}, nn.StepOptions{Seed: spec.Seed, Step: step, Train: true})
		if err != nil {
			return rec, optim.StepInfo{}, fmt.Errorf("train: step %d: %w", step+1, err)
		}
		addStats(&rec, st, spec.Accum)
	}
	if !finite(rec.Loss) {
		return rec, optim.StepInfo{}, nil
	}
	info, err := s.adam.Step(1 / float64(spec.Accum))
	if err != nil {
		return rec, info, &updateError{err}
	}
	// Auxiliary-loss-free balancing moves the routing bias by the step's loads.
	if u, ok := s.net.(routerBiasUpdater); ok && rec.ExpertTokens != nil {
		if err := u.UpdateRouterBias(rec.ExpertTokens); err != nil {
			return rec, info, fmt.Errorf("train: step %d: %w", step+1, err)
		}
	}
	return rec, info, nil
}

// routerBiasUpdater is a Net with auxiliary-loss-free routing biases (nn.Model).
type routerBiasUpdater interface {
	UpdateRouterBias(loads [][]int) error
}

// updateError is the optimizer refusing a non-finite gradient.
type updateError struct{ err error }

func (e *updateError) Error() string { return e.err.Error() }
func (e *updateError) Unwrap() error { return e.err }

// newEngine builds the engine opt asks for: a single model, or the ranks of its layout.
func newEngine(opt Options, spec *Spec, cfg optim.Config) (engine, error) {
	if opt.DelayedUpdate && (opt.Layout == nil || opt.Layout.Cache == nil || !opt.Layout.StepPrograms()) {
		e := diag.Runtimef(diag.CodeBadRunOption, "--delayed-update: the one-step-delayed update needs host-held weights updated apart from the step: the unified cache run by step programs")
		e.Suggestion = "add --cache-budget (and --engine step), or drop --delayed-update"
		return nil, e
	}
	if opt.Device != "" {
		return newGPUEngine(spec, cfg, opt)
	}
	// Any layout, even of one rank, runs as a group: offload and the unified cache are
	// the group's, and it meters the memory the CLI reports.
	if opt.Layout == nil && opt.Comm == nil {
		newNet := opt.NewNet
		if newNet == nil {
			newNet = newNNNet
		}
		net, err := newNet(spec.Model, spec.Seed)
		if err != nil {
			var ue *nn.UnsupportedError
			if errors.As(err, &ue) {
				return nil, diag.RuntimeWrap(diag.CodeUnsupportedFeature, err, "cannot train model %s", spec.Model.Name)
			}
			return nil, fmt.Errorf("train: building model %s: %w", spec.Model.Name, err)
		}
		if err := setBF16Products(net, spec); err != nil {
			return nil, err
		}
		params := net.Params()
		oparams := make([]optim.Param, len(params))
		for i, p := range params {
			oparams[i] = optim.Param{Name: p.Name, Shape: p.Shape, W: p.W, G: p.G}
		}
		adam, err := optim.NewAdamW(cfg, oparams)
		if err != nil {
			return nil, diag.RuntimeWrap(diag.CodeBadRunOption, err, "train %s", spec.Train.Name)
		}
		return &single{net: net, params: params, adam: adam}, nil
	}
	l := Sharding{Ranks: 1, EP: 1}
	if opt.Layout != nil {
		l = *opt.Layout
	}
	comms := []dist.Comm{opt.Comm}
	if opt.Comm != nil {
		l.Ranks = opt.Comm.Size()
	}
	if err := ValidLayout(spec.Model, l); err != nil {
		if l.StepPrograms() {
			return nil, stepLayoutError(spec, l, err)
		}
		return nil, diag.RuntimeWrap(diag.CodeBadRunOption, err, "layout for %s", spec.Model.Name)
	}
	if l.StepPrograms() {
		// The validation after the last step runs on the hand-written model: a model it
		// does not compute is refused before the first step, not after the last.
		if _, err := nn.ParamList(spec.Model); err != nil {
			var ue *nn.UnsupportedError
			if errors.As(err, &ue) {
				return nil, diag.RuntimeWrap(diag.CodeUnsupportedFeature, err, "cannot train model %s: its validation runs on the CPU runtime", spec.Model.Name)
			}
		}
		e, err := newStepEngine(spec, cfg, l, opt)
		if re, ok := err.(*diag.Diagnostic); ok { // a diagnostic of its own (--delayed-update)
			return nil, re
		}
		if err != nil {
			return nil, stepLayoutError(spec, l, err)
		}
		return e, nil
	}
	if spec.MicroBatch%l.Ranks != 0 {
		return nil, diag.Runtimef(diag.CodeBadRunOption, "%d ranks do not divide the micro-batch of %d sequences; each rank takes an equal slice", l.Ranks, spec.MicroBatch)
	}
	if opt.Comm == nil {
		var err error
		if comms, err = dist.Local(l.Ranks, opt.CollectiveTimeout); err != nil {
			return nil, err
		}
	}
	g, err := newGroup(spec, cfg, comms, l)
	if g != nil {
		g.hook = opt.RankHook
	}
	if err != nil {
		var ue *nn.UnsupportedError
		if errors.As(err, &ue) {
			return nil, diag.RuntimeWrap(diag.CodeUnsupportedFeature, err, "cannot train model %s", spec.Model.Name)
		}
		return nil, err
	}
	return g, nil
}

func (s *single) tensors() ([]safetensors.Tensor, []safetensors.Tensor, error) {
	return ParamTensors(s.params), s.adam.State(), nil
}

func (s *single) optStep() int64 { return s.adam.StepCount() }

func (s *single) load(model, moments []safetensors.Tensor, step int64) error {
	if err := LoadParams(s.params, model, "checkpoint"); err != nil {
		return err
	}
	if moments == nil {
		return nil
	}
	return s.adam.LoadState(moments, step)
}

func (s *single) initialise(_ NewNetFunc, _ *Spec, fill func([]*nn.Param) error) error {
	return fill(s.params)
}

func (s *single) stop(local bool) (bool, error)          { return local, nil }
func (s *single) evalNet(NewNetFunc, *Spec) (Net, error) { return s.net, nil }
func (s *single) report() []RankMemory                   { return nil }

// group runs the ranks of a sharded run that live in this process: all of them for
// in-process ranks, one under MPI.
type group struct {
	ranks []*rank
	comms []dist.Comm
	lead  bool
	last  []safetensors.Tensor // the leader's last assembled weights (evaluation)
	// assembled is set on every rank once the weights have been assembled, so all ranks
	// agree whether evaluation has to assemble them first.
	assembled bool
	layout    Sharding
	hook      func(rank int, step int64) error
}

// newGroup builds the ranks this process runs: comms are their world communicators.
func newGroup(spec *Spec, cfg optim.Config, comms []dist.Comm, l Sharding) (*group, error) {
	g := &group{comms: comms, ranks: make([]*rank, len(comms)), lead: comms[0].Rank() == 0, layout: l}
	err := g.each(func(i int, c dist.Comm) (err error) {
		if g.ranks[i], err = newRank(spec.Model, spec.Seed, cfg, c, l); err != nil {
			return err
		}
		return setBF16Products(g.ranks[i].model, spec)
	})
	return g, err
}

// each runs f for every local rank concurrently. A rank that fails aborts the world so
// the others' collectives return instead of waiting; the first failure is returned,
// preferring a rank's own error to the "rank k failed" errors it caused elsewhere.
func (g *group) each(f func(i int, c dist.Comm) error) error {
	errs := make([]error, len(g.comms))
	var wg sync.WaitGroup
	for i, c := range g.comms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				if p := recover(); p != nil {
					errs[i] = fmt.Errorf("rank %d panicked: %v", c.Rank(), p)
					c.Abort(errs[i])
				}
			}()
			if errs[i] = f(i, c); errs[i] != nil {
				c.Abort(errs[i])
			}
		}()
	}
	wg.Wait()
	var first error
	for _, err := range errs {
		var de *dist.Error
		if err != nil && !errors.As(err, &de) {
			return err
		}
		if first == nil {
			first = err
		}
	}
	return first
}

func (g *group) leader() bool { return g.lead }

func (g *group) step(step int64, spec *Spec, corpus *data.Corpus) (StepRecord, optim.StepInfo, error) {
	B, T := spec.MicroBatch, spec.SeqLen
	R := g.comms[0].Size()
	per := B / R
	recs := make([]StepRecord, len(g.ranks))
	infos := make([]optim.StepInfo, len(g.ranks))
	err := g.each(func(i int, c dist.Comm) error {
		r := g.ranks[i]
		r.zeroGrad()
		var rec StepRecord
		for micro := 0; micro < spec.Accum; micro++ {
			if g.hook != nil {
				if err := g.hook(c.Rank(), step); err != nil {
					return fmt.Errorf("train: rank %d step %d: %w", c.Rank(), step+1, err)
				}
			}
			// Rank k takes the k-th slice of the micro-batch the single rank would run.
			toks, err := corpus.Batch(spec.Seed, step, micro*B+c.Rank()*per, per, T)
			if err != nil {
				return err
			}
			st, err := r.forwardBackward(nn.Batch{B: per, T: T, Tokens: toks}, nn.StepOptions{Seed: spec.Seed, Step: step, Train: true})
			if err != nil {
				return fmt.Errorf("train: rank %d step %d: %w", c.Rank(), step+1, err)
			}
			addStats(&rec, st, spec.Accum)
		}
		// Each rank's loss is over its own tokens; the step's is their mean.
		v := []float64{rec.Loss / float64(R), rec.CE / float64(R), rec.ZLoss / float64(R)}
		if err := c.AllReduceF64(v); err != nil {
			return err
		}
		rec.Loss, rec.CE, rec.ZLoss = v[0], v[1], v[2]
		recs[i] = rec
		if !finite(rec.Loss) {
			return nil
		}
		var err error
		if infos[i], err = r.update(spec.Accum); err != nil && !isDist(err) {
			err = &updateError{err}
		}
		return err
	})
	return recs[0], infos[0], err
}

func (g *group) tensors() ([]safetensors.Tensor, []safetensors.Tensor, error) {
	var model, moments []safetensors.Tensor
	err := g.each(func(i int, c dist.Comm) error {
		m, o, err := g.ranks[i].tensors()
		if c.Rank() == 0 {
			model, moments = m, o
		}
		return err
	})
	if err == nil {
		g.last, g.assembled = model, true
	}
	return model, moments, err
}

func (g *group) optStep() int64 { return g.ranks[0].opt.StepCount() }

func (g *group) load(model, moments []safetensors.Tensor, step int64) error {
	// Each rank reads only its own tensors, so the whole set is checked first: a tensor
	// missing, duplicated, mis-shaped or foreign fails loudly instead of being skipped.
	if err := checkManifest(g.ranks[0].model.Config(), model); err != nil {
		return err
	}
	return g.each(func(i int, _ dist.Comm) error { return g.ranks[i].load(model, moments, step) })
}

// initialise fills a whole single-rank model and loads it into the ranks, so a sharded
// run starts exactly where a single rank would.
func (g *group) initialise(newNet NewNetFunc, spec *Spec, fill func([]*nn.Param) error) error {
	whole, err := wholeModel(newNet, spec, fill)
	if err != nil {
		return err
	}
	return g.load(whole, nil, 0)
}

// wholeModel is a freshly initialised single-rank model, filled by fill when it is not
// nil (growth), as tensors: what every sharded engine loads its ranks from.
func wholeModel(newNet NewNetFunc, spec *Spec, fill func([]*nn.Param) error) ([]safetensors.Tensor, error) {
	if newNet == nil {
		// The default model's weights come from runtime/weights (the bits nn.New draws),
		// where a step program written out as Go takes them from too.
		ts, err := weights.Initial(spec.Model, spec.Seed)
		if err != nil {
			return nil, err
		}
		if fill != nil {
			ps := make([]*nn.Param, len(ts))
			for i, t := range ts {
				ps[i] = &nn.Param{ID: t.ID, Name: t.Name, Shape: t.Shape, W: t.W, Expert: t.ID.Role.Routed()}
			}
			if err := fill(ps); err != nil {
				return nil, err
			}
		}
		return weights.Safetensors(ts), nil
	}
	full, err := newNet(spec.Model, spec.Seed)
	if err != nil {
		return nil, err
	}
	if fill != nil {
		if err := fill(full.Params()); err != nil {
			return nil, err
		}
	}
	return ParamTensors(full.Params()), nil
}

func (g *group) stop(local bool) (bool, error) {
	flags := make([]bool, len(g.ranks))
	err := g.each(func(i int, c dist.Comm) error {
		v := []float64{0}
		if local {
			v[0] = 1
		}
		if err := c.AllReduceF64(v); err != nil {
			return err
		}
		flags[i] = v[0] > 0
		return nil
	})
	return flags[0], err
}

func (g *group) evalNet(newNet NewNetFunc, spec *Spec) (Net, error) {
	if !g.assembled { // a resumed run that had nothing left to train saved nothing
		if _, _, err := g.tensors(); err != nil {
			return nil, err
		}
	}
	if !g.lead {
		return nil, nil
	}
	return assembledNet(newNet, spec, g.last, "the sharded run")
}

// assembledNet is a model built by newNet (runtime/nn's by default) holding the whole
// tensors a sharded engine assembled, for validation; what names them in errors.
func assembledNet(newNet NewNetFunc, spec *Spec, whole []safetensors.Tensor, what string) (Net, error) {
	if newNet == nil {
		newNet = newNNNet
	}
	net, err := newNet(spec.Model, spec.Seed)
	if err != nil {
		return nil, err
	}
	return net, LoadParams(net.Params(), whole, what)
}

// RankMemory is what one rank held at most, per component and tier (the CLI sets it next
// to the plan's prediction).
type RankMemory struct {
	Rank     int
	Measured [dist.NumTiers][dist.NumComponents]int64
	// Arena is, on a step-program rank, the bytes its executor allocated per tier: one
	// arena each, holding every buffer (zero on the hand-written engine's ranks).
	Arena [dist.NumTiers]int64
	// The unified cache's device page pool: unit lookups that hit and missed, and the
	// units it evicted (zero without the cache).
	CacheHits, CacheMisses, CacheEvictions int64
}

func (g *group) report() []RankMemory {
	var out []RankMemory
	for i, r := range g.ranks {
		rm := RankMemory{Rank: g.comms[i].Rank()}
		if c := r.cache; c != nil {
			rm.CacheHits, rm.CacheMisses, rm.CacheEvictions = c.Stats()
		}
		for t := dist.Tier(0); t < dist.NumTiers; t++ {
			for c := dist.Component(0); c < dist.NumComponents; c++ {
				rm.Measured[t][c] = r.meter.Peak(t, c)
			}
		}
		out = append(out, rm)
	}
	return out
}

func isDist(err error) bool {
	var de *dist.Error
	return errors.As(err, &de)
}

func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

// stepLayoutError is a step-program engine's refusal as a diagnostic at the stage's
// declaration (the layout applies to it): E0509 for a layout that does not divide the
// model, E0511 for a cache budget too small for it, E0510 for a feature the step program
// does not lower at that layout.
func stepLayoutError(spec *Spec, l Sharding, err error) error {
	var at diag.Range
	if spec.Train != nil {
		if st, e := spec.Train.LookupStage(spec.Stage); e == nil && st != nil {
			at = st.Decl.Range()
		}
	}
	var le *step.LayoutError
	if !errors.As(err, &le) {
		return diag.RuntimeWrap(diag.CodeBadRunOption, err, "layout %s for %s", l, spec.Model.Name)
	}
	return le.Diagnostic(at, fmt.Sprintf("stage %s of %s cannot train at %s", spec.Stage, spec.Model.Name, l))
}
