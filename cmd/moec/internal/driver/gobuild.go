package driver

import (
	"github.com/moec-dev/moec/codegen/gogen"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
)

// emitGo writes stageDir/go: the stage's generated Go program (codegen/gogen), whose
// go.mod points at the moec checkout above the output (or the working) directory and whose
// default -base is srcDir, the .moe file's folder, where `moec run` takes data globs from.
// A distillation stage gets its step program's Go form only (its teacher runs through
// runtime/exec's evaluation program), not the hand-written model's main.go.
func emitGo(prog *program.Program, tr *program.Train, st *program.Stage, srcDir, stageDir string, sp *step.Program, res *BuildResult) error {
	cfg, err := gogen.ConfigFor(prog, tr, st)
	if err != nil {
		// A stage `moec run` could not train either (no steps, too small a vocabulary)
		// has no program; the build says so and goes on.
		res.Notes = appendOnce(res.Notes, "go/ not generated: "+err.Error())
		return nil
	}
	// The step program's Go form only where its batch is the run's: a CPU plan's layout.
	if sp != nil && (sp.Batch.MicroBatch*max(sp.Layout.DP, 1) != cfg.MicroBatch || sp.Batch.Micro != cfg.Accum || sp.Batch.SeqLen != cfg.SeqLen) {
		sp = nil
	}
	g, err := gogen.Emit(stageDir, cfg, gogen.Options{SourceDir: srcDir, Step: sp})
	if err != nil {
		return err
	}
	res.Files = append(res.Files, g.Files...)
	for _, n := range g.Notes {
		res.Notes = appendOnce(res.Notes, n)
	}
	return nil
}
