package gogen_test

import (
	"context"
	"go/parser"
	"go/token"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/moec-dev/moec/codegen/gogen"
	"github.com/moec-dev/moec/compiler/check"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/internal/longtest"
	"github.com/moec-dev/moec/internal/pagepool"
	"github.com/moec-dev/moec/runtime/train"
)

// stepSteps is how many steps the step programs' differential test compares per stage.
const stepSteps = 3

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

// emitStep writes the stage's programs with the step program's Go form into a temporary
// directory and returns the step program's source file.
func emitStep(t *testing.T, prog *program.Program, stage string) (src string, sp *step.Program) {
	t.Helper()
	sp, cfg := stepProgramFor(t, prog, stage)
	return emitProgram(t, cfg, sp), sp
}

// emitProgram writes cfg's programs with the Go form of step program sp (rank 0's) and
// returns the step program's source file.
func emitProgram(t *testing.T, cfg gogen.Config, sp *step.Program) string {
	t.Helper()
	dir := t.TempDir()
	if _, err := gogen.Emit(dir, cfg, gogen.Options{ModuleDir: gogen.FindModule("."), Step: sp}); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, gogen.Dir, gogen.StepDir, gogen.StepFile)
}

// buildStepSource builds the step program whose source is src, after rewriting it with edit
// (nil: as generated); it returns the executable or the build's error output.
func buildStepSource(t *testing.T, gobin, src string, edit func(string) string) (string, error) {
	t.Helper()
	if edit != nil {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(src, []byte(edit(string(b))), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	exe := filepath.Join(t.TempDir(), "step-prog")
	cmd := exec.Command(gobin, "build", "-o", exe, "./"+gogen.StepDir)
	cmd.Dir = filepath.Dir(filepath.Dir(src))
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=readonly")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", &buildError{string(out)}
	}
	return exe, nil
}

type buildError struct{ out string }

func (e *buildError) Error() string { return e.out }

// TestStepProgramMatchesRun builds the Go form of every stage's step program of
// examples/hunyuan_tiny.moe (dense; four grown from dense's final checkpoint; eight from
// four's) and holds its losses to `moec run --step-programs` (train.Run through the step
// programs' executor) within 1e-6 relative, step by step. The generated source imports
// neither runtime/nn nor anything that does; with one op's statement left out, or two ops
// swapped, the losses change or the program no longer builds.
func TestStepProgramMatchesRun(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go is not on PATH: cannot build the generated program")
	}
	if testing.Short() {
		t.Skip("builds and runs programs; skipped with -short")
	}
	examples, err := filepath.Abs("../../examples")
	if err != nil {
		t.Fatal(err)
	}
	prog, _, diags := check.Load(filepath.Join(examples, "hunyuan_tiny.moe"), os.ReadFile)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	ctx := context.Background()
	root := t.TempDir()
	runStage := func(stage, out string) *train.Result {
		res, err := train.Run(ctx, train.Options{Program: prog, StageName: stage, OutRoot: out, BaseDir: examples,
			Steps: stepSteps, ValWindows: 2, Layout: &train.Sharding{Ranks: 1, EP: 1, Program: true}})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	var denseProg *step.Program
	var denseRun string
	var denseLosses []float64
	from := ""
	for _, stage := range []string{"dense", "four", "eight"} {
		res := runStage(stage, root)
		want := runLosses(t, res)
		src, sp := emitStep(t, prog, stage)
		checkImports(t, gobin, src)
		exe, err := buildStepSource(t, gobin, src, nil)
		if err != nil {
			t.Fatalf("%s: go build of the step program: %v", stage, err)
		}
		args := []string{"-steps", strconv.Itoa(stepSteps), "-base", examples}
		if from != "" {
			args = append(args, "-from", from)
		}
		got, _ := runProgram(t, exe, args...)
		if len(got) != stepSteps || len(want) != stepSteps {
			t.Fatalf("%s: %d losses from the program, %d from moec run; want %d each", stage, len(got), len(want), stepSteps)
		}
		worst, equal := 0.0, 0
		for i := range got {
			worst = max(worst, math.Abs(got[i]-want[i])/math.Abs(want[i]))
			if got[i] == want[i] {
				equal++
			}
		}
		if worst > 1e-6 {
			t.Errorf("%s: the generated step program's losses %v differ from moec run's %v by up to %.2g relative", stage, got, want, worst)
		}
		t.Logf("%s (%d ops): %d steps within %.2g relative of moec run --step-programs (%d equal)", stage, len(sp.Ops), len(got), worst, equal)
		if stage == "dense" {
			denseProg, denseLosses, denseRun = sp, got, res.Dir
		}
		from = res.Dir
	}

	// Data and expert parallelism: stage four on 2 ranks (dp 2 × ep 2, each rank two of the
	// four experts), its all-reduces and all-to-alls written out as collective calls between
	// the ranks' goroutines, against moec run --ranks 2 --ep 2 from the same checkpoint.
	t.Run("four on 2 ranks", func(t *testing.T) {
		res, err := train.Run(ctx, train.Options{Program: prog, StageName: "four", OutRoot: t.TempDir(), BaseDir: examples, From: denseRun,
			Steps: stepSteps, ValWindows: 2, Layout: &train.Sharding{Ranks: 2, EP: 2, Program: true}})
		if err != nil {
			t.Fatal(err)
		}
		want := runLosses(t, res)
		_, cfg := stepProgramFor(t, prog, "four")
		sp, err := step.LowerRank(cfg.Model, step.Batch{MicroBatch: cfg.MicroBatch / 2, SeqLen: cfg.SeqLen, Micro: cfg.Accum},
			step.Layout{DP: 2, EP: 2, TP: 1, PP: 1}, 0)
		if err != nil {
			t.Fatal(err)
		}
		sp.Stage = "four"
		src := emitProgram(t, cfg, sp)
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), "k.AllToAllV(r.c,") || !strings.Contains(string(b), "k.AllReduce(r.c,") {
			t.Error("the 2-rank program has no collective calls")
		}
		checkImports(t, gobin, src)
		exe, err := buildStepSource(t, gobin, src, nil)
		if err != nil {
			t.Fatalf("go build of the 2-rank step program: %v", err)
		}
		got, _ := runProgram(t, exe, "-steps", strconv.Itoa(stepSteps), "-base", examples, "-from", denseRun)
		if len(got) != stepSteps || len(want) != stepSteps {
			t.Fatalf("%d losses from the program, %d from moec run; want %d each", len(got), len(want), stepSteps)
		}
		worst := 0.0
		for i := range got {
			worst = max(worst, math.Abs(got[i]-want[i])/math.Abs(want[i]))
		}
		if worst > 1e-6 {
			t.Errorf("the 2-rank step program's losses %v differ from moec run's %v by up to %.2g relative", got, want, worst)
		}
		t.Logf("four on 2 ranks: %d steps within %.2g relative of moec run --ranks 2 --ep 2", len(got), worst)
	})

	// Mutations of the generated source must show in the losses.
	for _, m := range []struct {
		name string
		edit func(string) string
	}{
		{"drop an op", func(src string) string { return dropOp(t, src, denseProg) }},
		{"swap two ops", func(src string) string { return swapOps(t, src, denseProg) }},
	} {
		t.Run(m.name, func(t *testing.T) {
			src, _ := emitStep(t, prog, "dense")
			exe, err := buildStepSource(t, gobin, src, m.edit)
			if err != nil {
				t.Logf("the mutated program does not build: %.200s", err)
				return
			}
			out, err := exec.Command(exe, "-steps", strconv.Itoa(stepSteps), "-base", examples).Output()
			if err != nil {
				t.Logf("the mutated program fails: %v", err)
				return
			}
			if got := parseLosses(string(out)); slices.Equal(got, denseLosses) {
				t.Fatalf("the program with %s prints the same losses %v", m.name, got)
			}
		})
	}
}

