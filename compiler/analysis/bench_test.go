package analysis_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/moec-dev/moec/compiler/analysis"
	"github.com/moec-dev/moec/compiler/check"
	"github.com/moec-dev/moec/compiler/params"
	"github.com/moec-dev/moec/compiler/program"
)

// benchModel loads a shipped model without a *testing.T.
func benchModel(b *testing.B, file, name string) *program.Model {
	b.Helper()
	prog, _, ds := check.Load(filepath.Join("..", "..", "models", file), os.ReadFile)
	if ds.HasErrors() {
		b.Fatal(ds.Err())
	}
	m := prog.Models[name]
	if m == nil {
		b.Fatalf("%s: no model %s", file, name)
	}
	return m
}

var benchModels = []struct{ file, name string }{
	{"mixtral-8x7b.moe", "mixtral_8x7b"},
	{"deepseek-v3.moe", "deepseek_v3"},
	{"switch-c-2048.moe", "switch_c_2048"},
	{"hunyuan1t.moe", "hunyuan_1t"},
}

// BenchmarkCount is the closed-form count of published models, 1T-parameter ones included.
func BenchmarkCount(b *testing.B) {
	for _, bm := range benchModels {
		m := benchModel(b, bm.file, bm.name)
		b.Run(bm.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				analysis.Count(m)
				analysis.CountFLOPs(m, 0)
			}
		})
	}
}

// BenchmarkWalk is what listing every parameter (params.Walk) costs for the models the
// walker covers: the price of counting from the list instead of the closed form.
func BenchmarkWalk(b *testing.B) {
	for _, bm := range benchModels {
		m := benchModel(b, bm.file, bm.name)
		if _, err := params.Walk(m); err != nil {
			continue // MLA, encoder-decoder, MTP: no list to walk
		}
		b.Run(bm.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				ps, _ := params.Walk(m)
				var n int64
				for _, p := range ps {
					n += p.Elements()
				}
				if n != analysis.Count(m).TotalAll {
					b.Fatalf("walk %d, count %d", n, analysis.Count(m).TotalAll)
				}
			}
		})
	}
}
