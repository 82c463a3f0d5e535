package plan

import (
	"flag"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moec-dev/moec/compiler/check"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/internal/golden"
	"github.com/moec-dev/moec/lang/diag"
)

var update = flag.Bool("update", false, "rewrite the golden sections of testdata/*.txtar")

// TestGolden plans every testdata/*.txtar: `-- input.moe --` is checked, then `-- plan --`
// receives the plan JSON (or the diagnostics) of every train stage and serve block,
// `-- seed --` (when present) the seed table of the first train block, and `-- local --`
// (when present) the plan for two local CPU ranks of the first train block's last stage.
func TestGolden(t *testing.T) {
	golden.Files(t, "testdata/*.txtar", *update, func(t *testing.T, in map[string][]byte) []golden.Section {
		prog, _, ds := check.Load("input.moe", func(name string) ([]byte, error) {
			if b, ok := in[filepath.ToSlash(filepath.Clean(name))]; ok {
				return b, nil
			}
			return nil, fmt.Errorf("%s: not in the archive", name)
		})
		if ds.HasErrors() {
			t.Fatalf("input does not check:\n%v", ds.Err())
		}
		out := []golden.Section{{Name: "plan", Data: []byte(goldenPlans(t, prog))}}
		if _, ok := in["seed"]; ok {
			tr := prog.Trains[prog.TrainOrder[0]]
			r, err := SeedTable(prog, tr, prog.Clusters[tr.Cluster])
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, golden.Section{Name: "seed", Data: []byte(r.Markdown())})
		}
		if _, ok := in["local"]; ok {
			tr := prog.Trains[prog.TrainOrder[0]]
			p, ds := Local(prog, tr, tr.Stages[len(tr.Stages)-1], 2)
			out = append(out, golden.Section{Name: "local", Data: []byte(planText(t, p, ds))})
		}
		return out
	})
}

func goldenPlans(t *testing.T, prog *program.Program) string {
	var b strings.Builder
	for _, name := range prog.TrainOrder {
		tr := prog.Trains[name]
		for _, st := range tr.Stages {
			p, ds := ForStage(prog, tr, st, Options{})
			fmt.Fprintf(&b, "## train %s stage %s\n%s", name, st.Name, planText(t, p, ds))
		}
	}
	for _, name := range prog.ServeOrder {
		p, ds := ForServe(prog, prog.Serves[name], Options{})
		fmt.Fprintf(&b, "## serve %s\n%s", name, planText(t, p, ds))
	}
	return b.String()
}

func planText(t *testing.T, p *Plan, ds diag.List) string {
	t.Helper()
	var b strings.Builder
	for _, d := range ds {
		fmt.Fprintf(&b, "%s\n", d)
		if d.Suggestion != "" {
			fmt.Fprintf(&b, "  suggestion: %s\n", d.Suggestion)
		}
		for _, n := range d.Notes {
			fmt.Fprintf(&b, "  note: %s\n", n)
		}
	}
	if p != nil {
		js, err := p.JSON()
		if err != nil {
			t.Fatal(err)
		}
		b.Write(js)
	}
	return b.String()
}
