package train

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/internal/human"
	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/runtime/checkpoint"
	"github.com/moec-dev/moec/runtime/data"
	"github.com/moec-dev/moec/runtime/nn"
	"github.com/moec-dev/moec/runtime/optim"
	"github.com/moec-dev/moec/runtime/plot"
	"github.com/moec-dev/moec/runtime/safetensors"
	"github.com/moec-dev/moec/runtime/weights"
)

// Files of a run directory.
const (
	SpecFile       = "run.json"
	LogFile        = "log.jsonl"
	PlotFile       = "loss.png"
	ResultFile     = "result.json"
	CheckpointsDir = weights.CheckpointsDir
)

// Run trains one stage. See the package documentation for what it writes.
//
// A run goes through named steps: open the run folder (a new run, or a resumed one
// checked against the program), set up the data and the engine, restore the state to
// start from (the latest checkpoint, or growth from the previous stage), train step by
// step with checkpoints, and finish (the final checkpoint, the plot, validation).
func Run(ctx context.Context, opt Options) (*Result, error) {
	start := time.Now()
	if err := opt.validate(); err != nil {
		return nil, err
	}
	r, err := openRun(opt)
	if err != nil {
		return nil, err
	}
	defer r.lock.Release()
	if err := r.setUp(); err != nil {
		return nil, err
	}
	if err := r.restore(); err != nil {
		return nil, err
	}
	closeLog, err := r.openLog()
	if err != nil {
		return nil, err
	}
	defer closeLog()
	cancelled, err := r.train(ctx, start)
	if err != nil {
		return r.res, err
	}
	return r.finish(cancelled)
}

// stageRun is one invocation of Run: what each of its steps reads and leaves behind.
type stageRun struct {
	opt   Options
	spec  *Spec
	stage *program.Stage
	dir   string
	lock  *RunLock

	hash     string      // the spec's configuration hash, which checkpoints carry
	recorded *LayoutSpec // the layout run.json recorded before this invocation
	prog     *progress
	corpus   *data.Corpus
	eng      engine
	lead     bool // this process writes the run's files
	ckptDir  string
	res      *Result

	latest  string // the checkpoint resumed from ("" when none)
	step    int64  // steps completed
	tokens  int64
	records []StepRecord
	logw    *bufio.Writer

	writer     checkpoint.Writer
	savedStep  int64 // the step and finality of the newest checkpoint on disk
	savedFinal bool
	firstStep  int64
	loopStart  time.Time // throughput counts training, not loading the corpus
}

// openRun finds the run's folder and locks it: a resumed run's spec (checked against the
// program, when one is given), or a new run's, resolved from the options, in a folder
// prepared for it.
func openRun(opt Options) (*stageRun, error) {
	r := &stageRun{opt: opt, dir: opt.OutDir}
	var err error
	if opt.Resume != "" {
		r.dir = opt.Resume
		if r.spec, err = ReadSpec(r.dir); err != nil {
			return nil, err
		}
		if r.lock, err = lockFolder(r.dir, opt); err != nil {
			return nil, err
		}
		if err := r.checkResumedSpec(); err != nil {
			r.lock.Release()
			return nil, err
		}
		return r, nil
	}
	if r.spec, r.stage, err = resolve(&opt); err != nil {
		return nil, err
	}
	if err := checkMicroBatch(r.spec, opt.MicroBatch); err != nil {
		return nil, err
	}
	if err := checkLayoutExperts(r.spec, opt.Layout); err != nil {
		return nil, err
	}
	if r.dir == "" {
		r.dir = StageDir(r.spec.OutRoot, r.spec.Train.Name, r.spec.Stage)
	}
	// The lock comes before the folder is looked at: two runs into one folder would
	// otherwise both find it empty (or both --force it) and write into each other.
	if r.lock, err = lockFolder(r.dir, opt); err != nil {
		return nil, err
	}
	if err := prepareDir(r.dir, opt.Force); err != nil {
		r.lock.Release()
		return nil, err
	}
	return r, nil
}

