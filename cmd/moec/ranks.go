package main

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/moec-dev/moec/internal/driver"
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
	program bool   // train through step programs even without tp or pp
	sp      bool   // sequence parallelism over the tp ranks
}

// request is the layout the flags ask for.
func (f rankFlags) request() driver.LayoutRequest {
	return driver.LayoutRequest{Ranks: f.ranks, EP: f.ep, ZeRO: f.zero, ZeROSet: f.zeroSet, Offload: f.offload, Budget: f.budget,
		TP: f.tp, PP: f.pp, Program: f.program, SP: f.sp}
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
		printCacheCounts(w, mem)
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
	printCacheCounts(w, mem)
}

// printCacheCounts writes each rank's unified-cache counts: they are not bytes, so they get
// their own lines, not the byte columns.
func printCacheCounts(w io.Writer, mem []train.RankMemory) {
	for _, rm := range mem {
		if n := rm.CacheHits + rm.CacheMisses; n > 0 {
			fmt.Fprintf(w, "rank %d unified cache: %d hits, %d misses, %d evictions (%.0f%% hit)\n", rm.Rank, rm.CacheHits, rm.CacheMisses, rm.CacheEvictions, 100*float64(rm.CacheHits)/float64(n))
		}
	}
}
