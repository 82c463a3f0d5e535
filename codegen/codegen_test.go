package codegen_test

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/tools/txtar"

	"github.com/moec-dev/moec/codegen"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/kernels"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// sections maps generated files to golden sections.
var sections = [][2]string{
	{"cuda/moe_kernels.cu", "cu"},
	{"cuda/moe_host.cu", "host"},
	{"cuda/moe_kernels.h", "h"},
	{"llvm/moe_kernels.ll", "ll"},
}

func readModel(t *testing.T, ar *txtar.Archive) *program.Model {
	t.Helper()
	for _, f := range ar.Files {
		if f.Name == "model.json" {
			var m program.Model
			if err := json.Unmarshal(f.Data, &m); err != nil {
				t.Fatalf("model.json: %v", err)
			}
			return &m
		}
	}
	t.Fatal("no model.json section")
	return nil
}

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
			m := readModel(t, ar)
			sh, err := kernels.ShapeOf(m)
			if err != nil {
				t.Fatal(err)
			}
			files, err := codegen.Generate(codegen.Ident(m.Name, "s"), sh)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			for _, f := range files {
				got[filepath.ToSlash(f.Path)] = f.Text
			}
			if *update {
				out := &txtar.Archive{Comment: ar.Comment}
				for _, f := range ar.Files {
					if f.Name == "model.json" {
						out.Files = append(out.Files, f)
					}
				}
				for _, s := range sections {
					out.Files = append(out.Files, txtar.File{Name: s[1], Data: []byte(got[s[0]])})
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
			for _, s := range sections {
				w, ok := want[s[1]]
				if !ok {
					t.Errorf("section -- %s -- missing; run go test ./codegen -update", s[1])
					continue
				}
				if w != got[s[0]] {
					t.Errorf("%s is stale (section -- %s --): %s; run go test ./codegen -update and review the diff",
						s[0], s[1], firstDiff(w, got[s[0]]))
				}
			}
		})
	}
}

func firstDiff(want, got string) string {
	wl, gl := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < len(wl) && i < len(gl); i++ {
		if wl[i] != gl[i] {
			return "line " + itoa(i+1) + ": want " + quote(wl[i]) + ", got " + quote(gl[i])
		}
	}
	return "lengths differ: want " + itoa(len(wl)) + " lines, got " + itoa(len(gl))
}

func itoa(i int) string     { return strconv.Itoa(i) }
func quote(s string) string { return strconv.Quote(s) }
