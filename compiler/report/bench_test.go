package report

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/moec-dev/moec/compiler/analysis"
	"github.com/moec-dev/moec/compiler/check"
)

// BenchmarkFrontEndHunyuan1T times the front end on models/hunyuan1t.moe: parse, check,
// and the exact count and FLOPs of every model and of every curriculum stage's model.
func BenchmarkFrontEndHunyuan1T(b *testing.B) {
	path := filepath.Join("..", "..", "models", "hunyuan1t.moe")
	src, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	read := func(p string) ([]byte, error) {
		if p == path {
			return src, nil
		}
		return os.ReadFile(p)
	}
	b.SetBytes(int64(len(src)))
	b.ReportAllocs()
	for b.Loop() {
		prog, _, diags := check.Load(path, read)
		if diags.HasErrors() {
			b.Fatalf("%v", diags)
		}
		var total int64
		for _, m := range prog.Models {
			total += analysis.Count(m).TotalAll
			_ = analysis.CountFLOPs(m, 0)
		}
		for _, t := range prog.Trains {
			for _, st := range t.Stages {
				_ = analysis.StageFLOPs(prog.Models[t.Model], t, st)
			}
		}
		if total == 0 {
			b.Fatal("nothing counted")
		}
	}
}