// checkResumedSpec holds a resumed run's spec to the program given (the same train block
// and stage, hashed alike) and finds its stage.
func (r *stageRun) checkResumedSpec() error {
	spec, opt := r.spec, r.opt
	if opt.Program != nil {
		o := opt
		o.TrainName, o.StageName = spec.Train.Name, spec.Stage
		o.Seed, o.BaseDir, o.OutRoot = &spec.Seed, spec.BaseDir, spec.OutRoot
		o.MicroBatch = spec.MicroBatch
		if o.Steps == 0 {
			o.Steps = spec.Steps
		}
		now, _, err := resolve(&o)
		if err != nil {
			return err
		}
		h1, _ := now.Hash()
		h2, _ := spec.Hash()
		if h1 != h2 {
			return diag.Runtimef(diag.CodeCheckpointMismatch, "cannot resume %s: the program's train %s / stage %s differs from the one the run started with", r.dir, spec.Train.Name, spec.Stage)
		}
	}
	var err error
	if r.stage, err = spec.Train.LookupStage(spec.Stage); err != nil {
		return err
	}
	return checkLayoutExperts(spec, opt.Layout)
}

// setUp hashes the configuration, opens the corpus (and keeps the run's tokenizer) and
// builds the engine that trains the stage.
func (r *stageRun) setUp() error {
	spec, opt := r.spec, r.opt
	var err error
	if r.hash, err = spec.Hash(); err != nil {
		return err
	}
	if opt.LLVM != "" && (opt.Layout != nil || opt.Comm != nil) {
		// The ranks of a sharded run build their own models with the Go kernels; taking
		// the library and then not running it would be a flag silently ignored.
		e := diag.Runtimef(diag.CodeBadRunOption, "--llvm with a sharded run (%s): the ranks run the Go kernels only", layoutSpec(opt.Layout, opt.Comm, "").String())
		e.Suggestion = "drop --llvm, or run on one rank without --ranks/--ep/--zero/--offload/--cache-budget"
		return e
	}
	r.recorded = spec.Layout
	spec.Layout = layoutSpec(opt.Layout, opt.Comm, opt.LLVM)
	r.prog = newProgress(opt.Progress, spec.Steps)
	for _, note := range []string{BF16Note(spec.Train), FP16Note(spec.Train)} {
		if note != "" {
			r.prog.printf("%s\n", note)
		}
	}

	dataOpt, tokenizerPath, err := data.OptionsFor(spec.Train, spec.BaseDir)
	if err != nil {
		return err
	}
	if r.corpus, err = data.Open(dataOpt); err != nil {
		return err
	}
	if err := KeepTokenizer(r.dir, tokenizerPath); err != nil {
		return err
	}
	if r.corpus.Skipped > 0 {
		r.prog.printf("data: skipped %d binary files (e.g. %s)\n", r.corpus.Skipped, r.corpus.SkippedName[0])
	}
	if r.eng, err = newEngine(opt, spec, optim.FromProgram(spec.Train.Optimizer, r.stage.LR, spec.Steps)); err != nil {
		return err
	}
	r.lead = r.eng.leader()
	r.ckptDir = filepath.Join(r.dir, CheckpointsDir)
	r.res = &Result{Dir: r.dir, TotalSteps: spec.Steps, LogPath: filepath.Join(r.dir, LogFile), PlotPath: filepath.Join(r.dir, PlotFile)}
	r.savedStep = -1
	r.writer = checkpoint.Writer{Hook: opt.CheckpointHook}
	return nil
}

