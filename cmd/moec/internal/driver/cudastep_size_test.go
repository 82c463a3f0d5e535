package driver

import (
	"os"
	"strings"
	"testing"

	"github.com/moec-dev/moec/codegen/cudastep"
	"github.com/moec-dev/moec/compiler/check"
	"github.com/moec-dev/moec/compiler/plan"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
)

// TestTrillionHostProgramsStaySmall: the CUDA host program `moec build` writes for each
// stage of models/hunyuan1t.moe (rank 0 of the plan's layout) stays small: at most 400
// bytes of C a kernel launch and 8 MB in all, its launches nearly all rows of launch
// tables (codegen/cudastep's launch_table.go). Written out one C block a launch costs
// 400–750 bytes: the dense stage's 10,460 launches made a 7.86 MB host program. The
// rotary table's constants were 2.2 MB of each stage's until the host program computed
// the table when it opened (codegen/cudastep's consts.go). The stages' plans now run the
// unified cache on the device (the planner counts the attention weights the step program
// keeps), with several micro-batches a step: 12,285 (the dense stage listed with selective
// recompute), 18,858 and 17,100 launches in 3.40, 5.85 and 6.15 MB, the cache's copies and
// waits between the launches (which end the tables' runs) and its ZeRO 3 collectives
// included. Staged through the device as a table of every segment, the trillion stage's
// reduce-scatter over 192 ranks alone was 475,000 rows and the host program 44 MB; the
// host program now computes them as it runs.
func TestTrillionHostProgramsStaySmall(t *testing.T) {
	const perLaunch, ceiling = 400, 8_000_000
	for _, sp := range hunyuanStepPrograms(t) {
		st, m, tr := sp.stage, sp.model, sp.train
		low, err := cudastep.LowerWith(sp.prog, m, cudaStepOptions(tr))
		if err != nil {
			t.Fatalf("stage %s: %v", st.Name, err)
		}
		host, err := cudastep.HostProgram(low)
		if err != nil {
			t.Fatalf("stage %s: %v", st.Name, err)
		}
		launches := 0
		for _, ol := range low.Ops {
			launches += len(ol.Launches) + len(ol.Reuse)
		}
		writtenOut := strings.Count(host, "if (!moec_launch(s, ")
		t.Logf("stage %s: %d launches (%d written out), a host program of %d bytes", st.Name, launches, writtenOut, len(host))
		if len(host) > perLaunch*launches || len(host) > ceiling {
			t.Errorf("stage %s: the host program is %d bytes for %d launches: over %d bytes a launch or %d in all", st.Name, len(host), launches, perLaunch, ceiling)
		}
		if launches < 1000 || writtenOut*8 > launches {
			t.Errorf("stage %s: %d of %d launches written out; want at most an eighth", st.Name, writtenOut, launches)
		}
	}
}

// TestTrillionStepProgramFitsItsPlan: the stages of models/hunyuan1t.moe (the unified
// cache on A100-40GB) lower to step programs that fit the device with the cache. The
// hundred-billion and trillion stages fit as their plans are; they did not while the
// planner left out the attention weights the step program keeps (sharing's selected
// weights under recompute, talking heads' scores): the trillion stage's step needed 80.2
// GiB. The dense stage's plan keeps every layer's activations (no recompute) in the 16
// bits a bf16 run stores, the step program in fp32: its listing is the plan's layout with
// more recompute, which fits with the cache, and its note says so (it was the layout
// without the cache, the optimizer offloaded).
func TestTrillionStepProgramFitsItsPlan(t *testing.T) {
	for _, s := range hunyuanStepPrograms(t) {
		st, p, sp, note := s.stage, s.plan, s.prog, s.note
		switch {
		case st.Name == "dense":
			if want := "program.txt lists the layout with recompute = "; !strings.Contains(note, want) || sp.Layout.Recompute == p.Layout.Recompute {
				t.Errorf("stage %s: recompute %s (the plan's %s), note %q: want the plan's layout with more recompute", st.Name, sp.Layout.Recompute, p.Layout.Recompute, note)
			}
		case note != "":
			t.Errorf("stage %s (%s): %s", st.Name, p.Layout.Memory, note)
			continue
		}
		if !sp.Layout.Cache.On() || sp.Layout.OffloadOpt {
			t.Errorf("stage %s: the plan's unified cache is not in the step program (optimizer offloaded: %v)", st.Name, sp.Layout.OffloadOpt)
		}
		if sp.Layout.DP != p.Layout.DP || sp.Layout.EP != max(p.Layout.EP, 1) || sp.Layout.TP != p.Layout.TP || sp.Layout.PP != p.Layout.PP {
			t.Errorf("stage %s: the step program's layout %+v is not the plan's partitioning %+v", st.Name, sp.Layout, p.Layout)
		}
		if dev := s.device; sp.Memory.Arena[step.Device] > dev {
			t.Errorf("stage %s: the step program's device arena is %d bytes, the device holds %d", st.Name, sp.Memory.Arena[step.Device], dev)
		}
	}
}

// stageProgram is a stage of models/hunyuan1t.moe, its plan and the step program `moec
// build` lists for it (rank 0), with the note that heads the listing.
type stageProgram struct {
	stage  *program.Stage
	train  *program.Train
	model  *program.Model
	plan   *plan.Plan
	prog   *step.Program
	note   string
	device int64 // the cluster's device memory
}

// hunyuanStepPrograms plans every stage of models/hunyuan1t.moe and lowers its step
// program as `moec build` does (writeStepProgram).
func hunyuanStepPrograms(t *testing.T) []stageProgram {
	t.Helper()
	prog, _, ds := check.Load("../../../../models/hunyuan1t.moe", os.ReadFile)
	if ds.HasErrors() {
		t.Fatal(ds.Err())
	}
	tr := prog.Trains[prog.TrainOrder[0]]
	var out []stageProgram
	for _, st := range tr.Stages {
		p, pd := plan.ForStage(prog, tr, st, plan.Options{})
		if p == nil {
			t.Fatalf("stage %s: no plan: %v", st.Name, pd.Err())
		}
		m := program.StageModel(prog.Models[tr.Model], st)
		sp, note, err := writeStepProgram(t.TempDir(), m, tr, st, p, &BuildResult{})
		if err != nil || sp == nil {
			t.Fatalf("stage %s: no step program: %v %s", st.Name, err, note)
		}
		out = append(out, stageProgram{stage: st, train: tr, model: m, plan: p, prog: sp, note: note, device: prog.Clusters[tr.Cluster].Device.Memory})
	}
	return out
}
