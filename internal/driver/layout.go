package driver

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"strconv"
	"strings"

	"github.com/moec-dev/moec/compiler/plan"
	"github.com/moec-dev/moec/compiler/program"
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
	Program         bool   // train through step programs even without tp or pp
	SP              bool   // sequence parallelism (needs TP > 1)
}

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

// RunLayout decides how a run is sharded: the ranks come from --ranks, from mpirun, or from
// the train block's `cluster local { ranks = N }`; the expert-parallel size and ZeRO stage
// are the plan's choice for those ranks (plan.Local) unless flags override them. It
// returns nil for a single-rank run, and the plan (nil when none applies) for the
// memory report. micro is the run's micro-batch (0: the train block's), which the plan
// must share to predict the activations.
func RunLayout(prog *program.Program, trainName, stageName string, micro, worldSize int, f LayoutRequest, warn io.Writer) (*train.Sharding, *plan.Plan, error) {
	ranks := f.Ranks
	if worldSize > 0 {
		if ranks > 0 && ranks != worldSize {
			return nil, nil, Usage(fmt.Errorf("run: --ranks %d under mpirun with %d processes; drop --ranks", ranks, worldSize))
		}
		ranks = worldSize
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
	if f.EP > 1 && max(ranks, 1)%f.EP != 0 {
		// Expert parallelism spreads the experts over ranks: the group must fit the run.
		e := diag.Runtimef(diag.ErrBadRunOption, "--ep %d: an expert-parallel group of %d ranks does not divide the run's %d rank(s)", f.EP, f.EP, max(ranks, 1))
		e.Suggestion = fmt.Sprintf("pass --ranks %d or a multiple of it, or drop --ep", f.EP)
		return nil, nil, e
	}
	if f.SP && f.TP <= 1 {
		e := diag.Runtimef(diag.ErrBadRunOption, "--sp splits what the tensor-parallel ranks replicate, and this run has no tensor parallelism")
		e.Suggestion = "pass --tp 2 (or more) with --sp, or drop --sp"
		return nil, nil, Usage(e)
	}
	if f.TP > 1 || f.PP > 1 || f.Program {
		// Step programs: the ranks are dp × tp × pp (dp 1 unless --ranks says more); the
		// executor runs exactly the memory its programs plan, reported per rank.
		if ranks == 0 {
			ranks = max(f.TP, 1) * max(f.PP, 1)
		}
		l := &train.Sharding{Ranks: ranks, EP: max(f.EP, 1), ZeRO: f.ZeRO, Offload: f.Offload, TP: f.TP, PP: f.PP, Program: f.Program, SP: f.SP}
		if f.Budget != "" {
			// The step programs' unified cache: the budget bounds each rank's device arena,
			// in the file's pages and policy where its train block declares the cache.
			c, err := stepCache(tr, f.Budget)
			if err != nil {
				return nil, nil, err
			}
			l.Cache = c
		}
		if tp, pp := max(f.TP, 1), max(f.PP, 1); ranks%(tp*pp) != 0 {
			e := diag.Runtimef(diag.ErrBadRunOption, "--ranks %d is not a multiple of tp %d × pp %d", ranks, tp, pp)
			e.Suggestion = fmt.Sprintf("pass --ranks %d or a multiple of it", tp*pp)
			return nil, nil, e
		}
		return l, nil, nil
	}
	if ranks <= 1 && f.EP <= 1 && f.ZeRO == 0 && !f.Offload && f.Budget == "" {
		return nil, nil, nil
	}
	l := &train.Sharding{Ranks: max(ranks, 1), EP: max(f.EP, 1), ZeRO: f.ZeRO, Offload: f.Offload}
	// The file's memory block: offload keeps the optimizer states in the host tier, and the
	// unified cache partitions every state (ZeRO-3, host as backing store) with a device
	// page pool of gathered units over a small budget.
	zeroSet := f.ZeROSet
	if tr != nil {
		if off := tr.Memory.Offload; off != "" && off != "none" {
			l.Offload = true
		}
		if tr.Memory.Kind == "unified_cache" {
			l.Cache = &train.CacheConfig{Page: tr.Memory.CachePage, Eviction: string(tr.Memory.Eviction)}
		}
	}
	if f.Budget != "" {
		b, err := ParseBytes(f.Budget)
		if err != nil {
			return nil, nil, Usage(diag.RuntimeWrap(diag.ErrBadRunOption, err, "--cache-budget"))
		}
		if b <= 0 {
			return nil, nil, Usage(diag.Runtimef(diag.ErrBadRunOption, "--cache-budget %s: the unified cache needs a positive device budget", f.Budget))
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
	// The plan for exactly this layout: its choice of expert-parallel size and ZeRO stage
	// where the flags leave them open, and the per-rank bytes the run is held against.
	var p *plan.Plan
	if tr != nil && st != nil {
		opts := plan.LocalOptions{EP: f.EP, ZeRO: l.ZeRO, ZeROSet: zeroSet, Offload: l.Offload, Workers: runtime.GOMAXPROCS(0), MicroBatch: micro}
		p0, ds := plan.LocalWith(prog, tr, st, l.Ranks, opts)
		if ds.HasErrors() || p0 == nil {
			// The run does not need the plan; the user should still learn why there is no
			// prediction to hold the measured memory against.
			fmt.Fprintf(warn, "moec: no memory prediction for this layout: %v\n", ds.Err())
		} else {
			p = p0
			l.EP, l.ZeRO = max(p.Layout.EP, 1), p.Layout.ZeRO
			if f.EP > 0 {
				// An explicit --ep is the run's, never the plan's rewriting of it: the
				// run refuses one the stage cannot use, naming the stage's experts.
				l.EP = f.EP
			}
			if l.Cache != nil {
				if l.Cache.Budget == 0 && len(p.Placement.Ranks) > 0 {
					l.Cache.Budget = p.Placement.Ranks[0].Params // a quarter of a rank's fp32 weights
				}
				opts.EP = l.EP
				opts.Cache = &plan.CacheOptions{Budget: l.Cache.Budget, Page: l.Cache.Page, Eviction: l.Cache.Eviction}
				if p1, ds := plan.LocalWith(prog, tr, st, l.Ranks, opts); ds.HasErrors() || p1 == nil {
					fmt.Fprintf(warn, "moec: no memory prediction for the unified cache: %v\n", ds.Err())
				} else {
					p = p1
				}
			}
		}
	}
	if l.Cache != nil && l.Cache.Budget == 0 {
		return nil, nil, fmt.Errorf("run: the unified cache needs a device budget; pass --cache-budget (e.g. 64MiB)")
	}
	return l, p, nil
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
		f.TP, f.PP, f.Program, f.SP = rec.TP, rec.PP, rec.Program, rec.SP
		if rec.CacheBudget > 0 {
			f.Budget = strconv.FormatInt(rec.CacheBudget, 10)
		}
		if rec.Ranks <= 1 && rec.EP <= 1 && rec.ZeRO == 0 && !rec.Offload && rec.CacheBudget == 0 && !rec.Program {
			return nil, nil, nil
		}
	}
	return RunLayout(prog, tr.Name, st.Name, spec.MicroBatch, worldSize, f, warn)
}

// ParseBytes reads a size such as 8MiB, 512KiB, 1GiB or a plain number of bytes.
func ParseBytes(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}, {"", 1}}
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
		return nil, Usage(diag.RuntimeWrap(diag.ErrBadRunOption, err, "--cache-budget"))
	}
	if b <= 0 {
		return nil, Usage(diag.Runtimef(diag.ErrBadRunOption, "--cache-budget %s: the unified cache needs a positive device budget", budget))
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
