package gogen_test

import (
	"context"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/tools/txtar"

	"github.com/moec-dev/moec/codegen/gogen"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/runtime/train"
)

// stepProgramFor is rank 0's step program of a one-rank run of the stage, and its Config.
func stepProgramFor(t *testing.T, prog *program.Program, stage string) (*step.Program, gogen.Config) {
	t.Helper()
	tr := prog.Trains[prog.TrainOrder[0]]
	var st *program.Stage
	for _, s := range tr.Stages {
		if s.Name == stage {
			st = s
		}
	}
	cfg, err := gogen.ConfigFor(prog, tr, st)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := step.LowerRank(cfg.Model, step.Batch{MicroBatch: cfg.MicroBatch, SeqLen: cfg.SeqLen, Micro: cfg.Accum},
		step.Layout{DP: 1, EP: 1, TP: 1, PP: 1}, 0)
	if err != nil {
		t.Fatal(err)
	}
	sp.Stage = stage
	return sp, cfg
}

// buildStep emits the stage's programs with the step program's Go form, rewrites the
// step program's source with edit (nil: as generated) and builds it.
func buildStep(t *testing.T, gobin string, prog *program.Program, stage string, edit func(string) string) string {
	t.Helper()
	sp, cfg := stepProgramFor(t, prog, stage)
	dir := t.TempDir()
	if _, err := gogen.Emit(dir, cfg, gogen.Options{ModuleDir: gogen.FindModule("."), Step: sp}); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(dir, gogen.Dir, gogen.StepDir, gogen.StepFile)
	if edit != nil {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(src, []byte(edit(string(b))), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	exe := filepath.Join(dir, "step-prog")
	cmd := exec.Command(gobin, "build", "-o", exe, "./"+gogen.StepDir)
	cmd.Dir = filepath.Join(dir, gogen.Dir)
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=readonly")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build of the %s step program: %v\n%s", stage, err, out)
	}
	return exe
}

// TestStepProgramMatchesRun builds the Go form of both stages' step programs (the second
// grown from the first's checkpoint) and holds 20 steps of each to moec run: equal to the
// loss --step-programs logs (the same program, the same kernels) and within 1e-6 relative
// of the hand-written model's run. With one op left out of the source, or two ops swapped,
// the losses no longer match.
func TestStepProgramMatchesRun(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go is not on PATH: cannot build the generated program")
	}
	if testing.Short() {
		t.Skip("builds and runs programs; skipped with -short")
	}
	ar, err := txtar.ParseFile("testdata/tiny.txtar")
	if err != nil {
		t.Fatal(err)
	}
	prog := loadArchive(t, ar)
	ctx := context.Background()
	root, rootNN := t.TempDir(), t.TempDir()
	run := func(stage, out string, l *train.Sharding) []float64 {
		res, err := train.Run(ctx, train.Options{Program: prog, StageName: stage, OutRoot: out, Steps: stepsCompared, ValWindows: 4, Layout: l})
		if err != nil {
			t.Fatal(err)
		}
		return runLosses(t, res)
	}
	program1 := &train.Sharding{Ranks: 1, EP: 1, Program: true}
	for _, stage := range []string{"dense", "moe"} {
		want := run(stage, root, program1)
		hand := run(stage, rootNN, nil)
		exe := buildStep(t, gobin, prog, stage, nil)
		args := []string{"-steps", strconv.Itoa(stepsCompared)}
		if stage == "moe" {
			args = append(args, "-from", filepath.Join(root, "tiny", "dense", "run"))
		}
		got, _ := runProgram(t, exe, args...)
		sameLosses(t, stage, got, want)
		worst := 0.0
		for i := range got {
			worst = max(worst, math.Abs(got[i]-hand[i])/hand[i])
		}
		if worst > 1e-6 {
			t.Errorf("%s: the step program's losses differ from the hand-written model's by up to %.2g relative", stage, worst)
		}
		t.Logf("%s: %d steps equal to moec run --step-programs, within %.2g of the hand-written model", stage, len(got), worst)
	}

	// Mutations of the generated source must show in the losses.
	dense := run("dense", t.TempDir(), program1)
	opBlock := regexp.MustCompile(`(?s)\t\t// (\d+) [^\n]*\n\t\t\{\n.*?\n\t\t\},\n`)
	for _, m := range []struct {
		name string
		edit func(string) string
	}{
		{"drop an op", func(src string) string {
			blocks := opBlock.FindAllStringIndex(src, -1)
			b := blocks[len(blocks)/2] // a backward op
			return src[:b[0]] + src[b[1]:]
		}},
		{"swap two ops", func(src string) string {
			blocks := opBlock.FindAllStringIndex(src, -1)
			a, b := blocks[10], blocks[11]
			return src[:a[0]] + src[b[0]:b[1]] + src[a[0]:a[1]] + src[b[1]:]
		}},
	} {
		t.Run(m.name, func(t *testing.T) {
			exe := buildStep(t, gobin, prog, "dense", m.edit)
			cmd := exec.Command(exe, "-steps", strconv.Itoa(stepsCompared))
			out, err := cmd.Output()
			if err != nil {
				t.Logf("the mutated program fails: %v", err)
				return
			}
			got := parseLosses(string(out))
			if len(got) == len(dense) {
				same := true
				for i := range got {
					same = same && got[i] == dense[i]
				}
				if same {
					t.Fatalf("the program with %s prints the same losses", m.name)
				}
			}
		})
	}
}

// parseLosses reads "step N loss X" lines.
func parseLosses(out string) []float64 {
	var losses []float64
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 4 && f[0] == "step" && f[2] == "loss" {
			if v, err := strconv.ParseFloat(f[3], 64); err == nil {
				losses = append(losses, v)
			}
		}
	}
	return losses
}
