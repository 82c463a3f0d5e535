package train

import (
	"os"
	"strings"
	"testing"

	"github.com/moec-dev/moec/compiler/check"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
)

// TestGradBucketSettingReachesTheProgram: the train block's zero(bucket = …) reaches the
// step layout a run lowers (Sharding.GradBucket) and changes the number of gradient
// buckets in the lowered program: a bucket smaller than the default's gives more buckets,
// and the programs still verify.
func TestGradBucketSettingReachesTheProgram(t *testing.T) {
	src, err := os.ReadFile("../../examples/hunyuan_tiny.moe")
	if err != nil {
		t.Fatal(err)
	}
	buckets := func(memory string) (int64, int) {
		text := strings.Replace(string(src), "  precision        = fp32\n", "  precision        = fp32\n"+memory, 1)
		if memory != "" && text == string(src) {
			t.Fatal("examples/hunyuan_tiny.moe has no precision line to add the memory block after")
		}
		prog, _, ds := check.Load("hunyuan_tiny.moe", func(string) ([]byte, error) { return []byte(text), nil })
		if ds.HasErrors() {
			t.Fatalf("%v", ds)
		}
		tr := prog.Trains["hunyuan_tiny"]
		l := Sharding{Ranks: 2, EP: 1, ZeRO: tr.Memory.ZeROStage, Program: true, GradBucket: tr.Memory.GradBucket}
		m := program.StageModel(prog.Models["hunyuan_tiny"], tr.Stages[1])
		progs, err := step.Lower(m, step.Batch{MicroBatch: 2, SeqLen: 16, Micro: 2}, stepLayout(l))
		if err != nil {
			t.Fatal(err)
		}
		if err := step.VerifyLayout(progs); err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, op := range progs[0].Ops {
			if op.Kind == step.OpAllReduce && op.Phase == step.Reduce && strings.Contains(op.Attr, "bucket") {
				n++
			}
		}
		return tr.Memory.GradBucket, n
	}
	_, def := buckets("")
	set, small := buckets("  memory           = zero(1, bucket = 4KiB)\n")
	if set != 4<<10 {
		t.Fatalf("zero(1, bucket = 4KiB) gives a bucket of %d bytes, want %d", set, 4<<10)
	}
	if def < step.MinGradBuckets || small <= def {
		t.Errorf("buckets: %d with the default, %d with bucket = 4KiB; want at least %d, then more", def, small, step.MinGradBuckets)
	}
	t.Logf("buckets on rank 0: %d by default, %d with bucket = 4KiB", def, small)
}
