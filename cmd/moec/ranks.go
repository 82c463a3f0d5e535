package main

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/moec-dev/moec/cmd/moec/internal/driver"
	"github.com/moec-dev/moec/internal/human"

	"github.com/moec-dev/moec/compiler/plan"
	"github.com/moec-dev/moec/compiler/program"
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
	program bool   // --step-programs: the default engine, asked for by name
	engine  string // --engine: "step" (default where step programs lower the layout) or "handwritten"
	sp      bool   // sequence parallelism over the tp ranks
}

// request is the layout the flags ask for.
func (f rankFlags) request() driver.LayoutRequest {
	return driver.LayoutRequest{Ranks: f.ranks, EP: f.ep, ZeRO: f.zero, ZeROSet: f.zeroSet, Offload: f.offload, Budget: f.budget,
		TP: f.tp, PP: f.pp, Program: f.program, Engine: f.engine, SP: f.sp}
}

// layout is driver.RunLayout for the flags; a request wrong on its own is a usage error.
func (f rankFlags) layout(prog *program.Program, trainName, stageName string, micro, worldSize int, warn io.Writer) (*train.Sharding, *plan.Plan, error) {
	l, p, err := driver.RunLayout(prog, trainName, stageName, micro, worldSize, f.request(), warn)
	return l, p, asUsage(err)
}

// resumeLayout is driver.ResumeLayout for the flags.
func (f rankFlags) resumeLayout(spec *train.Spec, flagsGiven bool, worldSize int, warn io.Writer) (*train.Sharding, *plan.Plan, error) {
	l, p, err := driver.ResumeLayout(spec, f.request(), flagsGiven, worldSize, warn)
	return l, p, asUsage(err)
}

func asUsage(err error) error {
	if driver.IsUsage(err) {
		return usage(err)
	}
	return err
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

// printMemory writes each rank's peak bytes per component next to the plan's prediction:
// on step-program ranks the memory plan's buffers live at each tier's peak (which the
// local plan predicts byte for byte) and the arenas the executor allocated; on the
// hand-written engine's ranks its meters.
func printMemory(w io.Writer, l *train.Sharding, mem []train.RankMemory, p *plan.Plan) {
	if len(mem) == 0 {
		return
	}
	var ranks []plan.Rank
	if p != nil && p.Placement != nil {
		ranks = p.Placement.Ranks
	}
	what := "measured peak vs plan"
	switch {
	case l != nil && l.StepPrograms():
		what = "each step program's buffers at its peak vs plan"
	case len(ranks) > 0 && ranks[0].ArenaDevice > 0:
		// The plan predicts the step programs' memory: on the hand-written engine the
		// ratio says how far its own buffers are from them.
		what = "measured peak vs the step programs' plan"
	}
	fmt.Fprintf(w, "memory per rank (%s): %s\n", l, what)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "rank\tcomponent\tdevice\thost\tplan\tmeasured/plan\t")
	for _, rm := range mem {
		predicted := map[string]int64{}
		if rm.Rank < len(ranks) {
			for _, b := range ranks[rm.Rank].Bytes {
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
	for _, rm := range mem {
		if rm.Arena[dist.Device]+rm.Arena[dist.Host] == 0 {
			continue
		}
		line := fmt.Sprintf("rank %d arenas allocated: device %s, host %s", rm.Rank, human.Bytes(rm.Arena[dist.Device]), human.Bytes(rm.Arena[dist.Host]))
		if rm.Rank < len(ranks) && ranks[rm.Rank].ArenaDevice > 0 {
			line += fmt.Sprintf(" (plan: device %s, host %s)", human.Bytes(ranks[rm.Rank].ArenaDevice), human.Bytes(ranks[rm.Rank].ArenaHost))
		}
		fmt.Fprintln(w, line)
	}
	// The cache's counts are not bytes: they get their own lines, not the byte columns.
	for _, rm := range mem {
		if n := rm.CacheHits + rm.CacheMisses; n > 0 {
			fmt.Fprintf(w, "rank %d unified cache: %d hits, %d misses, %d evictions (%.0f%% hit)\n", rm.Rank, rm.CacheHits, rm.CacheMisses, rm.CacheEvictions, 100*float64(rm.CacheHits)/float64(n))
		}
	}
}
