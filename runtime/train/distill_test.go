package train

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/moec-dev/moec/compiler/check"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/lang/diag"
)

// distillRun trains testdata/distill.moe's stages in order into one out root, through
// step programs (the default engine of `moec run`).
type distillRun struct {
	t    *testing.T
	prog *program.Program
	root string
	base string
}

func newDistillRun(t *testing.T) *distillRun {
	t.Helper()
	prog, _, diags := check.Load("testdata/distill.moe", os.ReadFile)
	if diags.HasErrors() {
		t.Fatalf("testdata/distill.moe does not check:\n%v", diags.Err())
	}
	base, _ := filepath.Abs("testdata")
	return &distillRun{t: t, prog: prog, root: t.TempDir(), base: base}
}

func (d *distillRun) options(stage string) Options {
	return Options{Program: d.prog, OutRoot: d.root, BaseDir: d.base, StageName: stage, ValWindows: 4,
		Layout: &Sharding{Ranks: 1, EP: 1, Program: true}}
}

func (d *distillRun) run(stage string) (*Result, []StepRecord) {
	d.t.Helper()
	res, err := Run(context.Background(), d.options(stage))
	if err != nil {
		d.t.Fatalf("stage %s: %v", stage, err)
	}
	recs, err := ReadLog(res.LogPath)
	if err != nil {
		d.t.Fatal(err)
	}
	return res, recs
}

func meanOf(recs []StepRecord, f func(StepRecord) float64) float64 {
	var s float64
	for _, r := range recs {
		s += f(r)
	}
	return s / float64(len(recs))
}

