package driver

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/moec-dev/moec/compiler/features"
	"github.com/moec-dev/moec/compiler/plan"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/internal/pagepool"
	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/runtime/train"
)

// LayoutRequest is what a user asked of a run's layout (moec run's layout flags; zero
// values leave a choice to the file and the plan).
type LayoutRequest struct {
	Ranks, EP, ZeRO int
	ZeROSet         bool   // ZeRO was given (0 is a valid choice)
	Offload         bool   // optimizer states in the host tier
	Budget          string // unified cache device budget ("" = a quarter of a rank's weights)
	TP, PP          int    // tensor- and pipeline-parallel sizes (0 = none)
	Program         bool   // --step-programs: the default engine, asked for by name
	// Engine picks the engine: "" (EngineStep's rule: step programs wherever they lower
	// the layout), EngineStep (step programs, refusing a layout they do not lower) or
	// EngineHandwritten (the hand-written sharded engine, the step programs' oracle).
	Engine string
	SP     bool // sequence parallelism (needs TP > 1)
}

// The engines `moec run --engine` names.
const (
	EngineStep        = "step"
	EngineHandwritten = "handwritten"
)

// DefaultCachePage is the unified cache's page when neither the file nor a flag gives one:
// the language's default (memory = unified_cache(page = 4MiB)).
const DefaultCachePage = 4 << 20

// UsageError is a layout request that is wrong on its own (the command line alone), as
// opposed to one that does not fit the file.
type UsageError struct{ Err error }

func (e UsageError) Error() string { return e.Err.Error() }
func (e UsageError) Unwrap() error { return e.Err }

// Usage marks err as a UsageError.
func Usage(err error) error {
	if err == nil {
		return nil
	}
	return UsageError{err}
}

// IsUsage reports whether err is a UsageError.
func IsUsage(err error) bool {
	var u UsageError
	return errors.As(err, &u)
}

// RunLayout decides how a run is sharded and which engine trains it: the ranks come from
// --ranks, from mpirun, or from the train block's `cluster local { ranks = N }`; the
// expert-parallel size and ZeRO stage are the plan's choice for those ranks (plan.Local)
// unless flags override them. Step programs train every layout they lower (one rank
// included); the hand-written engine trains under mpirun, the unified cache, a model the
// step program does not lower, and when asked for (--engine handwritten). It returns nil
// for a one-rank run of the hand-written engine, and the plan (nil when none applies) for
// the memory report. micro is the run's micro-batch (0: the train block's), which the plan
// must share to predict the activations.
func RunLayout(prog *program.Program, trainName, stageName string, micro, worldSize int, f LayoutRequest, warn io.Writer) (*train.Sharding, *plan.Plan, error) {
	ranks, err := runRanks(f, worldSize)
	if err != nil {
		return nil, nil, err
	}
	var tr *program.Train
	var st *program.Stage
	if prog != nil {
		// A train or stage that is not there is left to train.Run, which reports it
		// with its diagnostic; the layout only needs them when they exist.
		tr, st, _ = train.Lookup(prog, trainName, stageName)
		if ranks == 0 && tr != nil {
			if c := prog.Clusters[tr.Cluster]; c != nil && c.Ranks > 1 {
				ranks = c.Ranks
			}
		}
	}
	tp, pp := max(f.TP, 1), max(f.PP, 1)
	askedStep := tp > 1 || pp > 1 || f.Program || f.Engine == EngineStep
	if tp*pp > 1 && ranks == 0 {
		ranks = tp * pp
	}
	if err := checkLayoutFlags(f, ranks, askedStep); err != nil {
		return nil, nil, err
	}
	if f.Budget != "" && f.Engine != EngineHandwritten {
		return stepCacheLayout(prog, tr, st, ranks, micro, f)
	}
	if max(ranks, 1)%(tp*pp) != 0 {
		return nil, nil, notTPPMultiple(ranks, tp, pp)
	}
	l := &train.Sharding{Ranks: max(ranks, 1), EP: max(f.EP, 1), ZeRO: f.ZeRO, Offload: f.Offload, TP: f.TP, PP: f.PP, SP: f.SP}
	zeroSet, err := fileMemory(l, tr, stageName, f, askedStep, warn)
	if err != nil {
		return nil, nil, err
	}
	chooseEngine(l, prog, tr, st, f, askedStep, warn)
	if !l.Program && l.Ranks <= 1 && l.EP <= 1 && l.ZeRO == 0 && !l.Offload && l.Cache == nil {
		return nil, nil, nil // one hand-written rank
	}
	var p *plan.Plan
	if tr != nil && st != nil {
		p = planLayout(l, prog, tr, st, micro, f, zeroSet, warn)
	}
	if l.Cache != nil && l.Cache.Budget == 0 {
		return nil, nil, fmt.Errorf("run: the unified cache needs a device budget; pass --cache-budget (e.g. 64MiB)")
	}
	return l, p, nil
}

