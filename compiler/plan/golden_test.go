package plan

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/tools/txtar"

	"github.com/moec-dev/moec/compiler/check"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/lang/diag"
)

var update = flag.Bool("update", false, "rewrite the golden sections of testdata/*.txtar")

// TestGolden plans every testdata/*.txtar: `-- input.moe --` is checked, then `-- plan --`
// receives the plan JSON (or the diagnostics) of every train stage and serve block,
// `-- seed --` (when present) the seed table of the first train block, and `-- local --`
// (when present) the plan for two local CPU ranks of the first train block's last stage.
func TestGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txtar")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files: %v", err)
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".txtar"), func(t *testing.T) {
			ar, err := txtar.ParseFile(file)
			if err != nil {
				t.Fatal(err)
			}
			inputs := map[string][]byte{}
			for _, f := range ar.Files {
				inputs[f.Name] = f.Data
			}
			prog, _, ds := check.Load("input.moe", func(name string) ([]byte, error) {
				if b, ok := inputs[filepath.ToSlash(filepath.Clean(name))]; ok {
					return b, nil
				}
				return nil, fmt.Errorf("%s: not in the archive", name)
			})
			if ds.HasErrors() {
				t.Fatalf("input does not check:\n%v", ds.Err())
			}
			got := map[string]string{"plan": goldenPlans(t, prog)}
			if _, ok := inputs["seed"]; ok {
				tr := prog.Trains[prog.TrainOrder[0]]
				r, err := SeedTable(prog, tr, prog.Clusters[tr.Cluster])
				if err != nil {
					t.Fatal(err)
				}
				got["seed"] = r.Markdown()
			}
			if _, ok := inputs["local"]; ok {
				tr := prog.Trains[prog.TrainOrder[0]]
				p, ds := Local(prog, tr, tr.Stages[len(tr.Stages)-1], 2)
				got["local"] = planText(t, p, ds)
			}
			changed := false
			for i, f := range ar.Files {
				want, ok := got[f.Name]
				if !ok {
					continue
				}
				if string(f.Data) != want {
					if *update {
						ar.Files[i].Data = []byte(want)
						changed = true
						continue
					}
					t.Errorf("section %s differs (-want +got):\n%s", f.Name, cmp.Diff(string(f.Data), want))
				}
			}
			if changed {
				if err := os.WriteFile(file, txtar.Format(ar), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
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