// restore puts the engine in the state the run starts from: a resumed run's latest
// checkpoint (checked against the configuration, the data and the model), else a grown
// stage's previous checkpoint; then it (re)writes run.json and cuts the log back to the
// step the run starts at.
func (r *stageRun) restore() error {
	spec := r.spec
	var err error
	if r.opt.Resume != "" {
		if err := checkpoint.CleanTemp(r.ckptDir); err != nil {
			return err
		}
		if r.latest, err = checkpoint.Latest(r.ckptDir); err != nil {
			return err
		}
		if err := checkResumable(r.dir, r.latest, r.opt.Restart, r.prog); err != nil {
			return err
		}
	}
	if r.stage.Distill != nil {
		// The teacher runs beside the student, a new run's or a resumed one's (distill.go).
		var teacher []safetensors.Tensor
		if spec.Teacher, teacher, err = loadTeacher(spec, r.stage, r.eng); err != nil {
			return err
		}
		if r.latest == "" && r.stage.Distill.InitFromTeacher {
			n, err := initFromTeacher(teacher, r.eng, r.opt.NewNet, spec)
			if err != nil {
				return err
			}
			r.prog.printf("stage %s starts from %d tensors of its teacher %s\n", spec.Stage, n, spec.Teacher)
		}
	}
	if r.latest != "" {
		if err := r.resumeFrom(r.latest); err != nil {
			return err
		}
	} else if r.stage.From != "" && r.stage.Distill == nil {
		if spec.GrownFrom, err = growFrom(spec, r.stage, r.eng, r.opt.NewNet); err != nil {
			return err
		}
	}
	// run.json is (re)written once the run is known to start: on resume it records the
	// layout this invocation runs under, which the next resume reuses.
	if r.lead {
		b, err := json.MarshalIndent(spec, "", "  ")
		if err != nil {
			return fmt.Errorf("train: %w", err)
		}
		if err := writeFileAtomic(filepath.Join(r.dir, SpecFile), append(b, '\n')); err != nil {
			return fmt.Errorf("train: %w", err)
		}
	}
	if r.records, err = truncateLog(r.res.LogPath, r.step, r.lead); err != nil {
		return fmt.Errorf("train: %w", err)
	}
	r.tokens = r.step * spec.TokensPerStep()
	if n := len(r.records); n > 0 {
		r.tokens = r.records[n-1].Tokens
	}
	return nil
}

// resumeFrom loads checkpoint latest into the engine after checking that it belongs to
// this run: its configuration, its data and its step.
func (r *stageRun) resumeFrom(latest string) error {
	spec := r.spec
	c, err := checkpoint.Load(latest, true)
	if err != nil {
		return err
	}
	m := c.Manifest
	if m.ConfigHash != r.hash {
		return diag.Runtimef(diag.CodeCheckpointMismatch, "checkpoint %s was made for a different configuration (config hash %s, run has %s)", latest, m.ConfigHash, r.hash)
	}
	if m.DataFingerprint != r.corpus.Fingerprint {
		return diag.Runtimef(diag.CodeCheckpointMismatch, "checkpoint %s was trained on different data (fingerprint %s, corpus now %s); the resumed run would not see the same batches", latest, m.DataFingerprint[:12], r.corpus.Fingerprint[:12])
	}
	if m.Step > spec.Steps {
		// The manifest checks itself against its own total; this is the run's.
		return diag.Runtimef(diag.CodeCorruptCheckpoint, "checkpoint %s records step %d, past the %d steps of stage %s", latest, m.Step, spec.Steps, spec.Stage)
	}
	if err := CheckWeights(latest, m.Model, c.Model); err != nil {
		return err
	}
	if err := r.eng.load(c.Model, c.Optimizer, m.Optimizer.Step); err != nil {
		return diag.RuntimeWrap(diag.CodeCheckpointMismatch, err, "checkpoint %s", latest)
	}
	if ls, ok := r.eng.(lossScaled); ok && ls.scaler() != nil {
		if err := ls.scaler().restore(m.Optimizer.LossScale); err != nil {
			return diag.RuntimeWrap(diag.CodeCheckpointMismatch, err, "checkpoint %s", latest)
		}
	}
	r.step = m.Step
	r.res.Resumed = true
	r.res.Checkpoint = latest
	// A resumed run that has nothing left to do must not rewrite its checkpoint: replacing
	// a complete checkpoint with an identical one only opens a window for losing it.
	r.savedStep, r.savedFinal = m.Step, m.Final
	how := ""
	if r.recorded != nil && *r.recorded != *spec.Layout {
		how = fmt.Sprintf(" under %s (it last ran under %s; a checkpoint loads under any layout)", spec.Layout, r.recorded)
	}
	r.prog.printf("resuming %s at step %d/%d%s\n", r.dir, r.step, spec.Steps, how)
	return nil
}

