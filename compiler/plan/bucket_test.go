package plan

import (
	"strings"
	"testing"

	"golang.org/x/tools/txtar"

	"github.com/moec-dev/moec/compiler/check"
)

// TestGradBucketSetting: the train block's zero(bucket = …) replaces the planner's
// grad_bucket assumption in the plan report (and so the bucket in the temporary memory);
// without it the assumption keeps its default.
func TestGradBucketSetting(t *testing.T) {
	base := goldenInput(t, "testdata/nofit.txtar")
	for _, tc := range []struct {
		bucket int64
		want   string
	}{{0, "477 MiB"}, {64 << 20, "64 MiB"}} {
		prog := base
		if tc.bucket > 0 {
			ar := readInput(t, "testdata/nofit.txtar")
			src := strings.Replace(ar, "memory           = zero(1)\n", "memory           = zero(1, bucket = 64MiB)\n", 1)
			if src == ar {
				t.Fatal("nofit.txtar has no `memory = zero(1)` to give a bucket")
			}
			p, _, ds := check.Load("input.moe", func(string) ([]byte, error) { return []byte(src), nil })
			if ds.HasErrors() {
				t.Fatal(ds.Err())
			}
			prog = p
		}
		tr := prog.Trains[prog.TrainOrder[0]]
		if tr.Memory.GradBucket != tc.bucket {
			t.Fatalf("train %s: bucket %d bytes, want %d", tr.Name, tr.Memory.GradBucket, tc.bucket)
		}
		p, _ := ForStage(prog, tr, tr.Stages[0], Options{})
		if p == nil {
			t.Fatalf("bucket %d: no plan", tc.bucket)
		}
		got := ""
		for _, a := range p.Assumptions {
			if a.Name == "grad_bucket" {
				got = a.Value
			}
		}
		if got != tc.want {
			t.Errorf("bucket %d: grad_bucket = %q, want %q", tc.bucket, got, tc.want)
		}
	}
}

// readInput is the input.moe text of a golden file.
func readInput(t *testing.T, path string) string {
	t.Helper()
	ar, err := txtar.ParseFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range ar.Files {
		if f.Name == "input.moe" {
			return string(f.Data)
		}
	}
	t.Fatalf("%s has no input.moe", path)
	return ""
}