// runRanks is the run's rank count as the flags and mpirun give it (0: not given).
func runRanks(f LayoutRequest, worldSize int) (int, error) {
	ranks := f.Ranks
	if worldSize > 0 {
		if ranks > 0 && ranks != worldSize {
			return 0, Usage(diag.Runtimef(diag.CodeConflictingFlags, "run: --ranks %d under mpirun with %d processes; drop --ranks", ranks, worldSize))
		}
		ranks = worldSize
	}
	return ranks, nil
}

// checkLayoutFlags refuses an unknown engine, flags the engine cannot honour, an
// expert-parallel group that does not divide the ranks and --sp without tensor parallelism.
func checkLayoutFlags(f LayoutRequest, ranks int, askedStep bool) error {
	switch f.Engine {
	case "", EngineStep:
	case EngineHandwritten:
		if askedStep {
			return Usage(diag.Runtimef(diag.CodeBadRunOption, "--engine handwritten with --tp, --pp or --step-programs: tensor and pipeline parallelism run through step programs only"))
		}
	default:
		e := diag.Runtimef(diag.CodeBadRunOption, "--engine %s: the engines are %s and %s", f.Engine, EngineStep, EngineHandwritten)
		e.Suggestion = "leave --engine out for step programs wherever they lower the layout"
		return Usage(e)
	}
	if f.EP > 1 && max(ranks, 1)%f.EP != 0 {
		// Expert parallelism spreads the experts over ranks: the group must fit the run.
		e := diag.Runtimef(diag.CodeBadRunOption, "--ep %d: an expert-parallel group of %d ranks does not divide the run's %d rank(s)", f.EP, f.EP, max(ranks, 1))
		e.Suggestion = fmt.Sprintf("pass --ranks %d or a multiple of it, or drop --ep", f.EP)
		return e
	}
	if f.SP && f.TP <= 1 {
		e := diag.Runtimef(diag.CodeBadRunOption, "--sp splits what the tensor-parallel ranks replicate, and this run has no tensor parallelism")
		e.Suggestion = "pass --tp 2 (or more) with --sp, or drop --sp"
		return Usage(e)
	}
	return nil
}

func notTPPMultiple(ranks, tp, pp int) error {
	e := diag.Runtimef(diag.CodeBadRunOption, "--ranks %d is not a multiple of tp %d × pp %d", ranks, tp, pp)
	e.Suggestion = fmt.Sprintf("pass --ranks %d or a multiple of it", tp*pp)
	return e
}

// stepCacheLayout is the step programs' unified cache (--cache-budget): the budget bounds
// each rank's device arena, in the file's pages and policy where its train block declares
// the cache; the plan lowers the same cache into its candidate's programs, so the memory
// the run reports is the plan's prediction, page moves included.
func stepCacheLayout(prog *program.Program, tr *program.Train, st *program.Stage, ranks, micro int, f LayoutRequest) (*train.Sharding, *plan.Plan, error) {
	tp, pp := max(f.TP, 1), max(f.PP, 1)
	if max(ranks, 1)%(tp*pp) != 0 {
		return nil, nil, notTPPMultiple(ranks, tp, pp)
	}
	c, err := stepCache(tr, f.Budget)
	if err != nil {
		return nil, nil, err
	}
	l := &train.Sharding{Ranks: max(ranks, 1), EP: max(f.EP, 1), ZeRO: f.ZeRO, Offload: f.Offload, TP: f.TP, PP: f.PP, Program: true, SP: f.SP, Cache: c}
	if tr != nil && tr.Memory.Kind == program.MemoryUnifiedCache && !f.ZeROSet {
		// The language's unified cache partitions every state (ZeRO 3) over the
		// data-parallel ranks, as AngelPTM does and the plan assumes.
		l.ZeRO = 3
	}
	if l.Offload && l.ZeRO == 0 {
		l.ZeRO = 1
	}
	var p *plan.Plan
	if tr != nil && st != nil {
		opts := plan.LocalOptions{EP: f.EP, ZeRO: l.ZeRO, ZeROSet: true, Offload: l.Offload, TP: f.TP, PP: f.PP, MicroBatch: micro,
			SequenceParallel: f.SP, StepCache: step.Cache{Budget: c.Budget, Page: c.Page, Eviction: pagepool.Policy(c.Eviction)}}
		// Without a plan (the cache refused for this budget, which the run then reports
		// at its position) the memory table shows no prediction.
		if p0, ds := plan.LocalWith(prog, tr, st, l.Ranks, opts); !ds.HasErrors() && p0 != nil {
			p = p0
			l.EP = max(p.Layout.EP, 1)
		}
	}
	return l, p, nil
}

