package report

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/moec-dev/moec/compiler/check"
	"github.com/moec-dev/moec/compiler/plan"
	"github.com/moec-dev/moec/internal/human"
)

// TestTrainTableStepsArePlanSteps: where a stage was planned, the train table counts its
// steps at the batch the plan runs, the same number the plan section prints, for report.md
// (plans passed in sections) and report.html (BuildPlanned) alike.
func TestTrainTableStepsArePlanSteps(t *testing.T) {
	path := "../../models/hunyuan1t.moe"
	prog, _, ds := check.Load(path, os.ReadFile)
	if ds.HasErrors() {
		t.Fatal(ds.Err())
	}
	var sections []Section
	var plans []*plan.Plan
	want := map[string]*plan.Plan{}
	differ := 0
	for _, tn := range prog.TrainOrder {
		tr := prog.Trains[tn]
		for _, st := range tr.Stages {
			p, ds := plan.ForStage(prog, tr, st, plan.Options{})
			if p == nil {
				t.Fatalf("%s: %v", st.Name, ds.Err())
			}
			if p.Workload.BatchTokens != tr.TokensPerBatch {
				differ++
			}
			want[tn+"/"+st.Name] = p
			plans = append(plans, p)
			sections = append(sections, Section{Title: "Plan: " + st.Name, Markdown: p.Markdown(), Plan: p})
		}
	}
	if differ == 0 {
		t.Fatal("every plan runs the written batch: the test cannot tell plan steps from written ones")
	}
	for _, r := range []*Report{Build(prog, path, sections), BuildPlanned(prog, path, plans)} {
		md := string(Markdown(r, sections))
		for _, tr := range r.Trains {
			for _, s := range tr.Stages {
				p := want[tr.Model+"/"+s.Name]
				if p == nil {
					t.Fatalf("no plan for %s/%s", tr.Model, s.Name)
				}
				if s.Steps != p.Totals.Steps || s.BatchTokens != p.Workload.BatchTokens || !s.Planned {
					t.Errorf("%s: train table %d steps at %d tokens (planned %t); the plan %d steps at %d",
						s.Name, s.Steps, s.BatchTokens, s.Planned, p.Totals.Steps, p.Workload.BatchTokens)
				}
				row := fmt.Sprintf("| %s | %s |", batchCell(s, tr.TokensPerBatch), human.Exact(s.Steps))
				if !strings.Contains(md, row) || !strings.Contains(md, ": "+human.Exact(p.Totals.Steps)+" steps") {
					t.Errorf("%s: report.md lacks the row cells %q or the plan's step count", s.Name, row)
				}
			}
		}
	}
}
