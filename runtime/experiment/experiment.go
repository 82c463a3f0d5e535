package experiment

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/moec-dev/moec/compiler/analysis"
	"github.com/moec-dev/moec/compiler/check"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/lang/ast"
	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/lang/parse"
	"github.com/moec-dev/moec/runtime/train"
)

// Options configure Run.
type Options struct {
	Program *program.Program // the checked program (its experiments are what runs)
	Files   []*ast.File      // the program's parsed files: arms are these plus overrides
	BaseDir string           // relative data globs are relative to this
	OutDir  string           // runs go to OutDir/<experiment>/<arm>/seed-<n>/<stage> ["out/experiments"]
	Only    []string         // experiments to run [all, in declaration order]
	Tokens  int64            // > 0: replaces every experiment's token budget per run
	Seeds   []int64          // non-empty: replaces every experiment's seeds
	// ValWindows is the number of validation windows each run's final loss and routing
	// stability are measured on [64].
	ValWindows int
	Progress   io.Writer // one line per run; nil = quiet
	// Set holds overrides applied to every arm after its own (path -> value text, as in an
	// experiment block): a smaller data set or another glob for a quick check of a file.
	Set map[string]string
	// Fresh retrains every run. Otherwise a run directory left by an earlier invocation
	// with the same configuration is continued (or, when finished, only read), so an
	// interrupted `make experiments` picks up where it stopped.
	Fresh bool
	// Layout shards every run (nil: one rank), as moec run's layout flags do: an arm can
	// run at a tensor- or pipeline-parallel layout through step programs.
	Layout *train.Sharding
}

// Result holds every experiment that ran.
type Result struct {
	Experiments []*Outcome
}

// Outcome is one experiment: its arms, baseline first.
type Outcome struct {
	Experiment *program.Experiment
	Tokens     int64   // the token budget per baseline run
	Seeds      []int64 //
	Arms       []*Arm
}

// Arm is the baseline or one variant with the runs of every seed.
type Arm struct {
	Name      string
	Overrides map[string]string // what this arm changes (a variant includes the baseline's)
	Stages    []string          // the stages each run trains, in order
	Steps     []int64           // optimizer steps per stage
	Experts   int               // routed experts of the final stage's model (1 = dense)
	Trials    []*Trial
}

// Trial is one seed of one arm.
type Trial struct {
	Seed      int64
	Dir       string  // the last stage's run directory
	Curve     []Point // one point per optimizer step, all stages in order
	ValLoss   float64 // final validation cross-entropy (nats/token)
	StepTime  float64 // median seconds per optimizer step of the last stage (first step excluded)
	Tokens    int64   // training tokens over all stages
	FLOPs     float64 // training FLOPs over all stages (analysis: 3 × forward per token)
	Seconds   float64 // training wall-clock time over all stages
	Stability []float64
}

// Point is the training loss after one optimizer step.
type Point struct {
	Tokens, FLOPs, Seconds, Loss float64
}

// Load checks the file at path with its imports (check.Load) and parses the same sources
// again into the ASTs Run writes overrides into.
func Load(path string, read func(string) ([]byte, error)) (*program.Program, []*ast.File, map[string][]byte, diag.List) {
	prog, sources, diags := check.Load(path, read)
	if diags.HasErrors() {
		return prog, nil, sources, diags
	}
	files, d := ParseSources(sources)
	return prog, files, sources, append(diags, d...)
}

// ParseSources parses every source (as check.Load returns them) in name order.
func ParseSources(sources map[string][]byte) ([]*ast.File, diag.List) {
	names := make([]string, 0, len(sources))
	for name := range sources {
		names = append(names, name)
	}
	sort.Strings(names)
	var diags diag.List
	files := make([]*ast.File, 0, len(names))
	for _, name := range names {
		f, d := parse.File(name, sources[name])
		diags = append(diags, d...)
		if f != nil {
			files = append(files, f)
		}
	}
	return files, diags
}

