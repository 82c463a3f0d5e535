package plan

import (
	"os"
	"testing"

	"github.com/moec-dev/moec/compiler/check"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
)

// TestPlansLower: every layout the planner chooses for the shipped curricula lowers to a
// step program (the search skips splits the step program cannot run for the model), so
// moec build writes every stage's program.txt. HunYuan-1T has talking heads, attention
// sharing and token-embedding routing: no tensor or pipeline split lowers for it.
func TestPlansLower(t *testing.T) {
	for _, path := range []string{"../../models/hunyuan1t.moe", "../../examples/hunyuan_tiny.moe", "../../examples/seed-claims.moe"} {
		prog, _, ds := check.Load(path, os.ReadFile)
		if ds.HasErrors() {
			t.Fatalf("%s: %v", path, ds)
		}
		for _, tn := range prog.TrainOrder {
			tr := prog.Trains[tn]
			for _, st := range tr.Stages {
				p, ds := ForStage(prog, tr, st, Options{})
				if p == nil {
					t.Fatalf("%s stage %s: no plan: %v", path, st.Name, ds)
				}
				m := program.StageModel(prog.Models[tr.Model], st)
				seq := tr.SeqLen
				if seq <= 0 {
					seq = m.SeqLen
				}
				l := p.Layout
				_, err := step.LowerRank(m, step.Batch{MicroBatch: l.MicroBatch, SeqLen: int(seq), Micro: max(l.GradAccum, 1)},
					step.Layout{DP: l.DP, EP: max(l.EP, 1), TP: l.TP, PP: l.PP, ZeRO: l.ZeRO, OffloadOpt: l.Offload == "cpu" || l.Memory == "unified_cache",
						Recompute: l.Recompute, SequenceParallel: p.assumes("sequence_parallel")}, 0)
				t.Logf("%s stage %s: tp %d, sequence parallel %v, recompute %s", path, st.Name, l.TP, p.assumes("sequence_parallel"), l.Recompute)
				if err != nil {
					t.Errorf("%s stage %s: the plan's layout (dp %d ep %d tp %d pp %d) does not lower: %v", path, st.Name, l.DP, l.EP, l.TP, l.PP, err)
				}
			}
		}
	}
}

// assumes reports whether the plan's assumption name is true.
func (p *Plan) assumes(name string) bool {
	for _, a := range p.Assumptions {
		if a.Name == name {
			return a.Value == "true"
		}
	}
	return false
}
