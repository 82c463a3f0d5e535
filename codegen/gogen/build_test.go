package gogen_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/tools/txtar"

	"github.com/moec-dev/moec/codegen"
	"github.com/moec-dev/moec/codegen/gogen"
	"github.com/moec-dev/moec/codegen/llvm"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/runtime/train"
)

const (
	stepsCompared = 20
	llvmTol       = 1e-5 // relative, per step, LLVM kernels against Go kernels
)

// buildProgram emits the stage's program into a temporary directory and builds it with
// the go command, against this checkout of moec.
func buildProgram(t *testing.T, gobin string, prog *program.Program, stage string) (exe, stageDir string, cfg gogen.Config) {
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
	dir := t.TempDir()
	res, err := gogen.Emit(dir, cfg, gogen.Options{ModuleDir: gogen.FindModule(".")})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Files) != 3 || len(res.Notes) != 0 {
		t.Fatalf("Emit: %+v", res)
	}
	exe = filepath.Join(dir, "prog")
	cmd := exec.Command(gobin, "build", "-o", exe, ".")
	cmd.Dir = filepath.Join(dir, gogen.Dir)
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=readonly")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build of the generated %s program: %v\n%s", stage, err, out)
	}
	vet := exec.Command(gobin, "vet", ".")
	vet.Dir, vet.Env = cmd.Dir, cmd.Env
	if out, err := vet.CombinedOutput(); err != nil {
		t.Errorf("go vet of the generated %s program: %v\n%s", stage, err, out)
	}
	return exe, dir, cfg
}

// runProgram runs a built program and returns the losses it printed, per step.
func runProgram(t *testing.T, exe string, args ...string) ([]float64, string) {
	t.Helper()
	cmd := exec.Command(exe, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", filepath.Base(exe), args, err, stderr.String())
	}
	var losses []float64
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 4 && f[0] == "step" && f[2] == "loss" {
			step, err1 := strconv.Atoi(f[1])
			loss, err2 := strconv.ParseFloat(f[3], 64)
			if err1 != nil || err2 != nil || step != len(losses)+1 {
				t.Fatalf("bad step line %q", sc.Text())
			}
			losses = append(losses, loss)
		}
	}
	return losses, string(out)
}

// runLosses reads the losses train.Run logged.
func runLosses(t *testing.T, res *train.Result) []float64 {
	t.Helper()
	b, err := os.ReadFile(res.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	var out []float64
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var r train.StepRecord
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatal(err)
		}
		out = append(out, r.Loss)
	}
	return out
}

func sameLosses(t *testing.T, what string, got, want []float64) {
	t.Helper()
	if len(got) != stepsCompared || len(want) != stepsCompared {
		t.Fatalf("%s: %d losses from the program, %d from train.Run; want %d each", what, len(got), len(want), stepsCompared)
	}
	for i := range got {
		// The program runs the same kernels in the same order on the same batches, so
		// the losses are equal, not merely close.
		if got[i] != want[i] {
			t.Fatalf("%s: step %d: the generated program's loss %v, moec run's %v", what, i+1, got[i], want[i])
		}
	}
	if !(want[len(want)-1] < want[0]) {
		t.Errorf("%s: the loss did not fall over %d steps: %v", what, len(want), want)
	}
}

// TestProgramMatchesRun builds the generated programs of both stages of tiny.txtar with
// `go build` and checks that 20 steps of each print exactly the losses train.Run logs
// for the same file and seed, the second stage grown from the first stage's checkpoint.
func TestProgramMatchesRun(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go is not on PATH: cannot build the generated program")
	}
	if testing.Short() {
		t.Skip("builds and runs programs; skipped with -short")
	}
	start := time.Now()
	ar, err := txtar.ParseFile("testdata/tiny.txtar")
	if err != nil {
		t.Fatal(err)
	}
	prog := loadArchive(t, ar)
	denseExe, denseDir, denseCfg := buildProgram(t, gobin, prog, "dense")
	moeExe, _, _ := buildProgram(t, gobin, prog, "moe")
	t.Logf("built both programs in %s", time.Since(start).Round(time.Millisecond))

	ctx := context.Background()
	root := t.TempDir()
	opt := train.Options{Program: prog, OutRoot: root, Steps: stepsCompared, ValWindows: 4}
	opt.StageName = "dense"
	dense, err := train.Run(ctx, opt)
	if err != nil {
		t.Fatal(err)
	}
	got, out := runProgram(t, denseExe, "-steps", strconv.Itoa(stepsCompared), "-generate", "16", "-prompt", "func ")
	want := runLosses(t, dense)
	sameLosses(t, "dense", got, want)
	if _, text, ok := strings.Cut(out, "generated: "); !ok || len(strings.TrimSuffix(text, "\n")) != 16 {
		t.Errorf("the program did not generate 16 bytes:\n%s", out)
	}

	// With the LLVM kernels moec build compiles next to the program (when clang is here),
	// the same steps agree within llvmTol: the compiled norms and cross-entropy sum in
	// float32 where the Go kernels sum in float64.
	if clang := llvm.FindClang(); clang != "" {
		if _, err := codegen.Emit(denseDir, "tiny", "dense", denseCfg.Model, codegen.Options{Clang: clang}); err != nil {
			t.Fatal(err)
		}
		got, out := runProgram(t, denseExe, "-steps", strconv.Itoa(stepsCompared), "-generate", "0",
			"-llvm", filepath.Join(denseDir, codegen.LLVMDir, codegen.LLVMLibrary))
		if !strings.Contains(out, "kernels: compiled") || len(got) != stepsCompared {
			t.Fatalf("the program did not run the compiled kernels:\n%s", out)
		}
		worst := 0.0
		for i := range got {
			worst = max(worst, math.Abs(got[i]-want[i])/want[i])
		}
		if worst > llvmTol {
			t.Errorf("with LLVM kernels the losses differ from moec run's by up to %.2g relative, more than %g", worst, llvmTol)
		}
		t.Logf("20 steps with LLVM kernels: losses within %.2g relative of moec run's", worst)
	}

	// The second stage starts from the first one's final checkpoint and grows 1 -> 4 experts.
	cmd := exec.Command(moeExe, "-steps", "1")
	if msg, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(msg), "pass -from") {
		t.Errorf("the moe stage ran without -from: %v\n%s", err, msg)
	}
	opt.StageName = "moe"
	moe, err := train.Run(ctx, opt)
	if err != nil {
		t.Fatal(err)
	}
	got, _ = runProgram(t, moeExe, "-steps", strconv.Itoa(stepsCompared), "-generate", "0", "-from", dense.Dir)
	sameLosses(t, "moe", got, runLosses(t, moe))
	t.Logf("20 steps of two stages, programs and train.Run, in %s", time.Since(start).Round(time.Millisecond))
}
