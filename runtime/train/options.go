package train

import (
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/runtime/dist"
	"github.com/moec-dev/moec/runtime/nn"
)

// Net is what the trainer needs from the model math; *nn.Model implements it.
type Net interface {
	Params() []*nn.Param
	ZeroGrad()
	ForwardBackward(b nn.Batch, o nn.StepOptions) (nn.Stats, error)
	Forward(b nn.Batch, o nn.StepOptions) (nn.Stats, error)
}

// NewNetFunc builds a model with freshly initialised weights.
type NewNetFunc func(m *program.Model, seed int64) (Net, error)

func newNNNet(m *program.Model, seed int64) (Net, error) {
	n, err := nn.New(m, seed)
	if err != nil {
		return nil, err
	}
	return n, nil
}

// Options configure Run.
type Options struct {
	Program   *program.Program // required unless Resume is set
	TrainName string           // "" = the program's only train block
	StageName string           // "" = the train block's only stage
	BaseDir   string           // relative data globs are relative to this (the .moe file's directory)

	Steps   int64  // 0 = the stage's steps, else its tokens / tokens per step
	OutRoot string // root of the conventional layout OutRoot/<train>/<stage>/run ["out"]
	OutDir  string // this run's directory ["" = the conventional one]
	Resume  string // a run directory to continue; Program may then be nil
	// Restart lets a resumed run whose folder shows progress (log records, checkpoint
	// directories) but holds no complete checkpoint start over from step 0, replacing its
	// log. Without it such a resume is refused: it would silently retrain from scratch.
	Restart bool
	Force   bool // start afresh in a non-empty OutDir, replacing the files a run writes
	// From is the checkpoint (or run directory) a stage with `from` grows from
	// ["" = the final checkpoint in the from stage's conventional directory].
	From string

	Seed       *int64        // overrides the train block's seed
	MaxTime    time.Duration // stop after this long (with a checkpoint) [0 = no limit]
	MicroBatch int           // sequences per micro-batch [train block's micro_batch, else 8]
	// CheckpointEvery overrides the train block's checkpoint_every (steps; 0 = keep it).
	CheckpointEvery int64
	Keep            int // complete checkpoints kept [2]
	ValWindows      int // validation windows of seq_len+1 tokens [64]

	Progress io.Writer // live progress; nil = none. A terminal gets a redrawn bar, else lines.

	// Layout shards the run over ranks (nil or one rank: a single model). The ranks are
	// goroutines of this process unless Comm is set.
	Layout *Sharding
	// Comm is this process's world communicator when every rank is its own process
	// (MPI); the run then has Comm.Size() ranks and rank 0 writes the run's files.
	Comm dist.Comm
	// CollectiveTimeout bounds every collective of a sharded run [dist.DefaultTimeout].
	CollectiveTimeout time.Duration
	// SerialHostUpdate runs the unified cache's host update inside each step instead of on
	// a helper goroutine that overlaps the next step's forward (exec.Local.SetHostOverlap,
	// the default under the cache at ZeRO 0 and 3): the losses are the same either way.
	SerialHostUpdate bool
	// DelayedUpdate runs ZeRO-Offload's one-step-delayed update under the unified cache
	// (exec.Local.SetDelayedUpdate): each step's forward and backward use the weights
	// before the previous step's update, which lands while the step runs. It changes the
	// training algorithm, so the losses differ. It is not recorded in run.json: a resume
	// asks for it again.
	DelayedUpdate bool
	// InitialLossScale is the loss scale an fp16 stage starts from (0: Megatron-Core's
	// 2³², DefaultInitialLossScale); a resumed run takes its checkpoint's.
	InitialLossScale float64

	// Device runs the step on a GPU through moec's generated CUDA: "cuda" (libcuda.so.1),
	// or "cuda-emulated" (the same generated step on the CPU); "" is the CPU engines.
	Device string

	// NewNet builds the model [nn.New]; tests substitute instrumented models.
	NewNet NewNetFunc
	// LLVM names the kernel library NewNet runs (recorded in run.json; "" = Go kernels).
	// A sharded run cannot use it: its ranks run the Go kernels.
	LLVM string
	// RankHook, when set, is called by every rank of a sharded run before each of its
	// micro-batches (fault injection: a rank that fails or stalls mid-step).
	RankHook func(rank int, step int64) error
	// CheckpointHook is called at named points inside a checkpoint save (fault injection).
	CheckpointHook func(point string)
}

// Result describes a finished (or stopped) run.
type Result struct {
	Dir          string  // the run directory
	Checkpoint   string  // the last checkpoint written
	Steps        int64   // optimizer steps completed
	TotalSteps   int64   // steps the stage runs in all
	Tokens       int64   // training tokens seen
	Loss         float64 // loss of the last step
	ValLoss      float64 // mean validation cross-entropy (nats/token); 0 when not reached
	ValPPL       float64 // exp(ValLoss)
	TokensPerSec float64 // training throughput of this invocation
	Trained      int64   // optimizer steps this invocation trained
	// LossKnown says Loss is a logged step's loss; a resumed run whose log.jsonl is gone
	// and that trains nothing has no loss to report.
	LossKnown bool `json:"-"`
	Resumed   bool
	Stopped   bool // stopped early by MaxTime or cancellation
	LogPath   string
	PlotPath  string
	// LossScale is an fp16 run's loss scale after its last step, and SkippedSteps the
	// steps of the stage its overflows skipped (0 for bf16 and fp32).
	LossScale    float64 `json:",omitempty"`
	SkippedSteps int64   `json:",omitempty"`
	// Memory is, for a sharded run, each rank's peak bytes per component.
	Memory []RankMemory `json:",omitempty"`
}