// Run runs the selected experiments. Cancelling ctx stops after the current step of the
// current run.
func Run(ctx context.Context, opt Options) (*Result, error) {
	if opt.Program == nil {
		return nil, diag.Runtimef(diag.CodeBadRunOption, "no program given")
	}
	// 0 means "not given" here (the experiments' own values); below 0 is a mistake.
	if opt.Tokens < 0 || opt.ValWindows < 0 {
		return nil, diag.Runtimef(diag.CodeBadRunOption, "token budget %d and validation windows %d must not be negative", opt.Tokens, opt.ValWindows)
	}
	names := opt.Only
	if len(names) == 0 {
		names = opt.Program.ExperimentOrder
	}
	if len(names) == 0 {
		return nil, diag.Runtimef(diag.CodeBadRunOption, "the program declares no experiment")
	}
	if opt.OutDir == "" {
		opt.OutDir = filepath.Join("out", "experiments")
	}
	res := &Result{}
	corpora := &corpusCache{baseDir: opt.BaseDir}
	for _, name := range names {
		ex := opt.Program.Experiments[name]
		if ex == nil {
			e := diag.Runtimef(diag.CodeBadRunOption, "no experiment %q (declared: %s)", name, strings.Join(opt.Program.ExperimentOrder, ", "))
			if s := closest(name, opt.Program.ExperimentOrder); s != "" {
				e.Suggestion = fmt.Sprintf("did you mean `%s`?", s)
			}
			return nil, e
		}
		o, err := runExperiment(ctx, opt, ex, corpora)
		if err != nil {
			return res, fmt.Errorf("experiment %s: %w", name, err)
		}
		res.Experiments = append(res.Experiments, o)
	}
	return res, nil
}

// armSpec is an arm before it runs: its checked program and the stages it trains.
type armSpec struct {
	arm   *Arm
	prog  *program.Program
	train *program.Train
	chain []*program.Stage
	fpt   []float64 // training FLOPs per token of each stage's model
	tps   int64     // tokens per optimizer step
}

func runExperiment(ctx context.Context, opt Options, ex *program.Experiment, corpora *corpusCache) (*Outcome, error) {
	out := &Outcome{Experiment: ex, Seeds: ex.Seeds}
	if len(opt.Seeds) > 0 {
		out.Seeds = opt.Seeds
	}
	budget := ex.Tokens
	if opt.Tokens > 0 {
		budget = opt.Tokens
	}
	baseline := map[string]string{}
	for k, x := range ex.Baseline {
		baseline[k] = x
	}
	arms := []struct {
		name string
		ov   map[string]string
	}{{"baseline", baseline}}
	for _, v := range ex.Variants {
		ov := map[string]string{}
		for k, x := range ex.Baseline {
			ov[k] = x
		}
		for k, x := range v.Overrides {
			ov[k] = x
		}
		arms = append(arms, struct {
			name string
			ov   map[string]string
		}{v.Name, ov})
	}
	var specs []*armSpec
	for _, a := range arms {
		for k, x := range opt.Set {
			a.ov[k] = x
		}
		s, err := prepareArm(opt, ex, a.name, a.ov, budget)
		if err != nil {
			return nil, err
		}
		specs = append(specs, s)
	}
	equalize(specs, ex.Equal == "flops")
	out.Tokens = specs[0].tokens()
	// Seeds outside, arms inside: a change in machine load during the experiment then
	// falls on every arm alike instead of on whichever arm ran last.
	for _, seed := range out.Seeds {
		for _, s := range specs {
			r, err := runArm(ctx, opt, ex, s, seed, corpora)
			if err != nil {
				return nil, fmt.Errorf("arm %s, seed %d: %w", s.arm.Name, seed, err)
			}
			s.arm.Trials = append(s.arm.Trials, r)
		}
	}
	for _, s := range specs {
		out.Arms = append(out.Arms, s.arm)
	}
	return out, nil
}

// prepareArm writes the arm's overrides into the program, checks it again and plans the
// stages and steps of its runs.
func prepareArm(opt Options, ex *program.Experiment, name string, ov map[string]string, budget int64) (*armSpec, error) {
	files, err := check.ApplyOverrides(opt.Files, ex.Train, ov)
	if err != nil {
		return nil, fmt.Errorf("arm %s: %w", name, err)
	}
	prog, diags := check.Check(files...)
	if diags.HasErrors() {
		return nil, fmt.Errorf("arm %s does not check: %w", name, diags.Err())
	}
	t := prog.Trains[ex.Train]
	if t == nil || prog.Models[t.Model] == nil {
		return nil, fmt.Errorf("arm %s: train %s or its model is missing", name, ex.Train)
	}
	base := prog.Models[t.Model]
	stage := ex.Stage
	if s, ok := ov[check.ArmStage]; ok {
		stage = s
	}
	chain, err := stageChain(t, stage)
	if err != nil {
		return nil, fmt.Errorf("arm %s: %w", name, err)
	}
	s := &armSpec{arm: &Arm{Name: name, Overrides: ov}, prog: prog, train: t, chain: chain, tps: tokensPerStep(t, base)}
	var declared int64
	for _, st := range chain {
		s.arm.Stages = append(s.arm.Stages, st.Name)
		s.fpt = append(s.fpt, analysis.StageFLOPs(base, t, st).TrainPerToken)
		declared += st.TokensAt(s.tps)
	}
	if declared <= 0 && budget <= 0 {
		return nil, fmt.Errorf("arm %s: neither the experiment nor stage %s gives a token budget", name, stage)
	}
	for _, st := range chain {
		tok := float64(st.TokensAt(s.tps))
		if budget > 0 {
			if declared > 0 {
				tok = tok * float64(budget) / float64(declared)
			} else {
				tok = float64(budget) / float64(len(chain))
			}
		}
		s.arm.Steps = append(s.arm.Steps, max(int64(math.Round(tok/float64(s.tps))), 1))
	}
	last := program.StageModel(base, chain[len(chain)-1])
	s.arm.Experts = 1
	if last.MoE != nil {
		s.arm.Experts = last.MoE.Experts
	}
	return s, nil
}