// opStatement finds op i's statement in the generated source: its "// op i:" comment and
// the one-line call after it.
func opStatement(t *testing.T, src string, i int) (lo, hi int) {
	t.Helper()
	re := regexp.MustCompile(`(?m)^\t// op ` + strconv.Itoa(i) + `: [^\n]*\n(\t[^\n]*\n)`)
	loc := re.FindStringSubmatchIndex(src)
	if loc == nil {
		t.Fatalf("the generated source has no statement for op %d", i)
	}
	return loc[2], loc[3]
}

// plain reports whether op is written as one unconditional call.
func plain(op step.Op) bool {
	return !op.WhenRecompute && op.Phase != step.Update
}

// dropOp removes the statement of a backward op that computes a parameter's gradient (a
// weight gradient of the middle layers): the update then moves that weight differently.
func dropOp(t *testing.T, src string, p *step.Program) string {
	for i, op := range p.Ops {
		if op.Kind == step.OpMatMulDW && op.Layer == 1 && plain(op) {
			lo, hi := opStatement(t, src, i)
			return src[:lo] + src[hi:]
		}
	}
	t.Fatal("the program has no matmul_dw in layer 1")
	return ""
}

// swapOps swaps the statements of the first forward op that reads what the op before it
// wrote with that op.
func swapOps(t *testing.T, src string, p *step.Program) string {
	for i := 1; i < len(p.Ops); i++ {
		a, b := p.Ops[i-1], p.Ops[i]
		if a.Phase != step.Forward || !plain(a) || !plain(b) || !slices.Contains(b.In, a.Out[0]) {
			continue
		}
		alo, ahi := opStatement(t, src, i-1)
		blo, bhi := opStatement(t, src, i)
		return src[:alo] + src[blo:bhi] + src[ahi:blo] + src[alo:ahi] + src[bhi:]
	}
	t.Fatal("no two consecutive forward ops where the second reads the first")
	return ""
}

