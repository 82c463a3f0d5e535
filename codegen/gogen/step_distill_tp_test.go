package gogen_test

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/moec-dev/moec/codegen/gogen"
	"github.com/moec-dev/moec/compiler/check"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/runtime/train"
)

// TestStepProgramDistillUnderTP builds the Go form of a distillation stage's step
// programs at tp 2, both ranks in one process, each running the teacher whole and taking
// its slice of the vocabulary into the vocabulary-parallel loss, and holds its losses to
// `moec run --tp 2`'s, step by step.
func TestStepProgramDistillUnderTP(t *testing.T) {
	gobin := needGoBuild(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "tiny.moe")
	if err := os.WriteFile(file, []byte(distillSource), 0o644); err != nil {
		t.Fatal(err)
	}
	prog, _, diags := check.Load(file, os.ReadFile)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	root := t.TempDir()
	run := func(stage string, l *train.Sharding) *train.Result {
		o := train.Options{Program: prog, StageName: stage, OutRoot: root, BaseDir: dir, ValWindows: 2, Layout: l}
		if stage != "teacher" {
			o.OutDir = filepath.Join(root, "student-ranks"+strconv.Itoa(l.Ranks))
		}
		res, err := train.Run(context.Background(), o)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	teacher := run("teacher", &train.Sharding{Ranks: 1, EP: 1, Program: true})
	one := runLosses(t, run("student", &train.Sharding{Ranks: 1, EP: 1, Program: true}))
	want := runLosses(t, run("student", &train.Sharding{Ranks: 2, EP: 1, TP: 2}))

	sp, cfg := stepProgramFor(t, prog, "student")
	sp, err := step.LowerRank(cfg.Model, sp.Batch, step.Layout{DP: 1, EP: 1, TP: 2, PP: 1,
		Distill: step.Distill{Temperature: 2, SoftWeight: 0.7, HardWeight: 0.3}}, 0)
	if err != nil {
		t.Fatal(err)
	}
	sp.Stage = "student"
	out := t.TempDir()
	if _, err := gogen.Emit(out, cfg, gogen.Options{ModuleDir: gogen.FindModule("."), Step: sp}); err != nil {
		t.Fatal(err)
	}
	exe, err := buildStepSource(t, gobin, filepath.Join(out, gogen.Dir, gogen.StepDir, gogen.StepFile), nil)
	if err != nil {
		t.Fatalf("go build of the step program: %v", err)
	}
	got, _ := runProgram(t, exe, "-steps", strconv.Itoa(len(want)), "-base", dir, "-from", teacher.Dir)
	if len(got) != len(want) || len(want) != 3 || len(one) != len(want) {
		t.Fatalf("%d losses from the program, %d from moec run --tp 2, %d from one rank", len(got), len(want), len(one))
	}
	t.Logf("losses: program %v, moec run --tp 2 %v, one rank %v", got, want, one)
	for i := range got {
		if rel := math.Abs(got[i]-want[i]) / math.Abs(want[i]); rel > 1e-6 {
			t.Errorf("step %d: loss %v, moec run --tp 2 %v", i, got[i], want[i])
		}
		if rel := math.Abs(got[i]-one[i]) / math.Abs(one[i]); rel > 1e-5 {
			t.Errorf("step %d: loss %v, one rank %v", i, got[i], one[i])
		}
	}
}
