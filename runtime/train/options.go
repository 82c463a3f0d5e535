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
	Force   bool   // start afresh in a non-empty OutDir, replacing the files a run writes
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
	Layout *Layout
	// Comm is this process's world communicator when every rank is its own process
	// (MPI); the run then has Comm.Size() ranks and rank 0 writes the run's files.
	Comm dist.Comm
	// CollectiveTimeout bounds every collective of a sharded run [dist.DefaultTimeout].
	CollectiveTimeout time.Duration

	// NewNet builds the model [nn.New]; tests substitute instrumented models.
	NewNet NewNetFunc
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
	Resumed      bool
	Stopped      bool // stopped early by MaxTime or cancellation
	LogPath      string
	PlotPath     string
	// Memory is, for a sharded run, each rank's peak bytes per component.
	Memory []RankMemory `json:",omitempty"`
}

// Lookup finds the train block and stage a run names: the only ones when the names are
// empty and the program has just one, with a diagnostic (and a did-you-mean) otherwise.
// The train block is returned when only the stage is missing.
func Lookup(p *program.Program, trainName, stageName string) (*program.Train, *program.Stage, error) {
	t, err := lookupTrain(p, trainName)
	if err != nil {
		return nil, nil, err
	}
	s, err := lookupStage(t, stageName)
	return t, s, err
}

func lookupTrain(p *program.Program, name string) (*program.Train, error) {
	if p == nil {
		return nil, diag.Runtimef(diag.ErrBadRunOption, "no program given")
	}
	if name == "" {
		if len(p.TrainOrder) == 1 {
			return p.Trains[p.TrainOrder[0]], nil
		}
		if len(p.Trains) == 0 {
			return nil, diag.Runtimef(diag.ErrUnknownTrain, "the program has no train block")
		}
		return nil, diag.Runtimef(diag.ErrUnknownTrain, "the program has %d train blocks (%s); say which", len(p.TrainOrder), strings.Join(p.TrainOrder, ", "))
	}
	if t, ok := p.Trains[name]; ok {
		return t, nil
	}
	e := diag.Runtimef(diag.ErrUnknownTrain, "no train block %q", name)
	if s := didYouMean(name, p.TrainOrder); s != "" {
		e.Suggestion = fmt.Sprintf("did you mean `%s`?", s)
	}
	return nil, e
}

func lookupStage(t *program.Train, name string) (*program.Stage, error) {
	var names []string
	for _, s := range t.Stages {
		if s.Name == name {
			return s, nil
		}
		names = append(names, s.Name)
	}
	if name == "" {
		if len(t.Stages) == 1 {
			return t.Stages[0], nil
		}
		return nil, diag.Runtimef(diag.ErrUnknownStage, "train %s has %d stages (%s); say which with --stage", t.Name, len(names), strings.Join(names, ", "))
	}
	e := diag.Runtimef(diag.ErrUnknownStage, "train %s has no stage %q (stages: %s)", t.Name, name, strings.Join(names, ", "))
	if s := didYouMean(name, names); s != "" {
		e.Suggestion = fmt.Sprintf("did you mean `%s`?", s)
	}
	return nil, e
}

// StageDir is the conventional run directory of a stage.
func StageDir(outRoot, train, stage string) string {
	if outRoot == "" {
		outRoot = "out"
	}
	return filepath.Join(outRoot, train, stage, "run")
}

// didYouMean returns the candidate closest to name when it is a plausible typo, by the
// same rule the checker uses for every other "did you mean".
func didYouMean(name string, candidates []string) string {
	if c, ok := diag.Closest(name, candidates); ok {
		return c
	}
	return ""
}