// checkImports holds the generated step program away from the hand-written model: its
// imports, and everything they import (go list -deps), leave out runtime/nn.
func checkImports(t *testing.T, gobin, src string) {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), src, nil, parser.ImportsOnly)
	if err != nil {
		t.Fatal(err)
	}
	for _, im := range f.Imports {
		if path, _ := strconv.Unquote(im.Path.Value); strings.HasSuffix(path, "/runtime/nn") || strings.HasSuffix(path, "/runtime/train") {
			t.Errorf("the generated step program imports %s", path)
		}
	}
	cmd := exec.Command(gobin, "list", "-deps", "./"+gogen.StepDir)
	cmd.Dir = filepath.Dir(filepath.Dir(src))
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=readonly")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps of the step program: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.HasSuffix(dep, "/runtime/nn") {
			t.Errorf("the generated step program depends on %s", dep)
		}
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

// TestStepSourceRefusesUnknownOps: a program with an op the Go form has no statement for is
// not written out; Emit says so in a note and writes the rest.
func TestStepSourceRefusesUnknownOps(t *testing.T) {
	prog, _, diags := check.Load("../../examples/hunyuan_tiny.moe", os.ReadFile)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	sp, cfg := stepProgramFor(t, prog, "dense")
	sp.Ops[5].Kind = "mystery"
	res, err := gogen.Emit(t.TempDir(), cfg, gogen.Options{ModuleDir: gogen.FindModule("."), Step: sp})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range res.Files {
		if strings.HasSuffix(f, filepath.Join(gogen.StepDir, gogen.StepFile)) {
			t.Errorf("Emit wrote %s for a program with an unknown op", f)
		}
	}
	if len(res.Notes) != 1 || !strings.Contains(res.Notes[0], "op 5: no Go form for op mystery") {
		t.Errorf("Emit's notes %q do not say why the program is not written out", res.Notes)
	}
}

