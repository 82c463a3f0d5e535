package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/moec-dev/moec/runtime/dist/mpi"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/moec-dev/moec/cmd/moec/internal/driver"
	"github.com/moec-dev/moec/compiler/plan"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/runtime/kernelsel"
	"github.com/moec-dev/moec/runtime/train"
)

// runCommand is `moec run`: its flags and what it writes to.
type runCommand struct {
	opt            train.Options
	seed           int64
	allStages      bool
	llvmLib        string
	rf             rankFlags
	stdout, stderr io.Writer
}

func newRunCommand(stdout, stderr io.Writer) *cobra.Command {
	r := &runCommand{stdout: stdout, stderr: stderr}
	cmd := &cobra.Command{
		Use:   "run --stage NAME FILE.moe | run --resume DIR | run --all-stages FILE.moe",
		Short: "Train a stage here, starting from the previous stage's checkpoint",
		Long: "Run trains one stage of a train block on this machine. A stage declared `from OTHER`\n" +
			"starts from OTHER's final checkpoint, growing the experts as the stage says. The run\n" +
			"folder (default out/<train>/<stage>/run) gets a JSONL log of every step, checkpoints,\n" +
			"a loss-curve PNG and the final validation perplexity. A killed run continues with\n" +
			"--resume DIR. --all-stages trains the whole curriculum in order, resuming or skipping\n" +
			"stages that have already run: rerun the same command after a kill, and a stage killed\n" +
			"before its first checkpoint trains again from its start. A run holds its folder\n" +
			"(run.lock) while it runs; a second run into it fails naming the holder. Once the\n" +
			"weights are loaded, a step-program run sets the Go collector's GOGC from the ranks'\n" +
			"memory plans (garbage up to max(256 MiB, an eighth of the arenas) between collections)\n" +
			"unless GOGC is in the environment.",
		Args: cobra.MaximumNArgs(1),
		RunE: r.run,
	}
	r.flags(cmd.Flags())
	return cmd
}

