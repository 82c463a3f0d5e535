package plan

import (
	"testing"

	"github.com/moec-dev/moec/compiler/program"
)

// TestWorkloadReadsDims: the planner sizes a model built in Go with its defaults unset as
// the runtime and the counter do (program.Model.Dims): the experts take the FFN's
// activation when they name none, whatever their width.
func TestWorkloadReadsDims(t *testing.T) {
	base := func() *program.Model {
		// A literal on purpose: the test is of the defaults left unset, which the checker fills.
		return &program.Model{Name: "w", Vocab: 100, DModel: 64, Layers: 2, SeqLen: 32, Position: program.Rotary,
			Attention: program.Attention{Heads: 4},
			FFN:       program.FFN{Hidden: 128, Activation: program.SwiGLU},
			MoE:       &program.MoE{Experts: 4, TopK: 2, Score: program.Softmax}}
	}
	for _, tc := range []struct {
		name   string
		change func(*program.Model)
		check  func(*testing.T, *workload)
	}{
		{"defaults", func(*program.Model) {}, func(t *testing.T, w *workload) {
			if w.kvHeads != 4 || w.qDim != 64 || w.kvDim != 64 || w.expertHidden != 128 || w.sharedHidden != 128 || !w.expertGated {
				t.Errorf("kv heads %d, q %d, kv %d, expert hidden %d, shared hidden %d, expert gated %v",
					w.kvHeads, w.qDim, w.kvDim, w.expertHidden, w.sharedHidden, w.expertGated)
			}
		}},
		{"expert width without an activation", func(m *program.Model) { m.MoE.ExpertHidden = 32 }, func(t *testing.T, w *workload) {
			if w.expertHidden != 32 || !w.expertGated {
				t.Errorf("expert hidden %d, gated %v: want 32 and the FFN's swiglu", w.expertHidden, w.expertGated)
			}
		}},
		{"expert activation without a width", func(m *program.Model) { m.MoE.Activation = program.GELU }, func(t *testing.T, w *workload) {
			if w.expertHidden != 128 || w.expertGated {
				t.Errorf("expert hidden %d, gated %v: want the FFN's 128 and the experts' own gelu", w.expertHidden, w.expertGated)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := base()
			tc.change(m)
			a := DefaultAssumptions(program.BF16)
			tc.check(t, newWorkload(m, 0, &a))
		})
	}
}