// tpModel is a small MoE model that tensor parallelism splits (no talking heads or shared
// attention weights, which tp does not lower), with biases so the row-parallel products'
// bias rule is exercised.
const tpModel = `model small {
  vocab    = 256
  d_model  = 32
  layers   = 2
  seq_len  = 32
  attention { heads = 4; qkv_bias = true; out_bias = true }
  ffn { hidden = 64; activation = swiglu; bias = true }
  moe { experts = 4; top_k = 2; capacity_factor = 1.25; balance_loss = 0.01; every = 2 }
}

cluster local { gpu = cpu; ranks = 1; host_memory = 8GiB }

train small on local {
  tokens_per_batch = 256
  micro_batch      = 4
  precision        = fp32
  optimizer        = adamw { lr = 3e-3; warmup = 2; weight_decay = 0.1 }
  data             = "$GOROOT/src/strings/*.go"

  stage moe { steps = 20 }
}
`

// TestStepProgramParallel writes out layouts of several ranks, tp 2 × dp 2 × ep 2
// (vocabulary-parallel embedding and loss, column- and row-parallel products with their
// biases on tp rank 0, the tp and dp all-reduces, the experts' all-to-all), the same with
// sequence parallelism and selective recompute (the token-dimension all-gathers and
// reduce-scatters, the sequence slices, the attention core computed again in the
// backward), pp 2 × dp 2 × ep 2 (the 1F1B sends and receives), ZeRO, the offloaded
// optimizer and the unified cache (its fetches and write-backs), and holds their losses to
// moec run's on the same layouts within 1e-6 relative.
func TestStepProgramParallel(t *testing.T) {
	for _, c := range []parallelCase{
		{name: "tp 2 × dp 2 × ep 2", tp: 2, pp: 1, long: true, calls: []string{"exec.CrossEntropyMax(", "exec.CrossEntropySum(", "putSlice(", "k.AllReduce(r.c, []int{0, 1}", "k.AllToAllV(r.c,"}},
		{name: "tp 2 × dp 2 × ep 2, sp, selective recompute", tp: 2, pp: 1, sp: true, recompute: program.RecomputeSelective,
			calls: []string{"exec.GatherRows(r.c,", "k.ScatterRowSums(r.c,", "exec.SeqSlice(", "k.Fill("}},
		{name: "pp 2 × dp 2 × ep 2", tp: 1, pp: 2, calls: []string{"r.c.Send(", "r.c.Recv(", "k.AllToAllV(r.c,"}},
		{name: "dp 2 × ep 2, zero 1", tp: 1, pp: 1, zero: 1, long: true, calls: []string{"k.AllGather(r.c,"}},
		{name: "dp 2 × ep 2, zero 2", tp: 1, pp: 1, zero: 2, calls: []string{"k.ReduceScatter(r.c,", "k.AllGather(r.c,"}},
		{name: "dp 2 × ep 2, zero 3", tp: 1, pp: 1, zero: 3, long: true, calls: []string{"k.ReduceScatter(r.c,", "k.AllGather(r.c,", "putFlat(v."}},
		{name: "dp 2 × ep 2, zero 1, offloaded", tp: 1, pp: 1, zero: 1, offload: true, long: true, calls: []string{"exec.MoveFlat(", "host := make("}},
		{name: "dp 2 × ep 2, zero 3, offloaded", tp: 1, pp: 1, zero: 3, offload: true, calls: []string{"exec.MoveFlat(", "putFlat(v."}},
		{name: "dp 2 × ep 2, zero 1, unified cache", tp: 1, pp: 1, zero: 1, offload: true, long: true,
			cache: &train.CacheConfig{Budget: 704 << 10, Page: 16 << 10, Eviction: "lru"}, calls: []string{"k.CacheMove("}},
		{name: "dp 2 × ep 2, zero 3, unified cache", tp: 1, pp: 1, zero: 3, offload: true,
			cache: &train.CacheConfig{Budget: 704 << 10, Page: 16 << 10, Eviction: "lru"}, calls: []string{"k.AllGather(r.c,", "putFlat(v."}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.long {
				longtest.Require(t, "about 6 s a layout; the sequence-parallel, pipeline, ZeRO 2 and ZeRO 3 cache cases run by default")
			}
			parallelProgram(t, c)
		})
	}
}

