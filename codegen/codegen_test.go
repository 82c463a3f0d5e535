package codegen_test

import (
	"encoding/json"
	"flag"
	"path/filepath"
	"testing"

	"github.com/moec-dev/moec/codegen"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/internal/golden"
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

// TestGolden generates the kernels for each testdata/*.txtar's `-- model.json --` and
// compares every generated file with its section.
func TestGolden(t *testing.T) {
	golden.Files(t, "testdata/*.txtar", *update, func(t *testing.T, in map[string][]byte) []golden.Section {
		data, ok := in["model.json"]
		if !ok {
			t.Fatal("no model.json section")
		}
		var m program.Model
		if err := json.Unmarshal(data, &m); err != nil {
			t.Fatalf("model.json: %v", err)
		}
		sh, err := kernels.ShapeOf(&m)
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
		var out []golden.Section
		for _, s := range sections {
			out = append(out, golden.Section{Name: s[1], Data: []byte(got[s[0]])})
		}
		return out
	})
}
