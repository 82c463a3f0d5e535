package analysis_test

import (
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/moec-dev/moec/compiler/analysis"
	"github.com/moec-dev/moec/compiler/check"
	"github.com/moec-dev/moec/compiler/program"
)

// load checks one of the repository's models/*.moe files.
func load(t *testing.T, name string) *program.Program {
	t.Helper()
	prog, _, diags := check.Load(filepath.Join("..", "..", "models", name), os.ReadFile)
	for _, d := range diags {
		t.Errorf("%s: %v", name, d)
	}
	if diags.HasErrors() || prog == nil {
		t.FailNow()
	}
	return prog
}

func model(t *testing.T, prog *program.Program, name string) *program.Model {
	t.Helper()
	m := prog.Models[name]
	if m == nil {
		t.Fatalf("no model %q", name)
	}
	return m
}

func within(t *testing.T, what string, got int64, want, tol float64) {
	t.Helper()
	if rel := math.Abs(float64(got)-want) / want; rel > tol {
		t.Errorf("%s = %d, want %.4g within %.2f%% (off by %.3f%%)", what, got, want, tol*100, rel*100)
	}
}

func TestModelFileMixtral(t *testing.T) {
	c := analysis.Count(model(t, load(t, "mixtral-8x7b.moe"), "mixtral_8x7b"))
	if c.TotalAll != 46702792704 {
		t.Errorf("total = %d, want 46702792704 (Hugging Face count)", c.TotalAll)
	}
	within(t, "total", c.TotalAll, 46.7e9, 0.005)
	within(t, "active", c.ActiveAll, 12.9e9, 0.005)
}

func TestModelFileDeepSeekV3(t *testing.T) {
	c := analysis.Count(model(t, load(t, "deepseek-v3.moe"), "deepseek_v3"))
	within(t, "total", c.TotalAll, 671e9, 0.005)
	if c.TotalAll != 671026404352 || c.Buffers != 14848 {
		t.Errorf("total = %d + %d buffers, want 671026404352 + 14848", c.TotalAll, c.Buffers)
	}
	// The published "37B" (36.6B in README_WEIGHTS.md) counts without the input embedding;
	// see the analysis package's published test.
	if c.ActiveAll != 37552282624 {
		t.Errorf("active = %d, want 37552282624", c.ActiveAll)
	}
	within(t, "MTP", c.MTP, 11.61e9, 0.005)
}

func TestModelFileSwitchC(t *testing.T) {
	c := analysis.Count(model(t, load(t, "switch-c-2048.moe"), "switch_c_2048"))
	within(t, "total", c.TotalAll, 1571e9, 0.005)
	if c.TotalAll != 1571375798688 {
		t.Errorf("total = %d, want 1571375798688", c.TotalAll)
	}
	if c.EncoderCount != 15 || len(c.Layers) != 30 {
		t.Errorf("layers: %d encoder of %d", c.EncoderCount, len(c.Layers))
	}
}

func TestModelFileHunyuan(t *testing.T) {
	prog := load(t, "hunyuan1t.moe")
	m := model(t, prog, "hunyuan_1t")
	a := m.Attention
	if !a.TalkingHeads || a.ShareWeights != 0.5 || m.MoE == nil || m.MoE.Router != program.RouteTokenEmbedding ||
		m.MoE.TopK != 1 || m.MoE.Experts != 1536 {
		t.Errorf("model features not as written: attention %+v, moe %+v", a, m.MoE)
	}
	c := analysis.Count(m)
	within(t, "1536-expert total", c.TotalAll, 1e12, 0.05)

	cl := prog.Clusters["taiji"]
	if cl == nil || cl.Nodes != 24 || cl.GPUsPerNode != 8 || cl.Device.Name != "a100_40gb" ||
		cl.HostMemory != 1e12 || cl.Network != 1.6e12/8 {
		t.Errorf("cluster taiji = %+v", cl)
	}

	tr := prog.Trains["hunyuan_1t"]
	if tr == nil || len(tr.Stages) != 3 {
		t.Fatalf("train = %+v", tr)
	}
	wantStages := []struct {
		name, from string
		experts    int
		total      float64
	}{
		{"dense", "", 1, 3e9},
		{"hundred_billion", "dense", 144, 100e9},
		{"trillion", "hundred_billion", 1536, 1e12},
	}
	for i, w := range wantStages {
		st := tr.Stages[i]
		if st.Name != w.name || st.From != w.from || st.Experts != w.experts {
			t.Errorf("stage %d = %+v, want %s from %q with %d experts", i, st, w.name, w.from, w.experts)
			continue
		}
		// The model comment's promise: a ~3B trunk, ~100B, ~1T (within the stated 10%).
		within(t, "stage "+w.name, analysis.Count(program.StageModel(m, st)).TotalAll, w.total, 0.10)
	}
	if s := prog.Serves["hunyuan_1t"]; s == nil || s.Precision != program.FP16 || s.Layout != "auto" || s.Cluster != "taiji" {
		t.Errorf("serve = %+v", s)
	}
}