// openLog opens log.jsonl for appending (the leader's; the other ranks write nowhere) and
// returns what closes it.
func (r *stageRun) openLog() (func(), error) {
	r.logw = bufio.NewWriter(io.Discard)
	if !r.lead {
		return func() {}, nil
	}
	lf, err := os.OpenFile(r.res.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	r.logw = bufio.NewWriter(lf)
	return func() { lf.Close() }, nil
}

// save writes a checkpoint of the current step (final: the stage's last), unless the
// newest on disk is already that one.
func (r *stageRun) save(final bool) error {
	spec := r.spec
	if r.step == r.savedStep && final == r.savedFinal {
		return nil
	}
	model, moments, err := r.eng.tensors()
	if err != nil || !r.lead {
		return err
	}
	c := &checkpoint.Checkpoint{
		Manifest: checkpoint.Manifest{Train: spec.Train.Name, Stage: spec.Stage, Step: r.step, TotalSteps: spec.Steps,
			TokensSeen: r.tokens, Final: final, Model: spec.Model, ConfigHash: r.hash, Seed: spec.Seed,
			DataCursor: r.step, DataFingerprint: r.corpus.Fingerprint,
			Optimizer: checkpoint.OptimizerState{Kind: "adamw", Step: r.eng.optStep()}},
		Model:     model,
		Optimizer: moments,
	}
	if ls, ok := r.eng.(lossScaled); ok && ls.scaler() != nil {
		st := ls.scaler().LossScaleState
		c.Manifest.Optimizer.LossScale = &st
	}
	p, err := r.writer.Save(r.ckptDir, c)
	if err != nil {
		return err
	}
	r.res.Checkpoint, r.savedStep, r.savedFinal = p, r.step, final
	return checkpoint.Prune(r.ckptDir, spec.Keep)
}

// train runs steps until the stage's last, an interruption (cancelled says which) or the
// time limit, logging each step and checkpointing every checkpoint_every steps.
func (r *stageRun) train(ctx context.Context, start time.Time) (cancelled error, err error) {
	spec, prog := r.spec, r.prog
	prog.start(r.step)
	r.firstStep = r.step
	r.loopStart = time.Now()
	for r.step < spec.Steps {
		cancelled = ctx.Err()
		overTime := r.opt.MaxTime > 0 && time.Since(start) > r.opt.MaxTime
		// Every rank stops at the same step, or the ranks' collectives would part ways.
		stop, err := r.eng.stop(cancelled != nil || overTime)
		if err != nil {
			return cancelled, err
		}
		if stop && cancelled == nil && !overTime {
			cancelled = context.Canceled // another rank was interrupted
		}
		if stop && cancelled != nil {
			r.res.Stopped = true
			prog.printf("interrupted at step %d/%d; resume with --resume %s\n", r.step, spec.Steps, r.dir)
			break
		}
		if stop {
			r.res.Stopped = true
			prog.printf("stopping after %s at step %d/%d\n", fmtDuration(time.Since(start)), r.step, spec.Steps)
			break
		}
		if err := r.trainStep(); err != nil {
			return cancelled, err
		}
		if spec.CheckpointEvery > 0 && r.step%spec.CheckpointEvery == 0 && r.step < spec.Steps {
			if err := r.save(false); err != nil {
				return cancelled, err
			}
		}
	}
	return cancelled, nil
}

// trainStep trains one step and logs it.
func (r *stageRun) trainStep() error {
	spec := r.spec
	t0 := time.Now()
	rec, info, err := r.eng.step(r.step, spec, r.corpus)
	if err != nil {
		var ne *updateError
		if errors.As(err, &ne) {
			return diag.RuntimeWrap(diag.CodeNonFiniteLoss, err, "step %d", r.step+1)
		}
		if _, sharded := r.eng.(*group); sharded {
			e := diag.RuntimeWrap(diag.CodeRankFailed, err, "the sharded run stopped at step %d", r.step+1)
			e.Suggestion = "fix the failing rank's error; if a rank is only slow, raise --collective-timeout; resume with --resume " + r.dir
			return e
		}
		return err
	}
	if !finite(rec.Loss) {
		return diag.Runtimef(diag.CodeNonFiniteLoss, "loss is %v at step %d; lower the learning rate or check the data", rec.Loss, r.step+1)
	}
	r.step++
	r.tokens += spec.TokensPerStep()
	rec.Step, rec.Tokens, rec.LR, rec.GradNorm, rec.Clipped = r.step, r.tokens, info.LR, info.GradNorm, info.Clipped
	rec.StepTime = time.Since(t0).Seconds()
	rec.Elapsed = time.Since(r.loopStart).Seconds()
	rec.TokensPerSec = float64(spec.TokensPerStep()*(r.step-r.firstStep)) / rec.Elapsed
	if err := writeLine(r.logw, rec); err != nil {
		return fmt.Errorf("train: writing log: %w", err)
	}
	r.records = append(r.records, rec)
	r.prog.update(rec, false)
	return nil
}

// finish sums the run up: the final (or interrupted) checkpoint, the loss plot, the
// memory report, and, for a stage trained to its end, validation and result.json.
func (r *stageRun) finish(cancelled error) (*Result, error) {
	spec, res, step := r.spec, r.res, r.step
	res.Steps, res.Tokens, res.Trained = step, r.tokens, step-r.firstStep
	if n := len(r.records); n > 0 {
		res.Loss, res.LossKnown = r.records[n-1].Loss, true
		if step > r.firstStep { // a finished run resumed trained nothing: no progress to show
			r.prog.update(r.records[n-1], true)
		}
	}
	if step > r.firstStep {
		res.TokensPerSec = float64(spec.TokensPerStep()*(step-r.firstStep)) / time.Since(r.loopStart).Seconds()
	}
	if err := r.save(step >= spec.Steps); err != nil {
		return res, errors.Join(cancelled, err)
	}
	title := fmt.Sprintf("%s / %s", spec.Train.Name, spec.Stage)
	if r.lead {
		if err := plotLog(r.records, res.PlotPath, title, 0, 0); err != nil {
			return res, errors.Join(cancelled, err)
		}
	}
	res.Memory = r.eng.report()
	if ls, ok := r.eng.(lossScaled); ok && ls.scaler() != nil {
		res.LossScale, res.SkippedSteps = ls.scaler().Scale, ls.scaler().Skipped
	}
	if res.Stopped {
		return res, cancelled
	}
	// Every rank takes part (a sharded run may have to assemble its weights), the leader
	// validates.
	net, err := r.eng.evalNet(r.opt.NewNet, spec)
	if err != nil || !r.lead {
		return res, err
	}
	ev, err := evaluate(net, r.corpus, spec.Seed, spec.SeqLen, spec.MicroBatch, spec.ValWindows)
	if err != nil {
		return res, err
	}
	res.ValLoss, res.ValPPL = ev.Loss, ev.PPL
	if err := plotLog(r.records, res.PlotPath, title, step, ev.Loss); err != nil {
		return res, err
	}
	r.prog.printf("validation: loss %.4f, perplexity %.3f over %d tokens\n", ev.Loss, ev.PPL, ev.Tokens)
	b, _ := json.MarshalIndent(res, "", "  ")
	if err := writeFileAtomic(filepath.Join(r.dir, ResultFile), append(b, '\n')); err != nil {
		return res, fmt.Errorf("train: %w", err)
	}
	return res, nil
}

// lockFolder takes run folder dir's lock for the process that writes the run's files: this
// one, unless it is a rank other than 0 of a run whose ranks are processes (mpirun), whose
// rank 0 holds it (nil: nothing to release).
func lockFolder(dir string, opt Options) (*RunLock, error) {
	if opt.Comm != nil && opt.Comm.Rank() != 0 {
		return nil, nil
	}
	return LockRunDir(dir)
}

// String summarises the result in one line for the CLI.
func (r *Result) String() string {
	s := fmt.Sprintf("%s: %d/%d steps, %s tokens", r.Dir, r.Steps, r.TotalSteps, human.Count(float64(r.Tokens)))
	if r.LossKnown || r.Trained > 0 {
		s += fmt.Sprintf(", loss %.4f", r.Loss)
	}
	// A throughput needs steps trained by this invocation; a resumed run that had already
	// finished trained none, and "0 tokens/s" would read as a stalled run.
	nothingLeft := r.Resumed && r.Trained == 0 && r.Steps >= r.TotalSteps
	if r.Trained > 0 {
		s += fmt.Sprintf(", %.0f tokens/s", r.TokensPerSec)
	} else if !nothingLeft {
		s += "; no step was trained"
	}
	if r.ValPPL > 0 {
		s += fmt.Sprintf(", validation perplexity %.3f", r.ValPPL)
	}
	if r.LossScale > 0 {
		s += fmt.Sprintf("; fp16 loss scale %s, %d steps skipped for overflow", formatLossScale(r.LossScale), r.SkippedSteps)
	}
	if nothingLeft {
		s += "; the run had already finished: nothing left to train"
	}
	if r.Stopped {
		s += " (stopped early; continue with --resume " + r.Dir + ")"
	}
	return s
}

func addStats(rec *StepRecord, st nn.Stats, accum int) {
	k := float64(accum)
	rec.Loss += st.Loss / k
	rec.CE += st.CE / k
	rec.Balance += st.Balance / k
	rec.ZLoss += st.ZLoss / k
	rec.Dropped += st.Dropped
	rec.SharedLayers += st.SharedLayers
	if rec.ExpertTokens == nil && st.ExpertTokens != nil {
		rec.ExpertTokens = make([][]int, len(st.ExpertTokens))
		for i, l := range st.ExpertTokens {
			rec.ExpertTokens[i] = make([]int, len(l))
		}
	}
	for i, l := range st.ExpertTokens {
		for e, n := range l {
			if i < len(rec.ExpertTokens) && e < len(rec.ExpertTokens[i]) {
				rec.ExpertTokens[i][e] += n
			}
		}
	}
}

// growFrom initialises params from the final checkpoint of the stage's `from` stage.
// It returns the checkpoint grown from.
func growFrom(spec *Spec, stage *program.Stage, eng engine, newNet NewNetFunc) (string, error) {
	fromDir := filepath.Join(StageDir(spec.OutRoot, spec.Train.Name, stage.From), CheckpointsDir)
	var latest string
	var err error
	if spec.From != "" {
		fromDir = spec.From
		latest, err = ResolveCheckpoint(spec.From)
	} else {
		latest, err = checkpoint.Latest(fromDir)
	}
	if err != nil {
		return "", err
	}
	noFinal := &diag.Diagnostic{Code: diag.CodeNoFromCheckpoint,
		Summary:    fmt.Sprintf("stage %s starts from stage %s, which has no final checkpoint in %s yet", stage.Name, stage.From, fromDir),
		Suggestion: finishHint(spec, stage, fromDir)}
	if latest == "" {
		return "", noFinal
	}
	c, err := checkpoint.Load(latest, false)
	if err != nil {
		return "", err
	}
	if !c.Manifest.Final {
		return "", noFinal
	}
	if err := CheckWeights(latest, c.Manifest.Model, c.Model); err != nil {
		return "", err
	}
	if c.Manifest.Train != spec.Train.Name || c.Manifest.Stage != stage.From {
		return "", diag.Runtimef(diag.CodeBadGrowth, "stage %s grows from stage %s, but checkpoint %s is of train %s stage %s", stage.Name, stage.From, latest, c.Manifest.Train, c.Manifest.Stage)
	}
	return latest, eng.initialise(newNet, spec, func(params []*nn.Param) error {
		_, err := Grow(c.Model, c.Manifest.Model, spec.Model, params, stage.Grow, spec.Seed)
		return err
	})
}

// finishHint is the command that gives stage's from stage its final checkpoint: resuming
// the from stage's run when one was started (its folder has a run.json), else running the
// from stage into the same out root.
func finishHint(spec *Spec, stage *program.Stage, fromDir string) string {
	runDir := fromDir
	if filepath.Base(runDir) == CheckpointsDir {
		runDir = filepath.Dir(runDir)
	}
	for _, d := range []string{fromDir, runDir} {
		if _, err := os.Stat(filepath.Join(d, SpecFile)); err == nil {
			return fmt.Sprintf("finish stage %s's run first: moec run --resume %s", stage.From, d)
		}
	}
	file := spec.Train.Decl.File
	if file == "" {
		file = "FILE.moe"
	}
	cmd := fmt.Sprintf("moec run --stage %s %s", stage.From, file)
	if spec.OutRoot != "" && spec.OutRoot != "out" {
		cmd += " --out-root " + spec.OutRoot
	}
	return fmt.Sprintf("run stage %s to the end first: %s", stage.From, cmd)
}

// checkResumable refuses to resume a run from step 0 when its folder shows it had made
// progress: with no complete checkpoint to load, the resume would retrain from scratch and
// replace the log without a word. An incomplete checkpoint directory newer than the one
// resumed from is reported, since its steps will be trained again.
func checkResumable(dir, latest string, restart bool, prog *progress) error {
	ckptDir := filepath.Join(dir, CheckpointsDir)
	var broken []string // step directories without a manifest, oldest first
	ents, err := os.ReadDir(ckptDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("train: %w", err)
	}
	for _, e := range ents {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), "step-") {
			continue
		}
		if _, err := os.Stat(filepath.Join(ckptDir, e.Name(), checkpoint.ManifestFile)); err != nil {
			broken = append(broken, e.Name())
		}
	}
	rel := func(name string) string { return filepath.Join(CheckpointsDir, name) }
	if latest != "" {
		if restart {
			e := diag.Runtimef(diag.CodeBadRunOption, "--restart: %s has a complete checkpoint (%s) to resume from", dir, rel(filepath.Base(latest)))
			e.Suggestion = "drop --restart to continue from it"
			return e
		}
		for _, b := range broken {
			if b > filepath.Base(latest) {
				prog.printf("warning: %s has no %s (an interrupted save?); resuming from %s, so its steps are trained again\n", rel(b), checkpoint.ManifestFile, rel(filepath.Base(latest)))
			}
		}
		return nil
	}
	if restart {
		return nil
	}
	recs, err := ReadLog(filepath.Join(dir, LogFile))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return diag.RuntimeWrap(diag.CodeCorruptCheckpoint, err, "cannot resume %s: reading %s", dir, LogFile)
	}
	var why string
	switch {
	case len(broken) > 0:
		b := broken[len(broken)-1]
		why = fmt.Sprintf("%s has no %s (an interrupted save?) and there is no other complete checkpoint", rel(b), checkpoint.ManifestFile)
	case len(recs) > 0:
		why = fmt.Sprintf("%s records %d steps but there is no checkpoint in %s (killed before its first checkpoint?)", LogFile, len(recs), CheckpointsDir)
	default:
		return nil // nothing was trained: starting from step 0 loses nothing
	}
	e := diag.Runtimef(diag.CodeCorruptCheckpoint, "cannot resume %s: %s; resuming would retrain from step 0", dir, why)
	e.Suggestion = fmt.Sprintf("restore the checkpoint, or start this run over from step 0 with moec run --resume %s --restart (this replaces its log.jsonl)", dir)
	return e
}