func (r *runCommand) flags(f *pflag.FlagSet) {
	f.StringVar(&r.opt.StageName, "stage", "", "the stage to train")
	f.StringVar(&r.opt.TrainName, "train", "", "the train block (default: the file's only one)")
	f.BoolVar(&r.allStages, "all-stages", false, "train every stage of the curriculum in order")
	f.Int64Var(&r.opt.Steps, "steps", 0, "optimizer steps, at least 1 (default: the stage's tokens / tokens per batch)")
	f.StringVar(&r.opt.OutDir, "out", "", "run folder (default out/<train>/<stage>/run)")
	f.StringVar(&r.opt.OutRoot, "out-root", "out", "root of the conventional run folders")
	f.StringVar(&r.opt.Resume, "resume", "", "continue the run in this folder, under the layout and engine its run.json records unless --ranks/--ep/--zero/--tp/--pp/--engine/--step-programs/--offload/--cache-budget say otherwise")
	f.BoolVar(&r.opt.Restart, "restart", false, "with --resume: start the run over from step 0 when its folder shows progress but holds no complete checkpoint (replaces its log.jsonl)")
	f.StringVar(&r.opt.From, "from", "", "checkpoint or run folder to grow from (default: the from stage's final checkpoint)")
	f.BoolVar(&r.opt.Force, "force", false, "start afresh in a run folder that already holds a run")
	f.Int64Var(&r.seed, "seed", 0, "override the train block's seed")
	f.DurationVar(&r.opt.MaxTime, "max-time", 0, "stop (with a checkpoint) after this long, e.g. 30m; resume later (default: no limit)")
	f.IntVar(&r.opt.MicroBatch, "micro-batch", 0, "sequences per micro-batch; it must divide the batch's sequences (tokens_per_batch / seq_len), so the batch stays as declared; memory changes, and so does the loss of an MoE stage, whose expert capacity is per micro-batch (default: the train block's, else up to 8)")
	f.StringVar(&r.llvmLib, "llvm", "", "run norms, cross-entropy and AdamW in the compiled LLVM kernels of this library (<stage>/llvm/libmoe_kernels.so from moec build); one rank only, sharded ranks run the Go kernels")
	f.Int64Var(&r.opt.CheckpointEvery, "checkpoint-every", 0, "steps between checkpoints, at least 1 (default: the train block's)")
	f.IntVar(&r.rf.ranks, "ranks", 0, "run the plan for N ≥ 1 in-process ranks (default: the cluster's ranks; under mpirun, one rank per process)")
	f.IntVar(&r.rf.ep, "ep", 0, "expert-parallel size; it must divide the ranks and the stage's experts (default: the plan's)")
	f.IntVar(&r.rf.zero, "zero", 0, "ZeRO stage 0-3 (default: the plan's)")
	f.IntVar(&r.rf.tp, "tp", 0, "tensor-parallel size: Megatron's column/row splits of heads, FFN and expert widths and the vocabulary; trains through step programs (in-process ranks, or one per process under mpirun)")
	f.IntVar(&r.rf.pp, "pp", 0, "pipeline-parallel size: stages of contiguous layers under a 1F1B schedule of the micro-batches; trains through step programs (in-process ranks, or one per process under mpirun)")
	f.StringVar(&r.rf.engine, "engine", "", "the training engine: step (step programs run by the executor; the default wherever they lower the layout) or handwritten (the hand-written sharded engine, their oracle; it also runs mpirun, the unified cache and models step programs do not lower)")
	f.BoolVar(&r.rf.program, "step-programs", false, "the same as --engine step (kept for scripts: step programs are the default)")
	f.BoolVar(&r.rf.sp, "sp", false, "sequence parallelism (with --tp > 1): the tp ranks split the norms, residual sums and router input by token, with all-gathers and reduce-scatters in place of tp's all-reduces")
	f.BoolVar(&r.rf.offload, "offload", false, "keep optimizer states in the host tier (default: the train block's memory.offload)")
	f.BoolVar(&r.opt.DelayedUpdate, "delayed-update", false, "with --cache-budget: update the host weights one step late (ZeRO-Offload's DPU), overlapping the update with the whole next step; this changes the training algorithm and the losses; not recorded in run.json, give it again with --resume")
	f.BoolVar(&r.opt.SerialHostUpdate, "serial-host-update", false, "with --cache-budget: run the host update inside each step instead of on a helper goroutine that overlaps the next step's forward; the numbers are the same (for measuring the overlap)")
	f.StringVar(&r.rf.budget, "cache-budget", "", "run the unified cache with this device budget per rank, e.g. 8MiB (default with memory = unified_cache: a quarter of a rank's weights)")
	deviceFlag(f, &r.opt.Device, "train the step of every in-process rank (rank r on GPU r, the collectives through NCCL's libnccl.so.2), or under mpirun this process's rank (on the GPU of its node-local rank),")
	f.DurationVar(&r.rf.timeout, "collective-timeout", 0, "fail a collective that waits longer than this for another rank; positive (default 5m)")
}

