package driver

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moec-dev/moec/compiler/check"
	"github.com/moec-dev/moec/compiler/plan"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/runtime/train"
)

// TestPlanStepLayout: the step program moec build lists runs the plan's recompute mode,
// and sequence parallelism exactly where the plan assumed it.
func TestPlanStepLayout(t *testing.T) {
	p := &plan.Plan{Layout: plan.ParallelLayout{DP: 2, EP: 1, TP: 4, PP: 2, Recompute: program.RecomputeSelective},
		Assumptions: []plan.Assumption{{Name: "sequence_parallel", Value: "true"}}}
	l := planStepLayout(p, 0)
	if !l.SP() || !l.RecomputeSelective() || l.TP != 4 || l.PP != 2 || l.DP != 2 {
		t.Errorf("plan tp 4 with sequence_parallel and recompute selective: step layout %s", l)
	}
	p.Assumptions[0].Value = "false"
	p.Layout.Recompute = program.RecomputeFull
	if l := planStepLayout(p, 0); l.SP() || !l.RecomputeFull() {
		t.Errorf("plan without sequence_parallel, recompute full: step layout %s", l)
	}
}

// TestPlanStepLayoutUnifiedCache: a unified-cache plan is listed with the cache (ZeRO 3 as
// planned), its budget the device's memory less the plan's reserve (before, it was listed
// as an offloaded optimizer without a word).
func TestPlanStepLayoutUnifiedCache(t *testing.T) {
	p := &plan.Plan{Layout: plan.ParallelLayout{DP: 4, EP: 2, TP: 1, PP: 1, ZeRO: 3, Memory: program.MemoryUnifiedCache},
		Memory: []plan.Tier{{Tier: "gpu", Capacity: 40 << 30, Components: []plan.Bytes{{Name: "parameters", Bytes: 1 << 30}, {Name: "reserve", Bytes: 2 << 30}}}}}
	l := planStepLayout(p, 1<<20)
	if !l.Cache.On() || l.Cache.Budget != 38<<30 || l.Cache.Page != 1<<20 || l.OffloadOpt || l.ZeRO != 3 {
		t.Errorf("unified cache: layout %s (cache %+v)", l, l.Cache)
	}
	p.Layout.Memory = program.MemoryZeRO
	if l := planStepLayout(p, 0); l.Cache.On() || l.OffloadOpt {
		t.Errorf("zero 3 without offload: layout %s", l)
	}
}

// TestBuildListsCacheOrSaysWhy: a stage whose plan chose the unified cache lists the
// cache's fetches where the plan's device holds the step; where the step program's
// buffers need more, the listing is the same partitioning with the optimizer offloaded,
// headed by a note with the cache's refusal, and the build says so.
func TestBuildListsCacheOrSaysWhy(t *testing.T) {
	dir := t.TempDir()
	tr, st, m := twoRankStage(t, dir)
	for _, c := range []struct {
		budget   int64
		want     string
		wantNote bool
	}{{64 << 20, "all_gather", false}, {64 << 10, "optimizer offloaded", true}} {
		p := &plan.Plan{Layout: plan.ParallelLayout{DP: 2, EP: 1, TP: 1, PP: 1, ZeRO: 3, Memory: program.MemoryUnifiedCache, MicroBatch: 4, GradAccum: 1},
			Memory: []plan.Tier{{Tier: "gpu", Capacity: c.budget}}}
		res := &BuildResult{}
		_, note, err := writeStepProgram(dir, m, tr, st, p, res)
		if err != nil {
			t.Fatal(err)
		}
		text, err := os.ReadFile(filepath.Join(dir, "program.txt"))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(text), c.want) || (note != "") != c.wantNote || c.wantNote != strings.HasPrefix(string(text), "# note: ") {
			t.Errorf("budget %d: note %q, listing:\n%.600s", c.budget, note, text)
		}
		if !c.wantNote && !strings.Contains(string(text), "unified cache:") {
			t.Errorf("budget %d: the listing has no unified cache line:\n%.600s", c.budget, text)
		}
	}
}

// TestBuildListsEveryPipelineStage: with pipeline parallelism, `moec build` lists the first
// rank of every pipeline stage: program.txt holds the embedding and the first layers,
// program.pp1.txt the last layers, the head and the loss.
func TestBuildListsEveryPipelineStage(t *testing.T) {
	dir := t.TempDir()
	tr, st, m := twoRankStage(t, dir)
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

// twoRankStage writes and checks a small two-layer model with a two-rank local cluster in
// dir and returns its train block, its one stage and the stage's model.
func twoRankStage(t *testing.T, dir string) (*program.Train, *program.Stage, *program.Model) {
	t.Helper()
	path := filepath.Join(dir, "two.moe")
	src := `model two {
  vocab = 256; d_model = 32; layers = 2; seq_len = 32
  attention { heads = 2 }
  ffn { hidden = 64; activation = gelu }
}
cluster local { gpu = cpu; ranks = 2; host_memory = 8GiB }
train two on local {
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
	tr := prog.Trains["two"]
	st := tr.Stages[0]
	return tr, st, program.StageModel(prog.Models[tr.Model], st)
}

// TestFileMemoryGradBucket: `moec run` takes the train block's zero(bucket = …) into the
// run's sharding, which its step programs lower with (runtime/train's stepLayout).
func TestFileMemoryGradBucket(t *testing.T) {
	for _, bucket := range []int64{0, 3 << 20} {
		tr := &program.Train{Name: "t", Memory: program.MemoryStrategy{Kind: program.MemoryZeRO, ZeROStage: 1, GradBucket: bucket}}
		l := &train.Sharding{Ranks: 2, EP: 1, ZeRO: 1}
		if _, err := fileMemory(l, tr, "s", LayoutRequest{}, false, io.Discard); err != nil {
			t.Fatal(err)
		}
		if l.GradBucket != bucket {
			t.Errorf("zero(1, bucket = %d bytes): the run's gradient bucket is %d bytes", bucket, l.GradBucket)
		}
	}
}