// ParamTensors returns the parameters as tensors for a checkpoint; they alias the weights.
func ParamTensors(params []*nn.Param) []safetensors.Tensor {
	out := make([]safetensors.Tensor, len(params))
	for i, p := range params {
		out[i] = safetensors.Tensor{Name: p.Name, Shape: p.Shape, Data: p.W}
	}
	return out
}

// LoadParams copies checkpoint tensors into params. Every parameter must be present with
// its shape and every tensor must be a parameter; the error names the first that is not.
func LoadParams(params []*nn.Param, ts []safetensors.Tensor, dir string) error {
	byName := make(map[string]safetensors.Tensor, len(ts))
	for _, t := range ts {
		byName[t.Name] = t
	}
	for _, p := range params {
		t, ok := byName[p.Name]
		if !ok {
			return diag.Runtimef(diag.CodeCheckpointMismatch, "checkpoint %s has no tensor %s (shape %v) that the model needs", dir, p.Name, p.Shape)
		}
		if !slices.Equal(t.Shape, p.Shape) {
			return diag.Runtimef(diag.CodeCheckpointMismatch, "checkpoint %s: tensor %s has shape %v, the model expects %v", dir, p.Name, t.Shape, p.Shape)
		}
		copy(p.W, t.Data)
		delete(byName, p.Name)
	}
	for _, t := range ts {
		if _, extra := byName[t.Name]; extra {
			return diag.Runtimef(diag.CodeCheckpointMismatch, "checkpoint %s has tensor %s (shape %v), which the model does not have", dir, t.Name, t.Shape)
		}
	}
	return nil
}