// run checks the flags, joins mpirun's world when there is one, and trains: the run
// --resume continues, one stage, or the whole curriculum.
func (r *runCommand) run(cmd *cobra.Command, args []string) error {
	opt, rf, stdout, stderr := r.opt, r.rf, r.stdout, r.stderr
	if err := checkRunFlags(cmd, opt, rf); err != nil {
		return usage(err)
	}
	if err := checkRunDevice(opt.Device, rf.ranks); err != nil {
		return err
	}
	if cmd.Flags().Changed("seed") {
		opt.Seed = &r.seed
	}
	opt.Progress = stderr
	var spec *train.Spec // run.json of the run --resume continues
	llvmLib := r.llvmLib
	if opt.Resume != "" {
		var err error
		if spec, err = train.ReadSpec(opt.Resume); err != nil {
			return err
		}
		llvmLib = recordedKernels(cmd, spec, opt.Resume, llvmLib, stderr)
	}
	if llvmLib != "" {
		opt.NewNet, opt.LLVM = kernelsel.NewNet(llvmLib), llvmLib
		// The LLVM kernels run in the hand-written model's single rank.
		if rf.engine == "" && !rf.program {
			rf.engine = driver.EngineHandwritten
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rf.zeroSet = cmd.Flags().Changed("zero")
	world, finalize, err := mpiWorld(rf.timeout)
	if err != nil {
		return err
	}
	defer finalize()
	worldSize := 0
	if world != nil {
		opt.Comm, worldSize = world, world.Size()
		if world.Rank() != 0 { // rank 0 speaks for the run
			stdout, stderr, opt.Progress = io.Discard, io.Discard, nil
		}
	}
	opt.CollectiveTimeout = rf.timeout
	if opt.Resume != "" {
		if len(args) > 0 {
			return usageCode(diag.CodeConflictingFlags, "run: --resume takes the run folder only, not a .moe file")
		}
		l, p, err := rf.resumeLayout(spec, layoutFlagsChanged(cmd), worldSize, stderr)
		if err != nil {
			return err
		}
		opt.Layout = l
		return runAndReport(ctx, stdout, opt, p)
	}
	if len(args) != 1 {
		return usageCode(diag.CodeWrongArguments, "run: give the .moe file (and --stage NAME, or --all-stages)")
	}
	loaded, err := loadChecked(args[0], stderr)
	if err != nil {
		return err
	}
	opt.Program = loaded.Program
	opt.BaseDir = filepath.Dir(args[0])
	if !r.allStages {
		l, p, err := rf.layout(opt.Program, opt.TrainName, opt.StageName, opt.MicroBatch, worldSize, stderr)
		if err != nil {
			return err
		}
		opt.Layout = l
		return sourceError(loaded, stderr, runAndReport(ctx, stdout, opt, p))
	}
	return runAllStages(ctx, cmd, loaded, args[0], opt, rf, worldSize, stdout, stderr)
}

// recordedKernels is the LLVM kernel library a resumed run uses: the one its run.json
// records, unless --llvm says otherwise or a new layout runs sharded ranks (Go kernels).
func recordedKernels(cmd *cobra.Command, spec *train.Spec, dir, llvmLib string, stderr io.Writer) string {
	rec := spec.Layout
	if rec == nil || rec.LLVM == "" || cmd.Flags().Changed("llvm") {
		return llvmLib
	}
	if layoutFlagsChanged(cmd) || mpi.InRun() {
		// A new layout runs sharded ranks, which run the Go kernels only.
		fmt.Fprintf(stderr, "moec: the LLVM kernels %s recorded in %s are not used under the new layout; its ranks run the Go kernels\n", rec.LLVM, filepath.Join(dir, train.SpecFile))
		return llvmLib
	}
	// The run started with these kernels; `--llvm ""` returns to Go's.
	fmt.Fprintf(stderr, "moec: running the LLVM kernels %s recorded in %s (--llvm \"\" for the Go kernels)\n", rec.LLVM, filepath.Join(dir, train.SpecFile))
	return rec.LLVM
}

// runAllStages trains the file's curriculum in order (--all-stages), resuming or skipping
// the stages that have run.
func runAllStages(ctx context.Context, cmd *cobra.Command, loaded *driver.Loaded, file string, opt train.Options, rf rankFlags, worldSize int, stdout, stderr io.Writer) error {
	if opt.StageName != "" || opt.OutDir != "" || opt.From != "" {
		return usageCode(diag.CodeConflictingFlags, "run: --all-stages trains every stage in its own folder; drop --stage, --out and --from")
	}
	if err := needTrain(loaded.Program, file, "run --all-stages trains a train block's curriculum"); err != nil {
		return err
	}
	err := driver.RunCurriculum(ctx, driver.CurriculumRun{
		Options: opt, Layout: rf.request(), LayoutSet: layoutFlagsChanged(cmd), WorldSize: worldSize, Warn: stderr,
		Continued: func(spec *train.Spec, dir string) error { return checkContinued(cmd, opt, spec, dir) },
		Run:       func(ctx context.Context, o train.Options, p *plan.Plan) error { return runAndReport(ctx, stdout, o, p) },
	})
	var se driver.StageError
	switch {
	case err == nil:
		return nil
	case driver.IsUsage(err):
		return usage(err)
	case errors.As(err, &se) && sourceError(loaded, stderr, se.Err) == errDiagnostics:
		return errDiagnostics
	}
	return err
}

func runAndReport(ctx context.Context, stdout io.Writer, opt train.Options, p *plan.Plan) error {
	res, err := train.Run(ctx, opt)
	if res != nil && res.Stopped && errors.Is(err, context.Canceled) {
		// The run saved a checkpoint and its progress said "interrupted at step N/M;
		// resume with --resume DIR": that is the whole story, and the cancellation
		// itself is no error to report on top.
		return errInterrupted
	}
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, res.String())
	if opt.Layout != nil {
		printMemory(stdout, opt.Layout, res.Memory, p)
	}
	if res.Stopped {
		fmt.Fprintf(stdout, "stopped early; continue with: moec run --resume %s\n", res.Dir)
	}
	return nil
}

// checkRunFlags refuses, before anything is loaded, a numeric flag out of its range. A
// flag left out keeps its default; one given explicitly must be a value the run can use,
// so --steps 0 is an error rather than "the stage's steps".
func checkRunFlags(cmd *cobra.Command, opt train.Options, rf rankFlags) error {
	f := cmd.Flags()
	type check struct {
		flag string
		bad  bool
		val  any
		want string
	}
	checks := []check{
		{"steps", opt.Steps < 1, opt.Steps, "want at least 1 step; leave it out to run the stage's steps"},
		{"micro-batch", opt.MicroBatch < 1, opt.MicroBatch, "want at least 1 sequence; leave it out for the train block's"},
		{"checkpoint-every", opt.CheckpointEvery < 1, opt.CheckpointEvery, "want at least 1 step; leave it out for the train block's"},
		{"max-time", opt.MaxTime <= 0, opt.MaxTime, "want a positive duration such as 30m; leave it out for no limit"},
		{"collective-timeout", rf.timeout <= 0, rf.timeout, "want a positive duration such as 5m; leave it out for the default"},
		{"ranks", rf.ranks < 1, rf.ranks, "want at least 1 rank"},
		{"ep", rf.ep < 1, rf.ep, "want an expert-parallel size of at least 1 (1 = none)"},
		{"zero", rf.zero < 0 || rf.zero > 3, rf.zero, "ZeRO stages are 0, 1, 2 and 3"},
		{"tp", rf.tp < 1, rf.tp, "want a tensor-parallel size of at least 1 (1 = none)"},
		{"pp", rf.pp < 1, rf.pp, "want a pipeline-parallel size of at least 1 (1 = none)"},
	}
	for _, c := range checks {
		if f.Changed(c.flag) && c.bad {
			return diag.Runtimef(diag.CodeBadRunOption, "--%s %v: %s", c.flag, c.val, c.want)
		}
	}
	if opt.Restart && opt.Resume == "" {
		e := diag.Runtimef(diag.CodeBadRunOption, "--restart without --resume: it starts a run folder that shows progress over from step 0")
		e.Suggestion = "to start a new run in a folder that holds one, use --force"
		return e
	}
	if f.Changed("cache-budget") {
		if b, err := driver.ParseBytes(rf.budget); err == nil && b == 0 {
			e := diag.Runtimef(diag.CodeBadRunOption, "--cache-budget %s: the unified cache needs a positive device budget", rf.budget)
			e.Suggestion = "pass a size such as 8MiB, or leave it out for a quarter of a rank's weights"
			return e
		}
	}
	if opt.Resume != "" {
		// A resumed run continues exactly as it started: its run.json fixes these.
		for _, name := range []string{"stage", "train", "all-stages", "steps", "seed", "micro-batch", "checkpoint-every", "from", "out", "force"} {
			if f.Changed(name) {
				e := diag.Runtimef(diag.CodeBadRunOption, "--%s with --resume: a resumed run continues as it started, with the settings in %s", name, filepath.Join(opt.Resume, train.SpecFile))
				e.Suggestion = "drop --" + name + ", or start a new run with --out"
				return e
			}
		}
	}
	return nil
}

// layoutFlags are the flags that choose a run's layout.
var layoutFlags = []string{"ranks", "ep", "zero", "offload", "cache-budget", "tp", "pp", "step-programs", "engine", "sp"}

// layoutFlagsChanged says whether any layout flag was given.
func layoutFlagsChanged(cmd *cobra.Command) bool {
	for _, name := range layoutFlags {
		if cmd.Flags().Changed(name) {
			return true
		}
	}
	return false
}

// checkContinued refuses, for a stage --all-stages continues from its folder, a setting
// that would change the run: a continued run keeps its run.json, and dropping the flag
// would train something other than what the user asked for.
func checkContinued(cmd *cobra.Command, opt train.Options, spec *train.Spec, dir string) error {
	f := cmd.Flags()
	type fixed struct {
		flag      string
		differ    bool
		got, want any
	}
	checks := []fixed{
		{"steps", opt.Steps != spec.Steps, opt.Steps, spec.Steps},
		{"micro-batch", opt.MicroBatch != spec.MicroBatch, opt.MicroBatch, spec.MicroBatch},
		{"checkpoint-every", opt.CheckpointEvery != spec.CheckpointEvery, opt.CheckpointEvery, spec.CheckpointEvery},
		{"seed", opt.Seed != nil && *opt.Seed != spec.Seed, opt.Seed, spec.Seed},
	}
	for _, c := range checks {
		if !f.Changed(c.flag) || !c.differ {
			continue
		}
		if c.flag == "seed" {
			c.got = *opt.Seed
		}
		e := diag.Runtimef(diag.CodeBadRunOption, "--%s %v: stage %s already ran in %s with %s %v, and a run continues with the settings in its %s",
			c.flag, c.got, spec.Stage, dir, c.flag, c.want, train.SpecFile)
		e.Suggestion = fmt.Sprintf("drop --%s to continue the stages as they started, or pass --out-root NEW to run the curriculum with --%s %v in a new folder", c.flag, c.flag, c.got)
		return e
	}
	return nil
}

// needTrain refuses a file without a train block for a command that needs one, saying
// what the command needs it for.
func needTrain(prog *program.Program, file, what string) error {
	if len(prog.TrainOrder) > 0 {
		return nil
	}
	e := diag.Runtimef(diag.CodeUnknownTrain, "%s has no train block; %s", file, what)
	e.Suggestion = "add a `train MODEL on CLUSTER { ... }` block with its stages, as examples/hunyuan_tiny.moe does"
	return e
}

func newEvalCommand(stdout, stderr io.Writer) *cobra.Command {
	var opt train.EvalOptions
	cmd := &cobra.Command{
		Use:   "eval --checkpoint DIR [FILE.moe]",
		Short: "Print a checkpoint's validation perplexity",
		Long: "Eval measures mean cross-entropy and perplexity on the validation split. The data comes\n" +
			"from FILE.moe's train block when given, else from the run the checkpoint belongs to.",
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if opt.Checkpoint == "" {
				return usageCode(diag.CodeMissingFlag, "eval: --checkpoint is required")
			}
			if cmd.Flags().Changed("windows") && opt.Windows < 1 {
				return usage(diag.Runtimef(diag.CodeBadRunOption, "--windows %d: want at least 1 validation window; leave it out for 64", opt.Windows))
			}
			var loaded *driver.Loaded
			if len(args) == 1 {
				var err error
				if loaded, err = loadChecked(args[0], stderr); err != nil {
					return err
				}
				opt.Program = loaded.Program
				opt.BaseDir = filepath.Dir(args[0])
			}
			res, err := train.Eval(cmd.Context(), opt)
			if err != nil {
				return sourceError(loaded, stderr, err)
			}
			fmt.Fprintf(stdout, "%s (step %d): validation loss %.4f nats/token, perplexity %.3f over %d tokens\n",
				res.Checkpoint, res.Step, res.Loss, res.PPL, res.Tokens)
			return nil
		},
	}
	cmd.Flags().StringVar(&opt.Checkpoint, "checkpoint", "", "a checkpoint folder, or a run folder (its newest checkpoint)")
	cmd.Flags().IntVar(&opt.Windows, "windows", 0, "validation windows, at least 1 (default 64)")
	return cmd
}

// sourceError renders a runtime refusal that points into the loaded .moe file (a val_data
// entry whose files hold no text, say) as a diagnostic with its source line and caret, and
// returns errDiagnostics; any other error, or none, is returned as it is.
func sourceError(loaded *driver.Loaded, stderr io.Writer, err error) error {
	var re *diag.Diagnostic
	if loaded == nil || !errors.As(err, &re) || !re.Subject.Start.IsValid() {
		return err
	}
	loaded.RenderList(stderr, diag.List{*re})
	return errDiagnostics
}