func (s *armSpec) tokens() int64 {
	var n int64
	for _, st := range s.arm.Steps {
		n += st * s.tps
	}
	return n
}

// BudgetTolerance is how far (relative) an arm's training budget, tokens or FLOPs as the
// experiment says, may be from the baseline's before its verdicts are withheld. Whole
// steps make the budgets differ by up to half a step of each arm's last stage: a few
// tenths of a percent in the seed's full runs, several percent in a reduced one.
const BudgetTolerance = 0.02

// stepCosts is the budget one optimizer step of each stage spends: tokens, or FLOPs.
func (s *armSpec) stepCosts(flops bool) []float64 {
	c := make([]float64, len(s.arm.Steps))
	for i := range c {
		c[i] = float64(s.tps)
		if flops {
			c[i] *= s.fpt[i]
		}
	}
	return c
}

// equalize gives every variant the baseline's budget (FLOPs with flops, else tokens):
// its stages keep their proportions, and the last stage takes what the earlier ones left,
// rounded to the nearest whole step. Rounding each stage on its own instead can miss the
// budget by more than a step on a reduced run (dense 3 → four 2 → sixteen 2 spent 13% fewer
// FLOPs than its baseline). Report states each arm's ratio and withholds the verdicts of
// an arm beyond BudgetTolerance.
func equalize(specs []*armSpec, flops bool) {
	spend := func(s *armSpec) float64 {
		var f float64
		for i, c := range s.stepCosts(flops) {
			f += float64(s.arm.Steps[i]) * c
		}
		return f
	}
	target := spend(specs[0])
	for _, s := range specs[1:] {
		f := spend(s)
		if f <= 0 || target <= 0 {
			continue
		}
		scale := target / f
		costs := s.stepCosts(flops)
		last := len(s.arm.Steps) - 1
		left := target
		for i := range last {
			s.arm.Steps[i] = max(int64(math.Round(float64(s.arm.Steps[i])*scale)), 1)
			left -= float64(s.arm.Steps[i]) * costs[i]
		}
		if costs[last] > 0 {
			s.arm.Steps[last] = max(int64(math.Round(left/costs[last])), 1)
		}
	}
}

// Budget is what the experiment holds equal for a trial: its FLOPs or its tokens.
func (t *Trial) Budget(flops bool) float64 {
	if flops {
		return t.FLOPs
	}
	return float64(t.Tokens)
}

// stageChain is the stages a run ending at stage trains, in order: its `from` ancestors
// first. An empty stage is the whole curriculum in declaration order.
func stageChain(t *program.Train, stage string) ([]*program.Stage, error) {
	if stage == "" {
		if len(t.Stages) == 0 {
			return nil, fmt.Errorf("train %s has no stages", t.Name)
		}
		return t.Stages, nil
	}
	byName := map[string]*program.Stage{}
	for _, s := range t.Stages {
		byName[s.Name] = s
	}
	var chain []*program.Stage
	for name := stage; name != ""; {
		s := byName[name]
		if s == nil {
			return nil, fmt.Errorf("train %s has no stage %q", t.Name, name)
		}
		if len(chain) > len(t.Stages) {
			return nil, fmt.Errorf("train %s: stages start from each other in a cycle", t.Name)
		}
		chain = append([]*program.Stage{s}, chain...)
		name = s.From
	}
	return chain, nil
}

// tokensPerStep is what runtime/train trains per optimizer step for t: whole sequences
// of seq_len, micro-batches of at most 8 sequences, accumulated to tokens_per_batch.
func tokensPerStep(t *program.Train, m *program.Model) int64 {
	seq := t.SeqLen
	if seq <= 0 {
		seq = m.SeqLen
	}
	seqs := max(t.TokensPerBatch/seq, 1)
	micro := int64(t.MicroBatch)
	if micro <= 0 {
		micro = min(seqs, 8)
	}
	accum := max((seqs+micro-1)/micro, 1)
	return seq * micro * accum
}

