package gogen_test

import (
	"flag"
	"go/format"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/tools/txtar"

	"github.com/moec-dev/moec/codegen/gogen"
	"github.com/moec-dev/moec/compiler/check"
	"github.com/moec-dev/moec/compiler/program"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// loadArchive checks the archive's input.moe, reading imports from the archive too.
func loadArchive(t *testing.T, ar *txtar.Archive) *program.Program {
	t.Helper()
	files := map[string][]byte{}
	for _, f := range ar.Files {
		files[f.Name] = f.Data
	}
	read := func(name string) ([]byte, error) {
		if b, ok := files[filepath.ToSlash(filepath.Clean(name))]; ok {
			return b, nil
		}
		return nil, os.ErrNotExist
	}
	prog, _, diags := check.Load("input.moe", read)
	if diags.HasErrors() {
		t.Fatalf("input.moe does not check:\n%v", diags.Err())
	}
	return prog
}

// stageSection names a stage's golden section: "go" for a file with one stage.
func stageSection(tr *program.Train, st *program.Stage) string {
	if len(tr.Stages) == 1 {
		return "go"
	}
	return "go " + st.Name
}

// goldenReplace is the replace path the golden go.mod is written with.
const goldenReplace = "../../../.."

func TestGolden(t *testing.T) {
	paths, err := filepath.Glob("testdata/*.txtar")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no golden files: %v", err)
	}
	for _, path := range paths {
		t.Run(filepath.Base(path), func(t *testing.T) {
			ar, err := txtar.ParseFile(path)
			if err != nil {
				t.Fatal(err)
			}
			prog := loadArchive(t, ar)
			got := map[string]string{}
			var order []string
			for _, tn := range prog.TrainOrder {
				tr := prog.Trains[tn]
				for _, st := range tr.Stages {
					cfg, err := gogen.ConfigFor(prog, tr, st)
					if err != nil {
						t.Fatal(err)
					}
					src, err := gogen.MainSource(cfg)
					if err != nil {
						t.Fatal(err)
					}
					if formatted, err := format.Source([]byte(src)); err != nil || string(formatted) != src {
						t.Fatalf("stage %s: the program is not gofmt-formatted (%v)", st.Name, err)
					}
					again, _ := gogen.MainSource(cfg)
					if again != src {
						t.Fatalf("stage %s: two generations differ", st.Name)
					}
					name := stageSection(tr, st)
					got[name] = src
					order = append(order, name)
					if _, ok := got["go.mod"]; !ok {
						got["go.mod"] = gogen.GoMod(cfg.Name, "1.26", goldenReplace)
						order = append(order, "go.mod")
					}
				}
			}
			if *update {
				out := &txtar.Archive{Comment: ar.Comment}
				for _, f := range ar.Files {
					if _, generated := got[f.Name]; !generated {
						out.Files = append(out.Files, f)
					}
				}
				for _, name := range order {
					out.Files = append(out.Files, txtar.File{Name: name, Data: []byte(got[name])})
				}
				if err := os.WriteFile(path, txtar.Format(out), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want := map[string]string{}
			for _, f := range ar.Files {
				want[f.Name] = string(f.Data)
			}
			for _, name := range order {
				w, ok := want[name]
				if !ok {
					t.Errorf("%s: no -- %s -- section; run go test ./codegen/gogen -update", path, name)
					continue
				}
				if w != got[name] {
					t.Errorf("%s: section %s is stale:\n%s\nrun go test ./codegen/gogen -update and review the diff", path, name, firstDiff(w, got[name]))
				}
			}
		})
	}
}

// firstDiff shows the first line where want and got differ.
func firstDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < max(len(w), len(g)); i++ {
		var a, b string
		if i < len(w) {
			a = w[i]
		}
		if i < len(g) {
			b = g[i]
		}
		if a != b {
			return "line " + strconv.Itoa(i+1) + ":\n  golden:    " + a + "\n  generated: " + b
		}
	}
	return "(identical lines, different length)"
}