// plotLog writes loss.png: the loss of every step, faint, under its exponential moving
// average (see lossChart), and, once the run has been validated, the validation loss as a
// marker at the step it was measured after (valStep 0: not yet).
func plotLog(recs []StepRecord, path, title string, valStep int64, valLoss float64) error {
	if len(recs) == 0 {
		return nil
	}
	return plot.WriteFile(path, lossChart(recs, title, valStep, valLoss))
}

// lossChart is loss.png's chart. The smoothing is an exponential moving average whose
// span is a twentieth of the steps shown, at least 5 (plot.EMA, bias-corrected so the
// first steps are not pulled towards zero); cross-entropy is shown, smoothed the same way,
// when auxiliary losses make it differ from the loss.
func lossChart(recs []StepRecord, title string, valStep int64, valLoss float64) plot.Chart {
	loss := plot.Series{Name: "loss", Faint: true}
	var ce []float64
	differ := false
	for _, r := range recs {
		loss.X = append(loss.X, float64(r.Step))
		loss.Y = append(loss.Y, r.Loss)
		ce = append(ce, r.CE)
		differ = differ || r.CE != r.Loss
	}
	span := max(5, float64(len(recs))/20)
	series := []plot.Series{loss, {Name: fmt.Sprintf("loss, EMA over %.0f steps", span), X: loss.X, Y: plot.EMA(loss.Y, span)}}
	if differ {
		series = append(series, plot.Series{Name: fmt.Sprintf("cross-entropy, EMA over %.0f steps", span), X: loss.X, Y: plot.EMA(ce, span)})
	}
	if valStep > 0 {
		series = append(series, plot.Series{Name: "validation cross-entropy", X: []float64{float64(valStep)}, Y: []float64{valLoss}, Points: true})
	}
	return plot.Chart{Title: title, XLabel: "step", YLabel: "loss (nats/token)", Series: series}
}
