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
	"github.com/moec-dev/moec/internal/golden"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// loadArchive checks the archive's input.moe, reading imports from the archive too.
func loadArchive(t *testing.T, ar *txtar.Archive) *program.Program {
	t.Helper()
	files := map[string][]byte{}
	for _, f := range ar.Files {
		files[f.Name] = f.Data
	}
	return loadSections(t, files)
}

// loadSections checks files["input.moe"], reading its imports from files too.
func loadSections(t *testing.T, files map[string][]byte) *program.Program {
	t.Helper()
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

// TestGolden generates the program of every train stage of each testdata/*.txtar's
// input.moe (section "go", or "go <stage>" when there are several) and the go.mod.
func TestGolden(t *testing.T) {
	golden.Files(t, "testdata/*.txtar", *update, func(t *testing.T, in map[string][]byte) []golden.Section {
		prog := loadSections(t, in)
		var out []golden.Section
		haveMod := false
		for _, tn := range prog.TrainOrder {
			tr := prog.Trains[tn]
			for _, st := range tr.Stages {
				cfg, err := gogen.ConfigFor(prog, tr, st)
				if err != nil {
					t.Fatal(err)
				}
				// As Emit records it for input.moe at the root of a clone built into out/.
				cfg.SourceDir = goldenReplace
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
				out = append(out, golden.Section{Name: stageSection(tr, st), Data: []byte(src)})
				if !haveMod {
					out = append(out, golden.Section{Name: "go.mod", Data: []byte(gogen.GoMod(cfg.Name, "1.26", goldenReplace))})
					haveMod = true
				}
			}
		}
		return out
	})
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
