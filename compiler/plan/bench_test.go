package plan

import (
	"os"
	"testing"

	"github.com/moec-dev/moec/compiler/check"
)

// BenchmarkSearchHunyuan1T2000GPUs plans the trillion stage of models/hunyuan1t.moe on
// 250 nodes of 8 A100-40GB, searching every memory strategy, recompute mode and
// micro-batch. The issue asks for under a second per plan.
func BenchmarkSearchHunyuan1T2000GPUs(b *testing.B) {
	prog, _, ds := check.Load("../../models/hunyuan1t.moe", os.ReadFile)
	if ds.HasErrors() {
		b.Fatal(ds.Err())
	}
	tr := prog.Trains[prog.TrainOrder[0]]
	st := tr.Stages[len(tr.Stages)-1]
	prog.Clusters[tr.Cluster].Nodes = 250
	b.ReportAllocs()
	for b.Loop() {
		p, ds := ForStage(prog, tr, st, Options{Memory: "auto"})
		if p == nil {
			b.Fatal(ds.Err())
		}
		if p.GPUs > 2000 {
			b.Fatalf("plan uses %d GPUs", p.GPUs)
		}
		b.ReportMetric(float64(p.Searched), "layouts/op")
	}
}
