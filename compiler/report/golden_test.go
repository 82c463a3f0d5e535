package report

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/tools/txtar"

	"github.com/moec-dev/moec/compiler/check"
)

// TestGolden renders each testdata/*.txtar's `-- input.moe --` through the checker and
// compares report.md with `-- report --` and report.json with `-- report.json --`.
func TestGolden(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.txtar"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no golden files in testdata")
	}
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) {
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			var input *txtar.File
			for i, f := range txtar.Parse(data).Files {
				if f.Name == "input.moe" {
					input = &txtar.Parse(data).Files[i]
				}
			}
			if input == nil {
				t.Fatalf("%s has no -- input.moe -- section", path)
			}
			src := filepath.Join(t.TempDir(), "input.moe")
			if err := os.WriteFile(src, input.Data, 0o644); err != nil {
				t.Fatal(err)
			}
			prog, _, diags := check.Load(src, os.ReadFile)
			for _, d := range diags {
				t.Errorf("%v", d)
			}
			if diags.HasErrors() {
				t.FailNow()
			}
			r := Build(prog, "input.moe", nil)
			js, err := JSON(r)
			if err != nil {
				t.Fatal(err)
			}
			golden(t, path, []txtar.File{*input}, map[string][]byte{"report": Markdown(r, nil), "report.json": js})
		})
	}
}

// TestModelReports renders the report of each models/*.moe into
// testdata/models/NAME.golden, so a change to a published model's numbers shows up in review
// as a diff of the report a person reads.
func TestModelReports(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "..", "models", "*.moe"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 4 {
		t.Fatalf("found %d models/*.moe files, want at least 4", len(files))
	}
	if *update {
		if err := os.MkdirAll(filepath.Join("testdata", "models"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, src := range files {
		name := strings.TrimSuffix(filepath.Base(src), ".moe")
		t.Run(name, func(t *testing.T) {
			prog, _, diags := check.Load(src, os.ReadFile)
			for _, d := range diags {
				t.Errorf("%v", d)
			}
			if diags.HasErrors() {
				t.FailNow()
			}
			r := Build(prog, "models/"+filepath.Base(src), nil)
			js, err := JSON(r)
			if err != nil {
				t.Fatal(err)
			}
			golden(t, filepath.Join("testdata", "models", name+".golden"), nil,
				map[string][]byte{"report": Markdown(r, nil), "report.json": js})
		})
	}
}