// fileMemory applies the train block's memory block and --cache-budget to l: its
// gradient bucket (zero(bucket = …)) reaches the step programs, offload keeps
// the optimizer states in the host tier, and the unified cache partitions every state
// (ZeRO 3, host as backing store) with a device page pool of gathered units over a small
// budget. It reports whether the ZeRO stage is now fixed (the plan may not choose it).
func fileMemory(l *train.Sharding, tr *program.Train, stageName string, f LayoutRequest, askedStep bool, warn io.Writer) (bool, error) {
	zeroSet := f.ZeROSet
	if tr != nil {
		l.GradBucket = tr.Memory.GradBucket // zero(bucket = …): the step programs' gradient buckets
		if off := tr.Memory.Offload; off != "" && off != "none" {
			l.Offload = true
		}
		if tr.Memory.Kind == "unified_cache" {
			if askedStep {
				// Step programs size the cache from a device budget, which this run lacks.
				fmt.Fprintf(warn, "moec: step programs run the unified cache within a device budget (--cache-budget), and this run has none; %s stage %s trains with every state partitioned (ZeRO 3) and the optimizer offloaded\n", tr.Name, stageName)
				l.ZeRO, l.Offload, zeroSet = 3, true, true
			} else {
				l.Cache = &train.CacheConfig{Page: tr.Memory.CachePage, Eviction: string(tr.Memory.Eviction)}
			}
		}
	}
	if f.Budget != "" {
		b, err := ParseBytes(f.Budget)
		if err != nil {
			return false, Usage(diag.RuntimeWrap(diag.CodeBadRunOption, err, "--cache-budget"))
		}
		if b <= 0 {
			return false, Usage(diag.Runtimef(diag.CodeBadRunOption, "--cache-budget %s: the unified cache needs a positive device budget", f.Budget))
		}
		if l.Cache == nil {
			// No unified_cache in the file: pages small enough that the budget holds
			// a few units of a small model.
			l.Cache = &train.CacheConfig{Eviction: string(program.EvictLRU), Page: max(4<<10, b/16)}
		}
		l.Cache.Budget = b
	}
	if l.Cache != nil {
		l.ZeRO, l.Offload, zeroSet = 3, true, true
		if l.Cache.Page <= 0 {
			l.Cache.Page = DefaultCachePage
		}
	}
	if l.Offload && l.ZeRO == 0 {
		l.ZeRO = 1
	}
	return zeroSet, nil
}

// chooseEngine sets l.Program: step programs where they lower the layout, unless asked
// otherwise.
func chooseEngine(l *train.Sharding, prog *program.Program, tr *program.Train, st *program.Stage, f LayoutRequest, askedStep bool, warn io.Writer) {
	switch {
	case askedStep:
		l.Program = true // a layout they do not lower is refused by name (E0509, E0510)
	case f.Engine == EngineHandwritten, l.Cache != nil:
		// The hand-written engine: asked for, or the file's unified cache without a
		// --cache-budget (step programs need the device budget to lower the cache; with
		// one they run it, above).
	case prog == nil:
		// No program to check the model against (experiment arms): the hand-written
		// engine, as the arms were trained before step programs became the default.
	case st != nil:
		m := program.StageModel(prog.Models[tr.Model], st)
		if refused := stepRefusals(m); refused != "" {
			fmt.Fprintf(warn, "moec: the step program does not lower %s; %s stage %s trains through the hand-written engine\n", refused, tr.Name, st.Name)
		} else {
			l.Program = true
		}
	}
}