// runArm trains one seed of an arm through its stages and measures it.
func runArm(ctx context.Context, opt Options, ex *program.Experiment, s *armSpec, seed int64, corpora *corpusCache) (*Trial, error) {
	run := &Trial{Seed: seed}
	root := filepath.Join(opt.OutDir, ex.Name, s.arm.Name, fmt.Sprintf("seed-%d", seed))
	var prevDir, ckpt string
	var last *train.Result
	var stepTimes []float64
	start := time.Now()
	fresh := opt.Fresh
	for i, st := range s.chain {
		dir := filepath.Join(root, st.Name)
		sd := seed
		steps := s.arm.Steps[i]
		var r *train.Result
		var err error
		if !fresh {
			r, err = reuse(ctx, s.prog, dir, steps, opt)
			fresh = r == nil && err == nil // a stage retrained: the stages grown from it must be too
		}
		if r == nil && err == nil {
			r, err = train.Run(ctx, train.Options{Program: s.prog, TrainName: ex.Train, StageName: st.Name, BaseDir: opt.BaseDir,
				Steps: steps, OutDir: dir, Force: true, From: prevDir, Seed: &sd, CheckpointEvery: steps, Keep: 1,
				ValWindows: opt.ValWindows, Layout: opt.Layout})
		}
		if err != nil {
			return nil, fmt.Errorf("stage %s: %w", st.Name, err)
		}
		if r.Stopped {
			if err := ctx.Err(); err != nil {
				return nil, fmt.Errorf("stage %s stopped: %w", st.Name, err)
			}
			return nil, fmt.Errorf("stage %s stopped after %d of %d steps", st.Name, r.Steps, r.TotalSteps)
		}
		recs, err := train.ReadLog(r.LogPath)
		if err != nil {
			return nil, fmt.Errorf("stage %s: %w", st.Name, err)
		}
		base := Point{Tokens: float64(run.Tokens), FLOPs: run.FLOPs, Seconds: run.Seconds}
		stepTimes = stepTimes[:0]
		for j, rec := range recs {
			run.Curve = append(run.Curve, Point{Tokens: base.Tokens + float64(rec.Tokens), FLOPs: base.FLOPs + float64(rec.Tokens)*s.fpt[i],
				Seconds: base.Seconds + rec.Elapsed, Loss: rec.CE})
			if j > 0 {
				stepTimes = append(stepTimes, rec.StepTime)
			}
		}
		if n := len(recs); n > 0 {
			run.Tokens += recs[n-1].Tokens
			run.FLOPs += float64(recs[n-1].Tokens) * s.fpt[i]
			run.Seconds += recs[n-1].Elapsed
		}
		prevDir, ckpt, last = r.Dir, r.Checkpoint, r
	}
	run.Dir, run.ValLoss = last.Dir, last.ValLoss
	run.StepTime = median(stepTimes)
	if s.arm.Experts > 1 {
		stab, err := routingStability(ckpt, s.train, corpora, opt.ValWindows)
		if err != nil {
			return nil, err
		}
		run.Stability = stab
	}
	if opt.Progress != nil {
		fmt.Fprintf(opt.Progress, "%s/%s seed %d: %d tokens in %.1fs, val loss %.4f, %.1f ms/step\n",
			ex.Name, s.arm.Name, seed, run.Tokens, time.Since(start).Seconds(), run.ValLoss, 1000*run.StepTime)
	}
	return run, nil
}

// reuse continues the run in dir when an earlier invocation left one with the same
// configuration (runtime/train compares the configuration hash); it returns nil, nil when
// the run must start afresh.
func reuse(ctx context.Context, prog *program.Program, dir string, steps int64, opt Options) (*train.Result, error) {
	if _, err := os.Stat(filepath.Join(dir, train.SpecFile)); err != nil {
		return nil, nil
	}
	r, err := train.Run(ctx, train.Options{Program: prog, Resume: dir, Steps: steps, ValWindows: opt.ValWindows, Layout: opt.Layout})
	if err != nil {
		if diag.CodeOf(err) == diag.CodeCheckpointMismatch {
			return nil, nil // another budget or configuration: retrain
		}
		return nil, err
	}
	if r.Steps != steps {
		return nil, nil
	}
	return r, nil
}

func median(x []float64) float64 {
	if len(x) == 0 {
		return math.NaN()
	}
	y := append([]float64(nil), x...)
	sort.Float64s(y)
	n := len(y)
	if n%2 == 1 {
		return y[n/2]
	}
	return (y[n/2-1] + y[n/2]) / 2
}

// closest is the candidate within a small edit distance of name, for a "did you mean".
func closest(name string, candidates []string) string {
	best, bestD := "", len(name)/2+2
	for _, c := range candidates {
		if d := editDistance(name, c); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev, cur := make([]int, len(b)+1), make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
