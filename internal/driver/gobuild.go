package driver

import (
	"github.com/moec-dev/moec/codegen/gogen"
	"github.com/moec-dev/moec/compiler/program"
)

// emitGo writes stageDir/go: the stage's generated Go program (codegen/gogen), whose
// go.mod points at the moec checkout above the output (or the working) directory and whose
// default -base is srcDir, the .moe file's folder, where `moec run` takes data globs from.
func emitGo(prog *program.Program, tr *program.Train, st *program.Stage, srcDir, stageDir string, res *BuildResult) error {
	cfg, err := gogen.ConfigFor(prog, tr, st)
	if err != nil {
		// A stage `moec run` could not train either (no steps, too small a vocabulary)
		// has no program; the build says so and goes on.
		res.Notes = appendOnce(res.Notes, "go/ not generated: "+err.Error())
		return nil
	}
	g, err := gogen.Emit(stageDir, cfg, gogen.Options{SourceDir: srcDir})
	if err != nil {
		return err
	}
	res.Files = append(res.Files, g.Files...)
	for _, n := range g.Notes {
		res.Notes = appendOnce(res.Notes, n)
	}
	return nil
}
