package step_test

import (
	"math/rand/v2"
	"testing"

	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/compiler/step/steptest"
)

// TestRandomModelsLower lowers random models at random layouts: each either lowers and
// passes VerifyLayout (collectives matched, sends received, buffers written before read,
// no overlap in the arenas) or is refused with a LayoutError; nothing panics.
func TestRandomModelsLower(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 11))
	lowered := 0
	for i := 0; i < 300; i++ {
		m := steptest.Model(r, "rnd")
		l := steptest.Layout(r, m)
		b := step.Batch{MicroBatch: 1 + r.IntN(2), SeqLen: 8, Micro: 1 + r.IntN(3)}
		progs, err := step.Lower(m, b, l)
		if err != nil {
			if _, ok := err.(*step.LayoutError); !ok {
				t.Fatalf("%s at %s: %v", steptest.String(m), l, err)
			}
			continue
		}
		if err := step.VerifyLayout(progs); err != nil {
			t.Fatalf("%s at %s:\n%v", steptest.String(m), l, err)
		}
		lowered++
	}
	t.Logf("%d of 300 random models and layouts lowered and verified", lowered)
	if lowered < 100 {
		t.Errorf("only %d lowered", lowered)
	}
}
