package driver

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"testing"

	"github.com/moec-dev/moec/compiler/check"
	"github.com/moec-dev/moec/compiler/plan"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/runtime/train"
)

// TestPlannedLayoutsRun: every layout the local planner emits for examples/hunyuan_tiny.moe
// on a 4-rank cluster — its choice and every alternative, for each stage — runs a training
// step through the engine `moec run` picks for it, with a finite loss. A stage that grows
// from another starts here from fresh weights of its own model: the layout, not the
// growth, is under test.
func TestPlannedLayoutsRun(t *testing.T) {
	if testing.Short() {
		t.Skip("trains every planned layout for a step")
	}
	const ranks = 4
	prog, _, ds := check.Load("../../../../examples/hunyuan_tiny.moe", os.ReadFile)
	if ds.HasErrors() {
		t.Fatal(ds.Err())
	}
	tr := prog.Trains[prog.TrainOrder[0]]
	ran := 0
	// The local planner emits one layout per request: its own choice, and the one it
	// completes from each ZeRO stage or offload a user may ask for.
	requests := []plan.LocalOptions{{}, {ZeRO: 0, ZeROSet: true}, {ZeRO: 2, ZeROSet: true}, {ZeRO: 3, ZeROSet: true},
		{Offload: true}, {ZeRO: 3, ZeROSet: true, Offload: true}}
	for _, st := range tr.Stages {
		type planned struct {
			l       plan.ParallelLayout
			offload bool // the local plan predicts an offloaded optimizer without marking its layout
		}
		var layouts []planned
		for _, o := range requests {
			p, ds := plan.LocalWith(prog, tr, st, ranks, o)
			if p == nil || ds.HasErrors() {
				t.Fatalf("stage %s %+v: %v", st.Name, o, ds.Err())
			}
			layouts = append(layouts, planned{p.Layout, o.Offload})
			for _, a := range p.Alternatives {
				layouts = append(layouts, planned{a.Layout, o.Offload})
			}
		}
		for _, lp := range layouts {
			pl := lp.l
			req := LayoutRequest{Ranks: pl.DP * max(pl.TP, 1) * max(pl.PP, 1), EP: max(pl.EP, 1), ZeRO: pl.ZeRO, ZeROSet: true,
				Offload: lp.offload || pl.Offload == program.OffloadCPU, TP: pl.TP, PP: pl.PP}
			if pl.Memory == program.MemoryUnifiedCache {
				req.Budget = "64MiB"
			}
			name := fmt.Sprintf("%s/dp%d-ep%d-tp%d-pp%d-zero%d-offload%v", st.Name, pl.DP, pl.EP, pl.TP, pl.PP, pl.ZeRO, req.Offload)
			t.Run(name, func(t *testing.T) {
				one := *st
				one.From, one.Grow = "", program.Grow{}
				single := *tr
				single.Stages = []*program.Stage{&one}
				pr := *prog
				pr.Trains = map[string]*program.Train{tr.Name: &single}
				l, _, err := RunLayout(&pr, tr.Name, st.Name, 0, 0, req, io.Discard)
				if err != nil {
					t.Fatalf("layout %+v: %v", req, err)
				}
				res, err := train.Run(context.Background(), train.Options{Program: &pr, TrainName: tr.Name, StageName: st.Name,
					BaseDir: "../../../../examples", Steps: 1, OutRoot: t.TempDir(), ValWindows: 1, Layout: l})
				if err != nil {
					t.Fatalf("layout %s: %v", l, err)
				}
				if !l.StepPrograms() || l.Offload != req.Offload {
					t.Fatalf("layout %s: want step programs with offload %v", l, req.Offload)
				}
				if res.Trained != 1 || !(res.Loss > 0) || math.IsInf(res.Loss, 0) {
					t.Fatalf("layout %s: trained %d steps, loss %v", l, res.Trained, res.Loss)
				}
			})
			ran++
		}
	}
	t.Logf("%d planned layouts ran", ran)
}
