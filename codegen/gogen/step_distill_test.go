package gogen_test

import (
	"context"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/moec-dev/moec/codegen/gogen"
	"github.com/moec-dev/moec/compiler/check"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/runtime/train"
)

// distillSource is a teacher stage of four experts and a dense student distilled from it.
const distillSource = `model tiny {
  vocab = 256; d_model = 32; layers = 2; seq_len = 32
  attention { heads = 2 }
  ffn { hidden = 64; activation = swiglu }
  moe { experts = 4; top_k = 1; every = 2; capacity_factor = 1.25; balance_loss = 0.01 }
}
cluster local { gpu = cpu; ranks = 1; host_memory = 4GiB }
train tiny on local {
  tokens_per_batch = 4 * 32
  precision = fp32
  optimizer = adamw { lr = 3e-3; warmup = 1 }
  data = "$GOROOT/src/strings/*.go"
  stage teacher { experts = 4; steps = 3 }
  stage student distill from teacher { experts = 1; temperature = 2; soft_weight = 0.7; hard_weight = 0.3; steps = 3 }
}
`

// TestStepProgramDistillMatchesRun builds the Go form of a distillation stage's step
// program, which loads the teacher's final checkpoint from -from and runs its forward on
// every micro-batch, and holds its losses to `moec run`'s, step by step; the build writes
// no hand-written-model main.go for the stage, and says why.
func TestStepProgramDistillMatchesRun(t *testing.T) {
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
	ctx := context.Background()
	root := t.TempDir()
	run := func(stage string) *train.Result {
		res, err := train.Run(ctx, train.Options{Program: prog, StageName: stage, OutRoot: root, BaseDir: dir,
			ValWindows: 2, Layout: &train.Sharding{Ranks: 1, EP: 1, Program: true}})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	teacher := run("teacher")
	want := runLosses(t, run("student"))

	sp, cfg := stepProgramFor(t, prog, "student")
	// The plan's program of a distillation stage: its loss reads the teacher's logits.
	sp, err := step.LowerRank(cfg.Model, sp.Batch, step.Layout{DP: 1, EP: 1, TP: 1, PP: 1,
		Distill: step.Distill{Temperature: 2, SoftWeight: 0.7, HardWeight: 0.3}}, 0)
	if err != nil {
		t.Fatal(err)
	}
	sp.Stage = "student"
	if cfg.TeacherStage != "teacher" || cfg.FromStage != "" {
		t.Fatalf("config: teacher %q, from %q", cfg.TeacherStage, cfg.FromStage)
	}
	out := t.TempDir()
	res, err := gogen.Emit(out, cfg, gogen.Options{ModuleDir: gogen.FindModule("."), Step: sp})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(out, gogen.Dir, gogen.MainFile)); err == nil || len(res.Notes) != 1 || !strings.Contains(res.Notes[0], "distills from stage teacher") {
		t.Errorf("a distillation stage's hand-written-model main.go: written %v, notes %q", err == nil, res.Notes)
	}
	src := filepath.Join(out, gogen.Dir, gogen.StepDir, gogen.StepFile)
	exe, err := buildStepSource(t, gobin, src, nil)
	if err != nil {
		t.Fatalf("go build of the step program: %v", err)
	}
	if msg := runProgramFails(t, exe, "-steps", "1", "-base", dir); !strings.Contains(msg, "pass -from") {
		t.Errorf("without -from: %q, want it to ask for the teacher", msg)
	}
	got, _ := runProgram(t, exe, "-steps", strconv.Itoa(len(want)), "-base", dir, "-from", teacher.Dir)
	if len(got) != len(want) || len(want) != 3 {
		t.Fatalf("%d losses from the program, %d from moec run", len(got), len(want))
	}
	for i := range got {
		if rel := math.Abs(got[i]-want[i]) / math.Abs(want[i]); rel > 1e-6 {
			t.Errorf("step %d: loss %v, moec run %v", i, got[i], want[i])
		}
	}
}

// runProgramFails runs exe, which must fail, and returns its output.
func runProgramFails(t *testing.T, exe string, args ...string) string {
	t.Helper()
	out, err := exec.Command(exe, args...).CombinedOutput()
	if err == nil {
		t.Fatalf("%s %v succeeded; want a failure", exe, args)
	}
	return string(out)
}
