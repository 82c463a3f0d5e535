package driver

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/moec-dev/moec/compiler/plan"
	"github.com/moec-dev/moec/runtime/checkpoint"
	"github.com/moec-dev/moec/runtime/train"
)

// CurriculumRun says how RunCurriculum trains a train block's stages.
type CurriculumRun struct {
	// Options is the base of every stage's run (Program, TrainName, OutRoot and the
	// run settings); StageName, OutDir and From must be empty: each stage has its own
	// folder and grows from the one before.
	Options   train.Options
	Layout    LayoutRequest
	LayoutSet bool // a layout flag was given (a continued stage then takes it over its record)
	WorldSize int  // processes under mpirun (0: in-process ranks)
	Warn      io.Writer
	// Continued checks that a stage found already started may continue with Options
	// (the CLI refuses flags that contradict its run.json); nil accepts it.
	Continued func(spec *train.Spec, dir string) error
	// Run trains one stage with its options and plan (the CLI prints the result and the
	// memory table); nil is train.Run.
	Run func(ctx context.Context, opt train.Options, p *plan.Plan) error
}

// RunCurriculum trains every stage of a train block in order, each in its own folder.
// A stage that already ran is continued from its newest checkpoint, or trained again from
// its start when it was killed before its first one; the stages before it are kept, so the
// same call after a kill picks up the curriculum where it stopped.
func RunCurriculum(ctx context.Context, c CurriculumRun) error {
	opt := c.Options
	run := c.Run
	if run == nil {
		run = func(ctx context.Context, o train.Options, _ *plan.Plan) error {
			_, err := train.Run(ctx, o)
			return err
		}
	}
	warn := c.Warn
	if warn == nil {
		warn = io.Discard
	}
	stages, err := CurriculumOrder(opt.Program, opt.TrainName)
	if err != nil {
		return err
	}
	for _, st := range stages {
		o := opt
		o.TrainName, o.StageName = st.Train, st.Stage
		dir := train.StageDir(o.OutRoot, st.Train, st.Stage)
		var l *train.Sharding
		var p *plan.Plan
		if _, err := os.Stat(filepath.Join(dir, train.SpecFile)); err == nil {
			spec, err := train.ReadSpec(dir)
			if err != nil {
				return fmt.Errorf("stage %s: %w", st.Stage, err)
			}
			if c.Continued != nil {
				if err := c.Continued(spec, dir); err != nil {
					return err
				}
			}
			o = train.Options{Resume: dir, Progress: opt.Progress, MaxTime: opt.MaxTime, NewNet: opt.NewNet, LLVM: opt.LLVM}
			latest, err := checkpoint.Latest(filepath.Join(dir, train.CheckpointsDir))
			if err != nil {
				return fmt.Errorf("stage %s: %w", st.Stage, err)
			}
			if latest == "" {
				// Killed before its first checkpoint (with checkpoint_every unset, the
				// whole stage): nothing to resume, so the stage trains again from its
				// start, the previous stage's final checkpoint, which is kept.
				fmt.Fprintf(warn, "stage %s: %s has no checkpoint (interrupted before its first?); training the stage again from its start\n", st.Stage, dir)
				o.Restart = true
			} else {
				fmt.Fprintf(warn, "stage %s: %s exists; continuing it from %s\n", st.Stage, dir, filepath.Join(train.CheckpointsDir, filepath.Base(latest)))
			}
			fmt.Fprintf(warn, "== stage %s\n", st.Stage)
			if l, p, err = ResumeLayout(spec, c.Layout, c.LayoutSet, c.WorldSize, warn); err != nil {
				return err
			}
		} else {
			fmt.Fprintf(warn, "== stage %s\n", st.Stage)
			if l, p, err = RunLayout(opt.Program, st.Train, st.Stage, opt.MicroBatch, c.WorldSize, c.Layout, warn); err != nil {
				return err
			}
		}
		o.Layout, o.Comm, o.CollectiveTimeout = l, opt.Comm, opt.CollectiveTimeout
		if err := run(ctx, o, p); err != nil {
			return StageError{Stage: st.Stage, Err: err}
		}
	}
	return nil
}

// StageError is a stage of a curriculum that failed.
type StageError struct {
	Stage string
	Err   error
}

func (e StageError) Error() string { return fmt.Sprintf("stage %s: %v", e.Stage, e.Err) }
func (e StageError) Unwrap() error { return e.Err }
