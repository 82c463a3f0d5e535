package plan

import (
	"strings"
	"testing"

	"github.com/moec-dev/moec/compiler/analysis"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
)

// TestDistillPlansTheTeacher: a distillation stage's GPU plan holds the teacher's weights
// in each device's memory (its model-parallel share) and its forward in the compute time;
// the same student trained on labels alone holds neither.
func TestDistillPlansTheTeacher(t *testing.T) {
	prog := hunyuanProgram(t, 8)
	tr := prog.Trains["hunyuan"]
	labels := &program.Stage{Name: "labels", Experts: 1, Tokens: 10e9}
	student := &program.Stage{Name: "student", From: "hundred_billion", Experts: 1, Tokens: 10e9,
		Distill: &program.Distill{Temperature: 2, SoftWeight: 0.5, HardWeight: 0.5}}
	tr.Stages = append(tr.Stages, labels, student)

	teacherRow := func(p *Plan) int64 {
		for _, c := range p.Memory[0].Components {
			if c.Name == "teacher weights" {
				return c.Bytes
			}
		}
		return -1
	}
	plain, ds := ForStage(prog, tr, labels, Options{})
	if plain == nil {
		t.Fatal(ds.Err())
	}
	if teacherRow(plain) != -1 || plain.Time.TeacherSeconds != 0 {
		t.Errorf("a stage without a teacher plans one: row %d, %v s", teacherRow(plain), plain.Time.TeacherSeconds)
	}
	p, ds := ForStage(prog, tr, student, Options{})
	if p == nil {
		t.Fatal(ds.Err())
	}
	// The teacher's weights: the hundred-billion stage sliced by the plan's tp and pp, its
	// experts over the data-parallel ranks, at the training precision's two bytes.
	tm := program.StageModel(prog.Models["hunyuan"], tr.Stages[1])
	c := analysis.Count(tm)
	experts := float64(c.Total.RoutedExperts)
	dense := float64(c.TotalAll) - experts
	l := p.Layout
	ep := gcd(l.DP, tm.MoE.Experts) // the teacher's experts spread over the data-parallel ranks
	want := 2 * (dense/float64(l.TP) + experts/float64(l.TP*ep)) / float64(l.PP)
	if got := float64(teacherRow(p)); got < want-1 || got > want+1 {
		t.Errorf("teacher weights %v bytes per device under %+v, want %v", got, l, want)
	}
	if p.Time.TeacherSeconds <= 0 || p.Time.TeacherSeconds >= p.Time.ComputeSeconds {
		t.Errorf("teacher seconds %v of compute %v", p.Time.TeacherSeconds, p.Time.ComputeSeconds)
	}
	// The forward of the 100B-parameter teacher (top-1 of 128 experts: about the dense
	// student's active size) costs about a third of the student's forward and backward.
	if r := p.Time.TeacherSeconds / (p.Time.ComputeSeconds - p.Time.TeacherSeconds); r < 0.15 || r > 0.6 {
		t.Errorf("teacher forward / student step = %.2f, want about 1/3", r)
	}
}

// TestDistillLocalPlanUnderTP: a distillation stage's local plan at tp 2 is its
// vocabulary-parallel step programs' memory (each rank's slice of the teacher's logits
// included), not a layout no rank can run.
func TestDistillLocalPlanUnderTP(t *testing.T) {
	src := strings.Replace(tinyCPU("16GiB"), "  stage four from dense",
		"  stage student distill from dense { experts = 1; temperature = 2; soft_weight = 0.5; hard_weight = 0.5; tokens = 10k }\n  stage four from dense", 1)
	prog := loadSource(t, src)
	tr := prog.Trains[prog.TrainOrder[0]]
	st, err := tr.LookupStage("student")
	if err != nil {
		t.Fatal(err)
	}
	p, ds := LocalWith(prog, tr, st, 2, LocalOptions{TP: 2})
	if p == nil || ds.HasErrors() {
		t.Fatalf("tp 2: %v", ds.Err())
	}
	l := p.Layout
	if l.TP != 2 {
		t.Fatalf("layout %+v, want tp 2", l)
	}
	sl := step.Layout{DP: l.DP, EP: l.EP, TP: l.TP, PP: l.PP, ZeRO: l.ZeRO, Recompute: l.Recompute, Distill: stepDistill(st)}
	progs, err := step.Lower(program.StageModel(prog.Models[tr.Model], st), step.Batch{MicroBatch: l.MicroBatch, SeqLen: 32, Micro: l.GradAccum}, sl)
	if err != nil {
		t.Fatalf("%s: %v", sl, err)
	}
	for r, pr := range p.Placement.Ranks {
		pm := MemoryOf(progs[r])
		if pr.ArenaDevice != pm.Arena[step.Device] || pr.ArenaDevice == 0 {
			t.Errorf("rank %d: plan arena %d, the distilling program's %d", r, pr.ArenaDevice, pm.Arena[step.Device])
		}
	}
}