// Lookup finds the train block and stage a run names: the only ones when the names are
// empty and the program has just one, with a diagnostic (and a did-you-mean) otherwise.
// The train block is returned when only the stage is missing.
func Lookup(p *program.Program, trainName, stageName string) (*program.Train, *program.Stage, error) {
	if p == nil {
		return nil, nil, diag.Runtimef(diag.CodeBadRunOption, "no program given")
	}
	t, err := p.LookupTrain(trainName)
	if err != nil {
		return nil, nil, err
	}
	s, err := t.LookupStage(stageName)
	return t, s, err
}

// StageDir is the conventional run directory of a stage.
func StageDir(outRoot, train, stage string) string {
	if outRoot == "" {
		outRoot = "out"
	}
	return filepath.Join(outRoot, train, stage, "run")
}

// validate refuses options out of range before anything is read or written. Zero keeps
// each option's default, so only negative values are mistakes here; the CLI also refuses
// an explicit zero, since a user who types --steps 0 does not mean "the stage's steps".
func (o *Options) validate() error {
	bad := func(flag string, v any, want string) error {
		return diag.Runtimef(diag.CodeBadRunOption, "--%s %v: %s", flag, v, want)
	}
	switch {
	case o.Steps < 0:
		return bad("steps", o.Steps, "want at least 1 step (leave it out to run the stage's steps)")
	case o.MicroBatch < 0:
		return bad("micro-batch", o.MicroBatch, "want at least 1 sequence (leave it out for the train block's)")
	case o.CheckpointEvery < 0:
		return bad("checkpoint-every", o.CheckpointEvery, "want at least 1 step (leave it out for the train block's)")
	case o.MaxTime < 0:
		return bad("max-time", o.MaxTime, "want a positive duration such as 30m (leave it out for no limit)")
	case o.CollectiveTimeout < 0:
		return bad("collective-timeout", o.CollectiveTimeout, "want a positive duration such as 5m")
	case o.Keep < 0:
		return diag.Runtimef(diag.CodeBadRunOption, "keep %d: want at least 1 checkpoint", o.Keep)
	case o.ValWindows < 0:
		return diag.Runtimef(diag.CodeBadRunOption, "%d validation windows: want at least 1", o.ValWindows)
	}
	return nil
}

// checkMicroBatch refuses a micro-batch the user chose that does not divide the train
// block's batch: the step would otherwise run more sequences than tokens_per_batch says
// (rounded up to whole micro-batches), silently changing the batch, the tokens per step
// and so the schedule the stage was declared with.
func checkMicroBatch(spec *Spec, chosen int) error {
	if chosen <= 0 {
		return nil
	}
	seqs := max(spec.Train.TokensPerBatch/int64(spec.SeqLen), 1)
	if seqs%int64(chosen) == 0 {
		return nil
	}
	var divisors []string
	for d := int64(1); d <= seqs; d++ {
		if seqs%d == 0 {
			divisors = append(divisors, fmt.Sprint(d))
		}
	}
	e := diag.Runtimef(diag.CodeBadRunOption, "--micro-batch %d does not divide train %s's batch of %d sequences (tokens_per_batch %d / seq_len %d): a step would run %d sequences instead",
		chosen, spec.Train.Name, seqs, spec.Train.TokensPerBatch, spec.SeqLen, (seqs+int64(chosen)-1)/int64(chosen)*int64(chosen))
	e.Suggestion = "use one of " + strings.Join(divisors, ", ")
	return e
}

// checkLayoutExperts refuses an expert-parallel size that does not divide the experts of
// the stage being trained. The stage's count is what matters: a curriculum's model block
// declares the size the last stage reaches, and an early stage may have fewer experts (or
// be dense).
func checkLayoutExperts(spec *Spec, l *Sharding) error {
	if l == nil || l.EP <= 1 {
		return nil
	}
	experts := 0
	if spec.Model.MoE != nil {
		experts = spec.Model.MoE.Experts
	}
	if experts <= 1 {
		e := diag.Runtimef(diag.CodeBadRunOption, "expert-parallel size %d: stage %s of train %s is dense (one expert), so there are no experts to spread", l.EP, spec.Stage, spec.Train.Name)
		e.Suggestion = "drop --ep for this stage"
		return e
	}
	if experts%l.EP == 0 {
		return nil
	}
	var fits []string
	for d := 1; d <= experts; d++ {
		if experts%d == 0 && l.Ranks%d == 0 {
			fits = append(fits, fmt.Sprint(d))
		}
	}
	e := diag.Runtimef(diag.CodeBadRunOption, "expert-parallel size %d does not divide the %d experts of stage %s (train %s)", l.EP, experts, spec.Stage, spec.Train.Name)
	e.Suggestion = fmt.Sprintf("with %d ranks, --ep can be %s", l.Ranks, strings.Join(fits, ", "))
	return e
}
