package nn

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/moec-dev/moec/compiler/analysis"
	"github.com/moec-dev/moec/compiler/check"
	"github.com/moec-dev/moec/compiler/program"
)

// TestShippedModelsCountAsTheyRun: for every stage of the shipped examples and models the
// runtime can build, the parameters it holds (ParamList, which New follows) are exactly what
// compiler/analysis counts, so the report, the plan's memory and a checkpoint agree. It
// caught the runtime building one token-embedding router table per MoE layer where the
// language (and every plan) has one per model.
func TestShippedModelsCountAsTheyRun(t *testing.T) {
	files, err := filepath.Glob("../../examples/*.moe")
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples: %v", err)
	}
	more, _ := filepath.Glob("../../models/*.moe")
	files = append(files, more...)
	checked := 0
	for _, file := range files {
		prog, _, ds := check.Load(file, os.ReadFile)
		if ds.HasErrors() {
			t.Fatalf("%s: %v", file, ds.Err())
		}
		var models []*program.Model
		for _, name := range prog.TrainOrder {
			tr := prog.Trains[name]
			for _, st := range tr.Stages {
				models = append(models, program.StageModel(prog.Models[tr.Model], st))
			}
		}
		if len(models) == 0 {
			for _, m := range prog.Models {
				models = append(models, m)
			}
		}
		for _, m := range models {
			lay, err := ParamList(m)
			if err != nil {
				continue // a feature the CPU runtime does not build (checked elsewhere)
			}
			var n int64
			for _, p := range lay {
				k := int64(1)
				for _, d := range p.Shape {
					k *= int64(d)
				}
				n += k
			}
			// The runtime lists aux-free balancing's selection biases, which the count calls buffers.
			if c := analysis.Count(m); c.TotalAll+c.Buffers != n {
				t.Errorf("%s %s (%d experts): the runtime holds %d parameters, compiler/analysis counts %d (%+d)",
					filepath.Base(file), m.Name, expertsOf(m), n, c.TotalAll+c.Buffers, c.TotalAll+c.Buffers-n)
			}
			checked++
		}
	}
	if checked == 0 {
		t.Fatal("no model was compared")
	}
	t.Logf("%d stage models compared", checked)
}

func expertsOf(m *program.Model) int {
	if m.MoE == nil {
		return 1
	}
	return m.MoE.Experts
}