// parallelCase is a layout TestStepProgramParallel writes out, and calls its Go form must
// hold.
type parallelCase struct {
	name         string
	tp, pp, zero int
	offload, sp  bool
	recompute    program.Recompute
	cache        *train.CacheConfig
	calls        []string
	long         bool // in make test-long: a neighbouring default case covers its calls
}

func parallelProgram(t *testing.T, c parallelCase) {
	tp, pp, zero, offload, calls := c.tp, c.pp, c.zero, c.offload, c.calls
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go is not on PATH: cannot build the generated program")
	}
	if testing.Short() {
		t.Skip("builds and runs programs; skipped with -short")
	}
	prog := loadSections(t, map[string][]byte{"input.moe": []byte(tpModel)})
	for _, tr := range prog.Trains {
		tr.Memory.Recompute = c.recompute
	}
	res, err := train.Run(context.Background(), train.Options{Program: prog, StageName: "moe", OutRoot: t.TempDir(),
		Steps: stepSteps, ValWindows: 2, Layout: &train.Sharding{Ranks: 2 * tp * pp, TP: tp, PP: pp, EP: 2, ZeRO: zero, Offload: offload, Program: true,
			SP: c.sp, Cache: c.cache}})
	if err != nil {
		t.Fatal(err)
	}
	want := runLosses(t, res)
	_, cfg := stepProgramFor(t, prog, "moe")
	layout := step.Layout{DP: 2, EP: 2, TP: tp, PP: pp, ZeRO: zero, OffloadOpt: offload, SequenceParallel: c.sp, Recompute: c.recompute}
	if c.cache != nil {
		layout.Cache = step.Cache{Budget: c.cache.Budget, Page: c.cache.Page, Eviction: pagepool.Policy(c.cache.Eviction)}
	}
	sp, err := step.LowerRank(cfg.Model, step.Batch{MicroBatch: cfg.MicroBatch / 2, SeqLen: cfg.SeqLen, Micro: cfg.Accum},
		layout, 0)
	if err != nil {
		t.Fatal(err)
	}
	sp.Stage = "moe"
	src := emitProgram(t, cfg, sp)
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, call := range calls {
		if !strings.Contains(string(b), call) {
			t.Errorf("the program has no %s", call)
		}
	}
	exe, err := buildStepSource(t, gobin, src, nil)
	if err != nil {
		t.Fatalf("go build of the step program: %v", err)
	}
	got, _ := runProgram(t, exe, "-steps", strconv.Itoa(stepSteps))
	if len(got) != stepSteps || len(want) != stepSteps {
		t.Fatalf("%d losses from the program, %d from moec run; want %d each", len(got), len(want), stepSteps)
	}
	worst := 0.0
	for i := range got {
		worst = max(worst, math.Abs(got[i]-want[i])/math.Abs(want[i]))
	}
	if worst > 1e-6 {
		t.Errorf("the step program's losses %v differ from moec run's %v by up to %.2g relative", got, want, worst)
	}
	t.Logf("%d steps within %.2g relative of moec run on the same layout: %v", len(got), worst, got)
}

// needGoBuild is the go command the tests build generated programs with; without it, or
// with -short, the test skips with the reason.
func needGoBuild(t *testing.T) string {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go is not on PATH: cannot build the generated program")
	}
	if testing.Short() {
		t.Skip("builds and runs programs; skipped with -short")
	}
	return gobin
}

// closeLosses holds the step program's losses to moec run's, step by step, within 1e-6
// relative (the Go form and the executor sum some products in another order); what says
// which run they are for the log.
func closeLosses(t *testing.T, got, want []float64, what string) {
	t.Helper()
	if len(got) != stepSteps || len(want) != stepSteps {
		t.Fatalf("%d losses from the program, %d from moec run; want %d each", len(got), len(want), stepSteps)
	}
	worst := 0.0
	for i := range got {
		worst = max(worst, math.Abs(got[i]-want[i])/math.Abs(want[i]))
	}
	if worst > 1e-6 {
		t.Errorf("the step program's losses %v differ from moec run's %v by up to %.2g relative", got, want, worst)
	}
	t.Logf("%d steps within %.2g relative of moec run%s: %v", len(got), worst, what, got)
}
