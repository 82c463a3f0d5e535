package driver

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moec-dev/moec/compiler/check"
	"github.com/moec-dev/moec/compiler/plan"
	"github.com/moec-dev/moec/compiler/program"
)

// TestPlanStepLayout: the step program moec build lists runs the plan's recompute mode,
// and sequence parallelism exactly where the plan assumed it.
func TestPlanStepLayout(t *testing.T) {
	p := &plan.Plan{Layout: plan.ParallelLayout{DP: 2, EP: 1, TP: 4, PP: 2, Recompute: program.RecomputeSelective},
		Assumptions: []plan.Assumption{{Name: "sequence_parallel", Value: "true"}}}
	l, _ := planStepLayout(p, 0)
	if !l.SP() || !l.RecomputeSelective() || l.TP != 4 || l.PP != 2 || l.DP != 2 {
		t.Errorf("plan tp 4 with sequence_parallel and recompute selective: step layout %s", l)
	}
	p.Assumptions[0].Value = "false"
	p.Layout.Recompute = program.RecomputeFull
	if l, _ := planStepLayout(p, 0); l.SP() || !l.RecomputeFull() {
		t.Errorf("plan without sequence_parallel, recompute full: step layout %s", l)
	}
}

// TestPlanStepLayoutUnifiedCache: a unified-cache plan is listed with the cache, its budget
// the device's memory less the plan's reserve; with ZeRO 3, which the cache does not lower
// with, as ZeRO 3 with the optimizer offloaded, and a note says so (before, both were
// listed as an offloaded optimizer without a word).
func TestPlanStepLayoutUnifiedCache(t *testing.T) {
	p := &plan.Plan{Layout: plan.ParallelLayout{DP: 4, EP: 2, TP: 1, PP: 1, ZeRO: 1, Memory: program.MemoryUnifiedCache},
		Memory: []plan.Tier{{Tier: "gpu", Capacity: 40 << 30, Components: []plan.Bytes{{Name: "parameters", Bytes: 1 << 30}, {Name: "reserve", Bytes: 2 << 30}}}}}
	l, note := planStepLayout(p, 1<<20)
	if !l.Cache.On() || l.Cache.Budget != 38<<30 || l.Cache.Page != 1<<20 || l.OffloadOpt || note != "" {
		t.Errorf("unified cache, zero 1: layout %s (cache %+v), note %q", l, l.Cache, note)
	}
	p.Layout.ZeRO = 3
	l, note = planStepLayout(p, 1<<20)
	if l.Cache.On() || !l.OffloadOpt || l.ZeRO != 3 || !strings.Contains(note, "unified cache with ZeRO 3") {
		t.Errorf("unified cache, zero 3: layout %s, note %q", l, note)
	}
	p.Layout.Memory = program.MemoryZeRO
	if l, note := planStepLayout(p, 0); l.Cache.On() || l.OffloadOpt || note != "" {
		t.Errorf("zero 3 without offload: layout %s, note %q", l, note)
	}
}

// TestBuildListsEveryPipelineStage: with pipeline parallelism, `moec build` lists the first
// rank of every pipeline stage: program.txt holds the embedding and the first layers,
// program.pp1.txt the last layers, the head and the loss.
func TestBuildListsEveryPipelineStage(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "pp.moe")
	src := `model pp {
  vocab = 256; d_model = 32; layers = 2; seq_len = 32
  attention { heads = 2 }
  ffn { hidden = 64; activation = gelu }
}
cluster local { gpu = cpu; ranks = 2; host_memory = 8GiB }
train pp on local {
  tokens_per_batch = 256; micro_batch = 4; precision = fp32
  data = "text/*.txt"
  stage only { steps = 2 }
}
`
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	prog, _, ds := check.Load(path, os.ReadFile)
	if ds.HasErrors() {
		t.Fatal(ds.Err())
	}
	tr := prog.Trains["pp"]
	st := tr.Stages[0]
	m := program.StageModel(prog.Models[tr.Model], st)
	p := &plan.Plan{Layout: plan.ParallelLayout{DP: 1, EP: 1, TP: 1, PP: 2, MicroBatch: 4, GradAccum: 2, Recompute: program.RecomputeNone}}
	res := &BuildResult{}
	if _, note, err := writeStepProgram(dir, m, tr, st, p, res); err != nil || note != "" {
		t.Fatalf("writeStepProgram: %v %s", err, note)
	}
	if len(res.Files) != 2 {
		t.Fatalf("wrote %v, want program.txt and program.pp1.txt", res.Files)
	}
	first, err := os.ReadFile(filepath.Join(dir, "program.txt"))
	if err != nil {
		t.Fatal(err)
	}
	last, err := os.ReadFile(filepath.Join(dir, "program.pp1.txt"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, text, want, not string
	}{
		{"program.txt", string(first), "embed", "cross_entropy"},
		{"program.pp1.txt", string(last), "cross_entropy", " embed "},
	} {
		if !strings.Contains(c.text, c.want) || strings.Contains(c.text, c.not) {
			t.Errorf("%s: want %q and no %q:\n%s", c.name, c.want, c.not, c.text)
		}
	}
}