// planLayout plans exactly l's layout: the plan's choice of expert-parallel size and ZeRO
// stage where the flags leave them open (set in l), and the per-rank bytes the run is held
// against (nil, with a warning, when there is no plan).
func planLayout(l *train.Sharding, prog *program.Program, tr *program.Train, st *program.Stage, micro int, f LayoutRequest, zeroSet bool, warn io.Writer) *plan.Plan {
	opts := plan.LocalOptions{EP: f.EP, ZeRO: l.ZeRO, ZeROSet: zeroSet, Offload: l.Offload, TP: f.TP, PP: f.PP, MicroBatch: micro, SequenceParallel: f.SP}
	p, ds := plan.LocalWith(prog, tr, st, l.Ranks, opts)
	if ds.HasErrors() || p == nil {
		// The run does not need the plan; the user should still learn why there is no
		// prediction to hold the measured memory against.
		fmt.Fprintf(warn, "moec: no memory prediction for this layout: %v\n", ds.Err())
		return nil
	}
	l.EP, l.ZeRO = max(p.Layout.EP, 1), p.Layout.ZeRO
	if f.EP > 0 {
		// An explicit --ep is the run's, never the plan's rewriting of it: the run
		// refuses one the stage cannot use, naming the stage's experts.
		l.EP = f.EP
	}
	if l.Cache == nil {
		return p
	}
	if l.Cache.Budget == 0 && len(p.Placement.Ranks) > 0 {
		l.Cache.Budget = p.Placement.Ranks[0].Params // a quarter of a rank's fp32 weights
	}
	opts.EP = l.EP
	opts.Cache = &plan.CacheOptions{Budget: l.Cache.Budget, Page: l.Cache.Page, Eviction: l.Cache.Eviction}
	p1, ds := plan.LocalWith(prog, tr, st, l.Ranks, opts)
	if ds.HasErrors() || p1 == nil {
		fmt.Fprintf(warn, "moec: no memory prediction for the unified cache: %v\n", ds.Err())
		return p
	}
	return p1
}

// stepRefusals names the features the step program does not lower for m on one rank (the
// step column of the features table), "" when it lowers them all.
func stepRefusals(m *program.Model) string {
	var names []string
	for _, g := range features.Refusals(m, features.Step, features.Layout{TP: 1, PP: 1}) {
		names = append(names, g.Feature.Name)
	}
	return strings.Join(names, ", ")
}

// ResumeLayout decides the layout of a resumed run: the one its run.json records unless a
// layout flag (or mpirun with another number of processes) gives another, which is legal
// since checkpoints load under any layout. The plan is made again from the program the run
// folder stores, for the run's own micro-batch.
func ResumeLayout(spec *train.Spec, f LayoutRequest, flagsGiven bool, worldSize int, warn io.Writer) (*train.Sharding, *plan.Plan, error) {
	prog, tr, st, err := spec.Program()
	if err != nil {
		return nil, nil, err
	}
	if rec := spec.Layout; rec != nil && !flagsGiven && (worldSize == 0 || rec.Ranks == worldSize) {
		f.Ranks, f.EP, f.ZeRO, f.ZeROSet, f.Offload, f.Budget = rec.Ranks, rec.EP, rec.ZeRO, true, rec.Offload, ""
		f.TP, f.PP, f.SP = rec.TP, rec.PP, rec.SP
		// The run continues on the engine it ran on (a run recorded before step programs
		// were the default ran on the hand-written engine).
		f.Program, f.Engine = false, EngineHandwritten
		if rec.Program {
			f.Engine = EngineStep
		}
		if rec.CacheBudget > 0 {
			f.Budget = strconv.FormatInt(rec.CacheBudget, 10)
		}
		if rec.Ranks <= 1 && rec.EP <= 1 && rec.ZeRO == 0 && !rec.Offload && rec.CacheBudget == 0 && !rec.Program {
			return nil, nil, nil
		}
	}
	return RunLayout(prog, tr.Name, st.Name, spec.MicroBatch, worldSize, f, warn)
}

// ParseBytes reads a size such as 8MiB, 512KiB, 1GiB, 5GB (decimal, as transformers' shard
// sizes) or a plain number of bytes.
func ParseBytes(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1}, {"", 1}}
	for _, u := range units {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			v, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
			if err != nil || v < 0 {
				return 0, fmt.Errorf("%q is not a size (e.g. 8MiB)", s)
			}
			return v * u.mult, nil
		}
	}
	return 0, fmt.Errorf("%q is not a size", s)
}

// stepCache is the unified cache of a step-program run with the device budget given by
// --cache-budget: the train block's page and eviction policy when it declares
// memory = unified_cache, else the language's default (4 MiB pages, lru). The page does
// not follow the budget, so the smallest budget a refusal names is the one that runs.
func stepCache(tr *program.Train, budget string) (*train.CacheConfig, error) {
	b, err := ParseBytes(budget)
	if err != nil {
		return nil, Usage(diag.RuntimeWrap(diag.CodeBadRunOption, err, "--cache-budget"))
	}
	if b <= 0 {
		return nil, Usage(diag.Runtimef(diag.CodeBadRunOption, "--cache-budget %s: the unified cache needs a positive device budget", budget))
	}
	c := &train.CacheConfig{Budget: b, Eviction: string(program.EvictLRU), Page: DefaultCachePage}
	if tr != nil && tr.Memory.Kind == program.MemoryUnifiedCache {
		c.Page, c.Eviction = tr.Memory.CachePage, string(tr.Memory.Eviction)
		if c.Page <= 0 {
			c.Page = DefaultCachePage
		}
	}
	return c, nil
}