// TestDistillStage trains a dense teacher, then a one-layer student distilled from it:
// the student's loss and its soft loss (T²·KL to the teacher) fall; a distill stage run
// before its teacher is refused like a grown stage; a student killed after its first
// checkpoint resumes (its teacher loaded again) and ends exactly where the run that was
// never stopped ends.
func TestDistillStage(t *testing.T) {
	d := newDistillRun(t)
	if _, err := Run(context.Background(), d.options("student")); diag.CodeOf(err) != diag.CodeNoFromCheckpoint {
		t.Fatalf("student before its teacher: %v, want %s", err, diag.CodeNoFromCheckpoint)
	}
	d.run("teacher")
	res, recs := d.run("student")
	if len(recs) != 24 {
		t.Fatalf("%d steps logged", len(recs))
	}
	first, last := recs[:6], recs[len(recs)-6:]
	loss := func(r StepRecord) float64 { return r.Loss }
	soft := func(r StepRecord) float64 { return r.SoftLoss }
	if a, b := meanOf(first, loss), meanOf(last, loss); !(b < a) {
		t.Errorf("the student's loss did not fall: %.4f over the first steps, %.4f over the last", a, b)
	}
	if a, b := meanOf(first, soft), meanOf(last, soft); !(b < 0.8*a) || a <= 0 {
		t.Errorf("the soft loss did not fall: %.4f over the first steps, %.4f over the last", a, b)
	}
	for _, r := range recs {
		if want := 0.3*r.CE + 0.7*r.SoftLoss; !close(r.Loss, want, 1e-9) {
			t.Fatalf("step %d: loss %v, want 0.3·CE + 0.7·soft = %v", r.Step, r.Loss, want)
		}
	}
	spec, err := ReadSpec(res.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if spec.Teacher == "" || spec.Model.Layers != 1 || spec.Model.MoE != nil {
		t.Errorf("run.json: teacher %q, student of %d layers, moe %v", spec.Teacher, spec.Model.Layers, spec.Model.MoE)
	}

	// Stopped at its first checkpoint, then resumed.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	opt := d.options("student")
	opt.OutDir = filepath.Join(d.root, "interrupted")
	stopped := false
	opt.CheckpointHook = func(point string) {
		if point == "renamed" && !stopped {
			stopped = true
			cancel()
		}
	}
	part, err := Run(ctx, opt)
	if err == nil || !part.Stopped || part.Steps >= 24 {
		t.Fatalf("interrupted run: %+v, %v", part, err)
	}
	resumed, err := Run(context.Background(), Options{Program: d.prog, Resume: part.Dir, ValWindows: 4, Layout: opt.Layout})
	if err != nil {
		t.Fatal(err)
	}
	again, err := ReadLog(resumed.LogPath)
	if err != nil || len(again) != len(recs) {
		t.Fatalf("resumed log: %d steps, %v", len(again), err)
	}
	for i := range recs {
		if again[i].Loss != recs[i].Loss || again[i].SoftLoss != recs[i].SoftLoss {
			t.Fatalf("step %d: loss %v, soft %v after the resume; %v, %v without", i+1, again[i].Loss, again[i].SoftLoss, recs[i].Loss, recs[i].SoftLoss)
		}
	}
	want, got := finalWeightsOf(t, res.Checkpoint), finalWeightsOf(t, resumed.Checkpoint)
	for name, w := range want {
		for j := range w {
			if got[name][j] != w[j] {
				t.Fatalf("%s[%d] = %v after the resume, %v without", name, j, got[name][j], w[j])
			}
		}
	}
}

// TestDistillWithoutSoftLoss: a distill stage that weighs the soft loss zero and the
// labels one trains exactly as a plain stage of the same model does (the same losses and
// final weights, bit for bit), though its teacher runs beside it.
func TestDistillWithoutSoftLoss(t *testing.T) {
	d := newDistillRun(t)
	d.run("teacher")
	hard, hardRecs := d.run("hard_only")
	plain, plainRecs := d.run("plain")
	if len(hardRecs) != len(plainRecs) {
		t.Fatalf("%d steps, plain %d", len(hardRecs), len(plainRecs))
	}
	for i := range plainRecs {
		h, p := hardRecs[i], plainRecs[i]
		if h.Loss != p.Loss || h.CE != p.CE || h.GradNorm != p.GradNorm {
			t.Fatalf("step %d: loss %v ce %v norm %v; plain %v %v %v", i+1, h.Loss, h.CE, h.GradNorm, p.Loss, p.CE, p.GradNorm)
		}
		if h.SoftLoss <= 0 {
			t.Fatalf("step %d: soft loss %v: the teacher did not run", i+1, h.SoftLoss)
		}
	}
	want, got := finalWeightsOf(t, plain.Checkpoint), finalWeightsOf(t, hard.Checkpoint)
	for name, w := range want {
		for j := range w {
			if got[name][j] != w[j] {
				t.Fatalf("%s[%d] = %v, plain %v", name, j, got[name][j], w[j])
			}
		}
	}
}

// TestDistillNeedsStepPrograms: the hand-written engine has no teacher, and says so.
func TestDistillNeedsStepPrograms(t *testing.T) {
	d := newDistillRun(t)
	d.run("teacher")
	opt := d.options("student")
	opt.Layout = nil
	if _, err := Run(context.Background(), opt); diag.CodeOf(err) != diag.CodeUnsupportedFeature {
		t.Fatalf("student on the hand-written engine: %v, want %s", err, diag.CodeUnsupportedFeature)
	}
}

// TestDistillInitFromTeacher: init = teacher starts the student from the teacher's
// tensors it shares (its one layer is the teacher's first; the embeddings, norms and head
// the teacher's), so its first step's soft loss is far below a randomly initialised
// student's.
func TestDistillInitFromTeacher(t *testing.T) {
	d := newDistillRun(t)
	d.run("teacher")
	_, cold := d.run("student")
	_, warm := d.run("warm")
	t.Logf("first soft loss: %.4f warm, %.4f cold", warm[0].SoftLoss, cold[0].SoftLoss)
	if !(warm[0].SoftLoss < 0.5*cold[0].SoftLoss) {
		t.Errorf("first step's soft loss %.4f from the teacher's tensors, %.4f from random ones", warm[0].SoftLoss, cold[0].SoftLoss)
	}
}

// TestDistillStageUnderTP: the student trained by `moec run --tp 2` (and on 4 ranks,
// dp 2 × tp 2), its loss vocabulary-parallel and each tp rank's teacher sliced, logs the
// losses and soft losses one rank logs, step by step within 1e-5.
func TestDistillStageUnderTP(t *testing.T) {
	d := newDistillRun(t)
	d.run("teacher")
	_, want := d.run("student")
	for _, l := range []Sharding{{Ranks: 2, EP: 1, TP: 2}, {Ranks: 4, EP: 1, TP: 2, ZeRO: 1}} {
		t.Run(l.String(), func(t *testing.T) {
			opt := d.options("student")
			opt.OutDir = filepath.Join(d.root, fmt.Sprintf("tp%d-ranks%d", l.TP, l.Ranks))
			opt.Layout = &l
			res, err := Run(context.Background(), opt)
			if err != nil {
				t.Fatal(err)
			}
			got, err := ReadLog(res.LogPath)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(want) {
				t.Fatalf("%d steps logged, one rank %d", len(got), len(want))
			}
			rel := func(a, b float64) bool { return math.Abs(a-b) <= 1e-5*math.Abs(b) }
			for i := range got {
				if !rel(got[i].Loss, want[i].Loss) || !rel(got[i].SoftLoss, want[i].SoftLoss) {
					t.Errorf("step %d: loss %.9g soft %.9g, one rank %.9g %.9g", i+1, got[i].Loss, got[i].SoftLoss, want[i].Loss, want[i].SoftLoss)
				}
			}
		})
	}
}
