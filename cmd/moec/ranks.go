package main

import (
	"fmt"
	"github.com/moec-dev/moec/internal/human"
	"io"
	"runtime"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/moec-dev/moec/compiler/plan"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/runtime/dist"
	"github.com/moec-dev/moec/runtime/dist/mpi"
	"github.com/moec-dev/moec/runtime/train"
)

// rankFlags are `moec run`'s options for a sharded run.
type rankFlags struct {
	ranks   int
	ep      int
	zero    int
	zeroSet bool // --zero was given (0 is a valid choice)
	offload bool
	timeout time.Duration
	budget  string // unified cache device budget ("" = a quarter of a rank's weights)
	tp, pp  int    // tensor- and pipeline-parallel sizes (0 = none)
	program bool   // train through step programs even without tp or pp
}

// layout decides how the run is sharded: the ranks come from --ranks, from mpirun, or from
// the train block's `cluster local { ranks = N }`; the expert-parallel size and ZeRO stage
// are the plan's choice for those ranks (plan.Local) unless flags override them. It
// returns nil for a single-rank run, and the plan (nil when none applies) for the
// memory report. micro is the run's micro-batch (0: the train block's), which the plan
// must share to predict the activations.
func (f rankFlags) layout(prog *program.Program, trainName, stageName string, micro, worldSize int, warn io.Writer) (*train.Sharding, *plan.Plan, error) {
	ranks := f.ranks
	if worldSize > 0 {
		if ranks > 0 && ranks != worldSize {
			return nil, nil, usage(fmt.Errorf("run: --ranks %d under mpirun with %d processes; drop --ranks", ranks, worldSize))
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
	if f.ep > 1 && max(ranks, 1)%f.ep != 0 {
		// Expert parallelism spreads the experts over ranks: the group must fit the run.
		e := diag.Runtimef(diag.ErrBadRunOption, "--ep %d: an expert-parallel group of %d ranks does not divide the run's %d rank(s)", f.ep, f.ep, max(ranks, 1))
		e.Suggestion = fmt.Sprintf("pass --ranks %d or a multiple of it, or drop --ep", f.ep)
		return nil, nil, e
	}
	if f.tp > 1 || f.pp > 1 || f.program {
		// Step programs: the ranks are dp × tp × pp (dp 1 unless --ranks says more); the
		// executor runs exactly the memory its programs plan, reported per rank.
		if ranks == 0 {
			ranks = max(f.tp, 1) * max(f.pp, 1)
		}
		if f.budget != "" {
			return nil, nil, usage(diag.Runtimef(diag.ErrBadRunOption, "--tp, --pp and --step-programs do not run the unified cache yet"))
		}
		l := &train.Sharding{Ranks: ranks, EP: max(f.ep, 1), ZeRO: f.zero, Offload: f.offload, TP: f.tp, PP: f.pp, Program: f.program}
		if tp, pp := max(f.tp, 1), max(f.pp, 1); ranks%(tp*pp) != 0 {
			e := diag.Runtimef(diag.ErrBadRunOption, "--ranks %d is not a multiple of tp %d × pp %d", ranks, tp, pp)
			e.Suggestion = fmt.Sprintf("pass --ranks %d or a multiple of it", tp*pp)
			return nil, nil, e
		}
		return l, nil, nil
	}
	if ranks <= 1 && f.ep <= 1 && f.zero == 0 && !f.offload && f.budget == "" {
		return nil, nil, nil
	}
	l := &train.Sharding{Ranks: max(ranks, 1), EP: max(f.ep, 1), ZeRO: f.zero, Offload: f.offload}
	// The file's memory block: offload keeps the optimizer states in the host tier, and the
	// unified cache partitions every state (ZeRO-3, host as backing store) with a device
	// page pool of gathered units over a small budget.
	zeroSet := f.zeroSet
	if tr != nil {
		if off := tr.Memory.Offload; off != "" && off != "none" {
			l.Offload = true
		}
		if tr.Memory.Kind == "unified_cache" {
			l.Cache = &train.CacheConfig{Page: tr.Memory.CachePage, Eviction: string(tr.Memory.Eviction)}
		}
	}
	if f.budget != "" {
		b, err := parseBytes(f.budget)
		if err != nil {
			return nil, nil, usage(diag.RuntimeWrap(diag.ErrBadRunOption, err, "--cache-budget"))
		}
		if b <= 0 {
			return nil, nil, usage(diag.Runtimef(diag.ErrBadRunOption, "--cache-budget %s: the unified cache needs a positive device budget", f.budget))
		}
		if l.Cache == nil {
			// No unified_cache in the file: pages small enough that the budget holds
			// a few units of a small model.
			l.Cache = &train.CacheConfig{Eviction: "lru", Page: max(4<<10, b/16)}
		}
		l.Cache.Budget = b
	}
	if l.Cache != nil {
		l.ZeRO, l.Offload, zeroSet = 3, true, true
		if l.Cache.Page <= 0 {
			l.Cache.Page = 4 << 20 // the language's default page
		}
	}
	if l.Offload && l.ZeRO == 0 {
		l.ZeRO = 1
	}
	// The plan for exactly this layout: its choice of expert-parallel size and ZeRO stage
	// where the flags leave them open, and the per-rank bytes the run is held against.
	var p *plan.Plan
	if tr != nil && st != nil {
		opts := plan.LocalOptions{EP: f.ep, ZeRO: l.ZeRO, ZeROSet: zeroSet, Offload: l.Offload, Workers: runtime.GOMAXPROCS(0), MicroBatch: micro}
		p0, ds := plan.LocalWith(prog, tr, st, l.Ranks, opts)
		if ds.HasErrors() || p0 == nil {
			// The run does not need the plan; the user should still learn why there is no
			// prediction to hold the measured memory against.
			fmt.Fprintf(warn, "moec: no memory prediction for this layout: %v\n", ds.Err())
		} else {
			p = p0
			l.EP, l.ZeRO = max(p.Layout.EP, 1), p.Layout.ZeRO
			if f.ep > 0 {
				// An explicit --ep is the run's, never the plan's rewriting of it: the
				// run refuses one the stage cannot use, naming the stage's experts.
				l.EP = f.ep
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

// resumeLayout decides the layout of a resumed run: the one its run.json records unless a
// layout flag (or mpirun) gives another, which is legal since checkpoints load under any
// layout. The plan is made again from the program the run folder stores, for the run's
// own micro-batch.
func (f rankFlags) resumeLayout(spec *train.Spec, flagsGiven bool, worldSize int, warn io.Writer) (*train.Sharding, *plan.Plan, error) {
	prog, tr, st, err := spec.Program()
	if err != nil {
		return nil, nil, err
	}
	if rec := spec.Layout; rec != nil && !flagsGiven && worldSize == 0 {
		f.ranks, f.ep, f.zero, f.zeroSet, f.offload, f.budget = rec.Ranks, rec.EP, rec.ZeRO, true, rec.Offload, ""
		f.tp, f.pp, f.program = rec.TP, rec.PP, rec.Program
		if rec.CacheBudget > 0 {
			f.budget = strconv.FormatInt(rec.CacheBudget, 10)
		}
		if rec.Ranks <= 1 && rec.EP <= 1 && rec.ZeRO == 0 && !rec.Offload && rec.CacheBudget == 0 && !rec.Program {
			return nil, nil, nil
		}
	}
	return f.layout(prog, tr.Name, st.Name, spec.MicroBatch, worldSize, warn)
}

// mpiWorld starts MPI when mpirun launched this process.
func mpiWorld(timeout time.Duration) (dist.Comm, func(), error) {
	if !mpi.InRun() {
		return nil, func() {}, nil
	}
	c, err := mpi.Init(timeout)
	if err != nil {
		return nil, nil, fmt.Errorf("run: starting MPI: %w", err)
	}
	return c, func() { _ = mpi.Finalize() }, nil
}

// printMemory writes each rank's peak bytes per component next to the plan's prediction.
func printMemory(w io.Writer, l *train.Sharding, mem []train.RankMemory, p *plan.Plan) {
	if len(mem) == 0 {
		return
	}
	if l != nil && l.StepPrograms() {
		// The executor places every buffer in its program's arena: what it holds is the
		// memory plan, by the kind of buffer live at the device peak.
		fmt.Fprintf(w, "memory per rank (%s): each rank's step-program arena at its peak: the memory plan, which is all its buffers, AdamW moments included\n", l)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "rank\tcomponent\tdevice\thost\t")
		for _, rm := range mem {
			for c := dist.Component(0); c < dist.NumComponents; c++ {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t\n", rm.Rank, c, human.Bytes(rm.Measured[dist.Device][c]), human.Bytes(rm.Measured[dist.Host][c]))
			}
		}
		tw.Flush()
		return
	}
	fmt.Fprintf(w, "memory per rank (%s): measured peak vs plan\n", l)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "rank\tcomponent\tdevice\thost\tplan\tmeasured/plan\t")
	for _, rm := range mem {
		predicted := map[string]int64{}
		if p != nil && p.Placement != nil && rm.Rank < len(p.Placement.Ranks) {
			for _, b := range p.Placement.Ranks[rm.Rank].Bytes {
				predicted[b.Name] = b.Bytes
			}
		}
		for c := dist.Component(0); c < dist.NumComponents; c++ {
			dev, host := rm.Measured[dist.Device][c], rm.Measured[dist.Host][c]
			pr, ratio := "-", "-"
			if v, ok := predicted[c.String()]; ok {
				pr = human.Bytes(v)
				if v > 0 {
					ratio = fmt.Sprintf("%.2f", float64(dev+host)/float64(v))
				}
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t\n", rm.Rank, c, human.Bytes(dev), human.Bytes(host), pr, ratio)
		}
	}
	tw.Flush()
	// The cache's counts are not bytes: they get their own lines, not the byte columns.
	for _, rm := range mem {
		if n := rm.CacheHits + rm.CacheMisses; n > 0 {
			fmt.Fprintf(w, "rank %d unified cache: %d hits, %d misses, %d evictions (%.0f%% hit)\n", rm.Rank, rm.CacheHits, rm.CacheMisses, rm.CacheEvictions, 100*float64(rm.CacheHits)/float64(n))
		}
	}
}

// parseBytes reads a size such as 8MiB, 512KiB, 1GiB or a plain number of bytes.
func parseBytes(s string) (int64, error) {
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
